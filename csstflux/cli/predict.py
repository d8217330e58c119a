"""``csstflux predict-catalog``: SEDs for a LAMOST release, on Dask, into a Zarr store."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import EXIT_FAILURE, handle_errors

DEMO_OUT = "csstflux-demo.zarr"


def _teff_range(lo: float | None, hi: float | None) -> tuple[float, float] | None:
    if lo is None and hi is None:
        return None
    return (float("-inf") if lo is None else lo, float("inf") if hi is None else hi)


def _job_file_defaults(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--config FILE``: the ``[predict]`` table of a job file becomes the options' defaults.

    Keys are the option names with underscores (``chunk_stars = 2000``); options given on the
    command line win. An unknown key is an error naming the nearest option.
    """
    if not value:
        return
    import difflib
    import tomllib

    from csstflux.errors import ConfigError

    try:
        with open(value, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{value}: {exc}", ctx=ctx, param=param) from exc
    table = data.get("predict")
    if not isinstance(table, dict):
        raise click.BadParameter(f"{value}: no [predict] table", ctx=ctx, param=param)
    names = [p.name for p in ctx.command.params if p.name and p.name != "config_path"]
    for key in table:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            err = ConfigError(f"unknown configuration key 'predict.{key}'{hint}", path=value)
            raise click.BadParameter(str(err), ctx=ctx, param=param)
    ctx.default_map = {**(ctx.default_map or {}), **table}


@click.command("predict-catalog")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              is_eager=True, expose_value=False, callback=_job_file_defaults,
              help="Job file whose [predict] table sets these options' defaults "
              "(jobs/predict-dr9.toml); command-line options win.")
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
@click.option("--scheduler", help="Address of a running Dask scheduler (tcp:// or tls://).")
@click.option("--cluster", type=click.Choice(["slurm", "pbs"]),
              help="Start workers through dask-jobqueue (see deploy/).")
@click.option("--jobs", default=1, show_default=True, help="Batch jobs for --cluster.")
@click.option("--gpu", is_flag=True, help="GPU workers (dask-cuda LocalCUDACluster).")
@click.option("--read-processes", type=int,
              help="Reader processes per worker feeding its model [default: 0 (one thread); "
              "with --gpu, the number of cores less one].")
@click.option("--dask-config", "dask_config", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Dask YAML settings (jobqueue, TLS, ...) applied before the cluster starts, "
              "over DASK_CONFIG and ~/.config/dask; repeatable, later files win (deploy/dask/).")
@click.option("--workers", type=int, help="Local worker processes [default: one per core].")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="Interface the dashboard listens on.")
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
                        chunk_stars: int | None, batch_size: int, scheduler: str | None,
                        cluster: str | None, jobs: int, gpu: bool, read_processes: int | None,
                        dask_config: tuple[str, ...], workers: int | None,
                        dashboard_host: str, overwrite: bool, max_failed_fraction: float,
                        demo_size: int, photometry: str | None, as_json: bool) -> None:
    """Predict R=200 SEDs and errors for a LAMOST release into a resumable Zarr store.

    With neither --catalog nor --root, runs on the embedded demo release (built once and
    cached) with the shipped model.
    """
    from distributed import progress

    from csstflux.model.card import default_model_path
    from csstflux.pipeline.cluster import load_dask_config, start_cluster
    from csstflux.pipeline.plan import Selection
    from csstflux.pipeline.predict import (
        PredictOptions,
        check_options,
        read_inputs,
        run_predict,
    )

    say = (lambda *a: None) if as_json else click.echo
    demo = catalog is None and root is None
    if demo:
        from csstflux.library.demo import demo_release

        say(f"no --catalog or --root: using the embedded demo release ({demo_size} stars)")
        rel = demo_release(n_stars=demo_size)
        catalog, root = str(rel.catalog), str(rel.root)
        say(f"demo release: {rel.root}")
    opts = PredictOptions(
        out=out or (DEMO_OUT if demo else "predictions.zarr"),
        model=model or str(default_model_path()), catalog=catalog, root=root,
        selection=Selection(limit=limit, min_snr=min_snr, star_only=star_only,
                            teff_range=_teff_range(teff_min, teff_max)),
        chunk_stars=chunk_stars, batch_size=batch_size, overwrite=overwrite,
        read_processes=(read_processes if read_processes is not None
                        else max(1, (os.cpu_count() or 2) - 1) if gpu else 0),
        max_failed_fraction=max_failed_fraction)
    for path in dask_config:
        load_dask_config(path)
    check_options(opts)   # model files and output folder, before any worker starts
    inputs = read_inputs(opts)   # the catalogue (or the root's files) too
    handle = start_cluster(scheduler=scheduler, cluster=cluster, gpu=gpu, n_workers=workers,
                           jobs=jobs, dashboard_host=dashboard_host,
                           readers=opts.read_processes > 0)
    anchor_opts = None
    if photometry is not None:
        from csstflux.pipeline.anchor import AnchorOptions

        anchor_opts = AnchorOptions(store=opts.out, photometry=photometry)
    anchored = None
    try:
        say(f"dask: {handle.kind} cluster, dashboard {handle.dashboard}")
        result = run_predict(
            opts, handle,
            progress=None if as_json or not sys.stdout.isatty() else (lambda f: progress(f)),
            on_start=lambda state: say("resuming the existing store" if state == "resume"
                                       else f"writing {opts.out}"),
            inputs=inputs)
        if anchor_opts is not None:
            from csstflux.pipeline.anchor import run_anchor

            say(f"anchoring to photometry ({photometry})")
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
            click.echo(f"{result.store} is already complete; nothing to do "
                       "(--overwrite to recompute)")
        click.echo(f"\n{result.store}: {result.n_stars} stars, {result.n_predicted} predicted, "
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
            click.echo(f"performance report: {result.report}")
        store = Path(result.store)
        click.echo("open it with:\n  python -c \"import csstflux; "
                   f"print(csstflux.open_predictions('{store}'))\"")
    if not result.ok:
        click.echo(f"error: {result.n_failed} of {result.n_stars} files could not be used, more "
                   f"than --max-failed-fraction {max_failed_fraction}", err=True)
        sys.exit(EXIT_FAILURE)
