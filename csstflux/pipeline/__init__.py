"""The Dask layer: clusters, the predict, anchor and flat jobs, and the nightly run."""
