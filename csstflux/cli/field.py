"""``csstflux demo-field``: a predictions store dense enough to build a flat from."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import handle_errors
from csstflux.cli.options import cluster_options, cluster_settings
from csstflux.logs import fmt_path, quiet_progress

log = logging.getLogger(__name__)


@click.command("demo-field")
@click.option("--ra", type=float, required=True, help="Pointing RA, deg.")
@click.option("--dec", type=float, required=True, help="Pointing Dec, deg.")
@click.option("--per-detector", default=400, show_default=True,
              help="Stars on each detector's footprint.")
@click.option("--detectors", help="Comma-separated slitless detectors [default: one per band, "
              "those simulate-exposures uses by default].")
@click.option("--out", default="field.zarr", show_default=True, help="Predictions store.")
@click.option("--seed", default=0, show_default=True)
@cluster_options
@click.option("--overwrite", is_flag=True, help="Replace an existing store and its files.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def demo_field_cmd(ra: float, dec: float, per_detector: int, detectors: str | None, out: str,
                   seed: int, cluster_flags: dict[str, Any], overwrite: bool,
                   as_json: bool) -> None:
    """Demo stars on the slitless detectors of a pointing at RA, Dec, written as LAMOST
    files (OUT.lamost/, with a catalogue) and predicted with the shipped model into OUT: the
    start of the flat-field walk-through (docs/flats.md)."""
    from csstflux.demo.field import (
        DEFAULT_FIELD_DETECTORS,
        build_field_release,
        field_positions,
    )
    from csstflux.model.card import default_model_path
    from csstflux.pipeline.cluster import start_cluster
    from csstflux.pipeline.predict import PredictOptions, check_options, run_predict

    cluster = cluster_settings(cluster_flags)
    dets = (tuple(d.strip() for d in detectors.split(",") if d.strip()) if detectors
            else DEFAULT_FIELD_DETECTORS)
    field_positions(ra, dec, 1, dets)             # options checked before anything is written
    if as_json:
        quiet_progress()
    files = Path(out + ".lamost")
    opts = PredictOptions(out=out, model=str(default_model_path()), catalog=str(
        files / "catalog.csv"), root=str(files), overwrite=overwrite)
    if Path(out).exists() and not overwrite:
        from csstflux.errors import StoreError

        raise StoreError("output exists; pass --overwrite to replace it", path=out)
    check_options(opts)
    shutil.rmtree(files, ignore_errors=True)
    log.info("writing %d demo stars on each of %s to %s", per_detector, ", ".join(dets),
             fmt_path(files))
    rel = build_field_release(files, ra, dec, per_detector, dets, seed)
    handle = start_cluster(cluster)
    try:
        log.info("predicting %d stars into %s", rel.n_stars, fmt_path(out))
        result = run_predict(opts, handle)
    finally:
        handle.close()
    summary = {"store": out, "files": str(files), "n_stars": result.n_stars,
               "n_predicted": result.n_predicted, "detectors": list(dets),
               "per_detector": per_detector, "pointing": [ra, dec]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"{out}: {result.n_predicted} of {result.n_stars} stars predicted; next:\n"
                   f"  csstflux simulate-exposures --predictions {out} --ra {ra} --dec {dec} "
                   "--out exposures")
