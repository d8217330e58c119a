"""``csstflux simulate-exposures`` and ``csstflux build-flat``: the 3D flat from stars."""

from __future__ import annotations

import json
import warnings

import click

from csstflux.cli.errors import handle_errors


@click.command("simulate-exposures")
@click.option("--predictions", required=True, type=click.Path(exists=True, file_okay=False),
              help="Predictions store (csstflux predict-catalog).")
@click.option("--out", required=True, help="Output folder for exposure-*.zarr and truth.npz.")
@click.option("--ra", type=float, required=True, help="Field centre RA, deg.")
@click.option("--dec", type=float, required=True, help="Field centre Dec, deg.")
@click.option("--radius", default=1.0, show_default=True, help="Field radius, deg.")
@click.option("--pointings", default=3, show_default=True, help="Dithered exposures.")
@click.option("--dither", default=20.0, show_default=True, help="Dither half-range, arcsec.")
@click.option("--detectors", default=None,
              help="Comma-separated detectors [default: one per band, GU-03,GV-02,GI-01].")
@click.option("--amplitude", default=0.03, show_default=True,
              help="Large-scale flat amplitude (0.01-0.05).")
@click.option("--ripple", default=0.0, show_default=True, help="Small-scale ripple rms.")
@click.option("--exposure-time", default=150.0, show_default=True, help="Seconds.")
@click.option("--sky", default=1.0, show_default=True,
              help="Sky, e-/s per output pixel in the aperture.")
@click.option("--read-noise", default=10.0, show_default=True,
              help="Read noise, e- per output pixel.")
@click.option("--throughputs", type=click.Path(exists=True, file_okay=False),
              help="Folder of {GU,GV,GI}.Throughput.1st.fits [default: top-hat 0.3].")
@click.option("--ideal", is_flag=True, help="Truth SEDs = predictions, noise-free counts.")
@click.option("--grid", default=9, show_default=True, help="Truth cube grid points per axis.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def simulate_exposures_cmd(predictions: str, out: str, ra: float, dec: float, radius: float,
                           pointings: int, dither: float, detectors: str | None,
                           amplitude: float, ripple: float, exposure_time: float, sky: float,
                           read_noise: float, throughputs: str | None, ideal: bool, grid: int,
                           seed: int, as_json: bool) -> None:
    """Simulate slitless exposures of a field through a known flat per detector."""
    from csstflux.pipeline.flats import DEFAULT_DETECTORS, simulate

    dets = tuple(d.strip() for d in detectors.split(",")) if detectors else DEFAULT_DETECTORS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = simulate(predictions, out, ra=ra, dec=dec, radius_deg=radius,
                       n_pointings=pointings, detectors=dets, amplitude=amplitude,
                       ripple=ripple, exposure_time=exposure_time, throughput_dir=throughputs,
                       ideal=ideal, seed=seed, dither_arcsec=dither, grid=grid,
                       sky_per_pixel=sky, read_noise=read_noise)
    summary = {"exposures": [str(p) for p in res.exposures], "truth": str(res.truth),
               "n_stars_field": res.n_stars_field, "n_sources": res.n_sources,
               "detectors": res.detectors, "warnings": [str(w.message) for w in caught]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for w in summary["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"{len(res.exposures)} exposures of {res.n_stars_field} field stars on "
               f"{', '.join(res.detectors)}: sources per exposure {res.n_sources}")
    click.echo(f"truth: {res.truth}")


@click.command("build-flat")
@click.option("--exposures", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of exposure-*.zarr.")
@click.option("--predictions", required=True, type=click.Path(exists=True, file_okay=False),
              help="Predictions store to cross-match against.")
@click.option("--out", required=True, help="Output prefix: PREFIX.fits, PREFIX_sigma.fits, "
              "PREFIX.zarr.")
@click.option("--order", default=2, show_default=True, help="2D polynomial total order.")
@click.option("--grid", default=9, show_default=True, help="Coarse grid points per axis.")
@click.option("--radius-arcsec", default=1.0, show_default=True, help="Match radius.")
@click.option("--star-scale", type=click.Choice(["median", "known"]), default="median",
              show_default=True, help="median: per-star grey term (chromatic flat only); "
              "known: recorded absolute fluxes.")
@click.option("--nsigma", default=3.0, show_default=True, help="Sigma-clipping threshold.")
@click.option("--max-iter", default=3, show_default=True, help="Clipping passes (0: none).")
@click.option("--scheduler", help="Address of a running Dask scheduler.")
@click.option("--workers", type=int, help="Local worker processes [default: one per core].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def build_flat_cmd(exposures: str, predictions: str, out: str, order: int, grid: int,
                   radius_arcsec: float, star_scale: str, nsigma: float, max_iter: int,
                   scheduler: str | None, workers: int | None, as_json: bool) -> None:
    """Fit the 3D flat (λ, y, x) per detector from exposures and predicted SEDs, on Dask."""
    from csstflux.pipeline.cluster import start_cluster
    from csstflux.pipeline.flats import build_flat, write_outputs

    handle = start_cluster(scheduler=scheduler, n_workers=workers, dashboard_port=0)
    try:
        res = build_flat(exposures, predictions, handle.client, order=order, grid=grid,
                         radius_arcsec=radius_arcsec, star_scale=star_scale,  # type: ignore[arg-type]
                         nsigma=nsigma, max_iter=max_iter)
    finally:
        handle.close()
    files = write_outputs(res, out)
    summary = {**res.summary(), "files": files}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    m = summary["matches"]
    click.echo(f"{summary['n_exposures']} exposures, {m['total']} sources: {m['matched']} "
               f"matched, {m['no_match']} unmatched, {m['ambiguous']} ambiguous and "
               f"{m['contested']} contested (dropped); {summary['n_passes']} passes")
    for k, d in summary["detectors"].items():
        click.echo(f"  {k}: {d['n_wavelengths']} wavelengths, median "
                   f"{d['median_stars_per_wavelength']:.0f} stars, median reduced chi2 "
                   f"{d['median_reduced_chi2']}, median sigma {d['median_sigma']}")
    for k, v in files.items():
        click.echo(f"{k}: {v}")
