"""``csstflux anchor``: absolute, reddened SEDs from catalogue photometry, in the store."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from csstflux.cli.errors import EXIT_NOTHING_TO_DO, handle_errors
from csstflux.cli.options import cluster_options, cluster_settings
from csstflux.logs import fmt_num, fmt_path, quiet_progress


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def print_summary(summary: dict[str, Any]) -> None:
    """Human-readable summary of :func:`csstflux.pipeline.anchor.anchor_summary`."""
    click.echo(f"anchored {summary['n_anchored']} of {summary['n_stars']} stars; "
               f"median E(B-V) {fmt_num(summary['ebv_median'], 3)}")
    click.echo("flags: " + ", ".join(f"{k} {v}" for k, v in summary["flag_counts"].items()))
    for kind in ("fit", "holdout"):
        for band, st in summary[kind].items():
            click.echo(f"  {kind:7s} {band:8s} n={st['n']:6d}  observed - model: median "
                       f"{st['median']:+.3f}  robust sigma {st['robust_sigma']:.3f} mag")
    if summary.get("fit_rms") is not None:
        click.echo(f"rms of the fitted bands: {summary['fit_rms']:.3f} mag")


@click.command("anchor")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--photometry", default="header", show_default=True,
              help="'header' (the LAMOST header photometry recorded in the store) or a table "
              "(FITS/CSV/ECSV) with obsid, one column per band and optional <band>_err.")
@click.option("--bands", help="Comma-separated band names (sdss_u, ps1_g, gaia_G, csst_u...) "
              "[default: the header's SDSS and Pan-STARRS bands, or every known band the "
              "table has].")
@click.option("--holdout", help="Bands kept out of the fit and compared with the anchored SED "
              "(e.g. 'u,z': every selected band ending in _u or _z).")
@click.option("--extinction-law", "law", type=click.Choice(["F99", "G23"]), default="F99",
              show_default=True, help="Fitzpatrick 1999 or Gordon et al. 2023.")
@click.option("--rv", default=3.1, show_default=True, help="R_V of the extinction law.")
@click.option("--ebv-prior", help="Table column with a prior E(B-V) (and optional <col>_err; "
              "default error max(0.02, 0.16 x value)).")
@click.option("--floor", "floor_mag", default=0.02, show_default=True,
              help="Photometric error floor, mag, added in quadrature.")
@click.option("--csst-filters", type=click.Path(exists=True, file_okay=False),
              help="Folder of CSST imaging curves csst_phot.{nuv,u,g,r,i,z,y}.fits.")
@cluster_options
@click.option("--overwrite", is_flag=True,
              help="Redo every chunk, also when anchored before with other options.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def anchor_cmd(store: str, photometry: str, bands: str | None, holdout: str | None, law: str,
               rv: float, ebv_prior: str | None, floor_mag: float, csst_filters: str | None,
               cluster_flags: dict[str, Any], overwrite: bool, as_json: bool) -> None:
    """Fit each star's E(B-V) and absolute scale to its photometry and write the observed-frame
    SED (sed_abs, erg/s/cm2/A) into STORE, resumably, one Dask task per chunk.

    Exit status 3 when every chunk was already anchored with the same options."""
    from csstflux.photometry.anchor import AnchorConfig
    from csstflux.pipeline.anchor import AnchorOptions, run_anchor
    from csstflux.pipeline.cluster import start_cluster

    cluster = cluster_settings(cluster_flags)
    if as_json:
        quiet_progress()
    opts = AnchorOptions(store=store, photometry=photometry, bands=_csv(bands),
                         holdout=_csv(holdout), law=law, rv=rv, ebv_prior=ebv_prior,
                         csst_filters=csst_filters, fit=AnchorConfig(floor_mag=floor_mag),
                         overwrite=overwrite)
    handle = start_cluster(cluster)
    try:
        run = run_anchor(opts, handle)
    finally:
        handle.close()
    if as_json:
        click.echo(json.dumps(run.summary, indent=2))
    else:
        if run.n_chunks_run == 0:
            click.echo(f"{fmt_path(store)} was already anchored with these options; nothing to do "
                       "(--overwrite to redo)")
        print_summary(run.summary)
    if run.n_chunks_run == 0:
        sys.exit(EXIT_NOTHING_TO_DO)
