"""``csstflux predict-catalog``: SEDs for a LAMOST release, on Dask, into a Zarr store."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import EXIT_FAILURE, handle_errors
from csstflux.cli.options import cluster_options, cluster_settings
from csstflux.logs import fmt_path, quiet_progress

log = logging.getLogger(__name__)

DEMO_OUT = "csstflux-demo.zarr"


def _teff_range(lo: float | None, hi: float | None) -> tuple[float, float] | None:
    if lo is None and hi is None:
        return None
    return (float("-inf") if lo is None else lo, float("inf") if hi is None else hi)


def _job_file(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--config FILE``: the ``[predict]`` table of a job file
    (:class:`csstflux.pipeline.predict.PredictJob`, read by :func:`csstflux.config.load_job`:
    paths relative to the file) becomes the options' defaults, its ``[predict.cluster]`` table
    the cluster's; options given on the command line win."""
    if not value:
        return None
    from dataclasses import fields

    from csstflux.config import load_job
    from csstflux.errors import ConfigError
    from csstflux.pipeline.predict import PredictJob

    try:
        job = load_job(value, PredictJob, "predict")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    ctx.default_map = {**(ctx.default_map or {}),
                       **{f.name: getattr(job, f.name) for f in fields(job) if f.name != "cluster"}}
    return job


@click.command("predict-catalog")
@click.option("--config", "job", type=click.Path(exists=True, dir_okay=False),
              is_eager=True, callback=_job_file,
              help="Job file whose [predict] table sets these options' defaults and whose "
              "[predict.cluster] table the cluster's (jobs/predict-dr9.toml; relative paths "
              "from the file's folder); command-line options win.")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False),
              help="LAMOST catalogue (FITS or CSV, LASP columns).")
@click.option("--root", type=click.Path(exists=True, file_okay=False),
              help="Release data root (paths are built from it; scanned without --catalog).")
@click.option("--out", help="Output Zarr store [default: predictions.zarr, or "
              f"{DEMO_OUT} for the demo].")
@click.option("--model", help="Model archive or card [default: the shipped model].")
@click.option("--limit", type=int, help="Predict at most this many stars.")
@click.option("--min-snr", type=float, help="Minimum g-band S/N.")
@click.option("--star-only", is_flag=True, help="Class STAR only.")
@click.option("--teff-min", type=float, help="Minimum catalogue Teff (K).")
@click.option("--teff-max", type=float, help="Maximum catalogue Teff (K).")
@click.option("--chunk-stars", type=int,
              help="Stars per task and per Zarr chunk [default: about n/16, 256 to 2000].")
@click.option("--batch-size", default=256, show_default=True, help="Spectra per model call.")
@click.option("--read-processes", type=click.IntRange(min=0),
              help="Reader processes per worker feeding its model [default: 0 (one thread); "
              "with --cluster gpu, the number of cores less one].")
@cluster_options
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--max-failed-fraction", default=0.05, show_default=True,
              help="Exit 1 when more than this fraction of the files could not be used.")
@click.option("--demo-size", default=2000, show_default=True,
              help="Stars in the embedded demo release (no --catalog and no --root).")
@click.option("--photometry", help="Then anchor the SEDs to photometry in the same run "
              "('header' or a table; as `csstflux anchor STORE --photometry`, default bands "
              "and fit settings).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def predict_catalog_cmd(catalog: str | None, root: str | None, out: str | None,
                        model: str | None, limit: int | None, min_snr: float | None,
                        star_only: bool, teff_min: float | None, teff_max: float | None,
                        chunk_stars: int | None, batch_size: int, read_processes: int | None,
                        cluster_flags: dict[str, Any], overwrite: bool,
                        max_failed_fraction: float, demo_size: int, photometry: str | None,
                        job: Any, as_json: bool) -> None:
    """Predict R=200 SEDs and errors for a LAMOST release into a resumable Zarr store.

    With neither --catalog nor --root, runs on the embedded demo release (built once and
    cached) with the shipped model.
    """
    from csstflux.model.card import default_model_path
    from csstflux.pipeline.cluster import start_cluster
    from csstflux.pipeline.plan import Selection
    from csstflux.pipeline.predict import (
        PredictOptions,
        check_options,
        read_inputs,
        run_predict,
    )

    cluster = cluster_settings(cluster_flags, job.cluster if job is not None else None)
    if as_json:
        quiet_progress()
    demo = catalog is None and root is None
    if demo:
        from csstflux.demo.release import demo_release

        log.info("no --catalog or --root: using the embedded demo release (%d stars)",
                 demo_size)
        rel = demo_release(n_stars=demo_size)
        catalog, root = str(rel.catalog), str(rel.root)
        log.info("demo release: %s", fmt_path(rel.root))
    opts = PredictOptions(
        out=out or (DEMO_OUT if demo else "predictions.zarr"),
        model=model or str(default_model_path()), catalog=catalog, root=root,
        selection=Selection(limit=limit, min_snr=min_snr, star_only=star_only,
                            teff_range=_teff_range(teff_min, teff_max)),
        chunk_stars=chunk_stars, batch_size=batch_size, overwrite=overwrite,
        read_processes=(read_processes if read_processes is not None
                        else max(1, (os.cpu_count() or 2) - 1) if cluster.cluster == "gpu"
                        else 0),
        max_failed_fraction=max_failed_fraction)
    check_options(opts)   # model files and output folder, before any worker starts
    inputs = read_inputs(opts)   # the catalogue (or the root's files) too
    handle = start_cluster(cluster, readers=opts.read_processes > 0)
    anchor_opts = None
    if photometry is not None:
        from csstflux.pipeline.anchor import AnchorOptions

        anchor_opts = AnchorOptions(store=opts.out, photometry=photometry)
    anchored = None
    try:
        log.info("dask: %s cluster, dashboard %s", handle.kind, handle.dashboard)
        result = run_predict(opts, handle, inputs=inputs)
        if anchor_opts is not None:
            from csstflux.pipeline.anchor import run_anchor

            anchored = run_anchor(anchor_opts, handle)
    finally:
        handle.close()
    summary: dict[str, Any] = result.to_dict()
    if anchored is not None:
        summary["anchor"] = anchored.summary
    summary["failures"] = [{"file": f, "error": e} for f, e in result.failures]
    summary["duplicates"] = [{"file": f, "reason": e} for f, e in result.duplicates]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        if result.n_chunks_run == 0:
            click.echo(f"{fmt_path(result.store)} is already complete; nothing to do "
                       "(--overwrite to recompute)")
        click.echo(f"{fmt_path(result.store)}: {result.n_stars} stars, "
                   f"{result.n_predicted} predicted, "
                   f"{result.n_failed} files unusable")
        for _, e in result.failures[:10]:
            click.echo(f"  unusable: {e}")
        if len(result.failures) > 10:
            click.echo(f"  ... {len(result.failures) - 10} more in the store's failures table")
        if result.duplicates:
            click.echo(f"{len(result.duplicates)} catalogue row(s) dropped as repeated obsids "
                       "(listed in the store's failures table)")
        flagged = {k: v for k, v in result.flag_counts.items() if v}
        click.echo("stars per flag: " + (", ".join(f"{k} {v}" for k, v in flagged.items())
                                         if flagged else "none flagged"))
        if anchored is not None:
            from csstflux.cli.anchor import print_summary

            print_summary(anchored.summary)
        if result.report:
            click.echo(f"performance report: {fmt_path(result.report)}")
        store = Path(result.store)
        click.echo("open it with:\n  python -c \"import csstflux; "
                   f"print(csstflux.open_predictions('{store}'))\"")
    if not result.ok:
        click.echo(f"error: {result.n_failed} of {result.n_stars} files could not be used, more "
                   f"than --max-failed-fraction {max_failed_fraction}", err=True)
        sys.exit(EXIT_FAILURE)
