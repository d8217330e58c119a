"""Products on disk: the predictions and anchor Zarr stores, training sets, flat cubes, simulated
exposures, night folders and small array archives."""
