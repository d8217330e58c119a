"""``csstflux nightly``: the scheduled flat-field update of one night, and its QA report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import EXIT_DONE, EXIT_NOTHING_TO_DO, handle_errors


def _png(fig: Any) -> bytes:
    """A figure as PNG bytes (:func:`~csstflux.cli.flats.save_figure`, in memory)."""
    import io

    from csstflux.cli.flats import save_figure

    buf = io.BytesIO()
    save_figure(fig, buf)
    return buf.getvalue()


def qa_report(work: Path, plan: Any, result: Any, summary: dict[str, Any],
              changes: dict[str, dict[str, Any]]) -> str:
    """QA report of one version: flat maps, change against the previous version, residuals,
    star counts, and the skipped exposures; PNGs in ``qa/``, one self-contained HTML page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from csstflux.io.htmlreport import Figure, Link, Section, Table, write_html_report

    qa = work / "qa"
    qa.mkdir(parents=True, exist_ok=True)
    sols, waves = result.solutions, result.wavelength
    names = sorted(sols)
    figs: dict[str, list[Any]] = {"maps": [], "change": [], "fit": []}

    fig, axs = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, k in zip(axs[0], names, strict=True):
        mid = sols[k].flat.shape[0] // 2
        img = sols[k].flat[mid] - 1.0
        v = max(float(np.nanmax(np.abs(img))), 1e-6)
        im = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v,
                       extent=(result.grid_x[0], result.grid_x[-1],
                               result.grid_y[0], result.grid_y[-1]))
        ax.set_title(f"{k}: flat - 1 at {waves[k][mid]:.0f} A")
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    figs["maps"].append(Figure("flat_maps", _png(fig),
                               "Flat minus one at the middle wavelength of each detector."))

    if changes:
        fig, axs = plt.subplots(1, 2, figsize=(11, 3.8))
        for k in names:
            if k in changes:
                axs[0].plot(waves[k], changes[k]["rms"], label=k)
        axs[0].set_xlabel("wavelength (A)")
        axs[0].set_ylabel("RMS(new / previous - 1)")
        axs[0].set_yscale("log")
        axs[0].legend(fontsize=7)
        k0 = next(k for k in names if k in changes)
        mid = changes[k0]["ratio"].shape[0] // 2
        img = changes[k0]["ratio"][mid]
        v = max(float(np.nanmax(np.abs(img))), 1e-9)
        im = axs[1].imshow(img, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
        axs[1].set_title(f"{k0}: new / previous - 1 at {waves[k0][mid]:.0f} A")
        fig.colorbar(im, ax=axs[1], shrink=0.8)
        figs["change"].append(Figure("change_vs_previous", _png(fig),
                                     f"Change against {summary['previous_version']}."))

    fig, axs = plt.subplots(1, 3, figsize=(14, 3.8))
    for k in names:
        s = sols[k]
        axs[0].plot(waves[k], s.reduced_chi2, label=k)
        axs[1].plot(waves[k], np.nanmedian(s.sigma, axis=(1, 2)), label=k)
        axs[2].plot(waves[k], np.asarray(s.fit.n), label=k)
    for ax, lab in zip(axs, ("reduced chi2 of the fit", "median flat sigma",
                             "stars used per wavelength"), strict=True):
        ax.set_xlabel("wavelength (A)")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7)
    axs[1].set_yscale("log")
    figs["fit"].append(Figure("residuals_counts", _png(fig),
                              "Fit residuals (reduced chi2), flat errors and star counts "
                              "against wavelength."))

    det_rows = [{"detector": k, **{c: (f"{v:.3g}" if isinstance(v, float) else v)
                                   for c, v in d.items()}}
                for k, d in summary["detectors"].items()]
    night_rows = [{"night": w["night"], "exposures used": w["n_exposures"],
                   "exposures skipped": w["n_skipped"]} for w in summary["window"]]
    failures = [{"exposure": s["path"], "problem": s["reason"]} for s in summary["skipped"]]
    match_rows = [{"match": k, "count": v} for k, v in summary["matches"].items()]
    links = [Link("../dask-performance.html", "Dask performance report"),
             Link("../summary.json", "summary.json (machine-readable)")]
    sections = [
        Section("Flat", paragraphs=(f"{summary['n_stars']} matched star spectra from "
                                    f"{summary['n_exposures']} exposures over "
                                    f"{len(summary['window'])} nights; "
                                    f"{summary['n_passes']} clipping passes.",),
                figures=tuple(figs["maps"]),
                tables=(Table(det_rows, caption="Per detector"),)),
        Section("Change against the previous version",
                paragraphs=(("previous version: " + str(summary["previous_version"]))
                            if changes else "No previous version to compare with.",),
                figures=tuple(figs["change"])),
        Section("Residuals and star counts", figures=tuple(figs["fit"]),
                tables=(Table(night_rows, caption="Exposures per night"),
                        Table(match_rows, caption="Cross-match outcomes"))),
        Section("Failures", paragraphs=(f"{len(failures)} exposures skipped.",),
                tables=(Table(failures, columns=["exposure", "problem"],
                              caption="Skipped exposures"),) if failures else ()),
        Section("Monitoring", paragraphs=(f"Dask dashboard during the run: "
                                          f"{summary['dashboard']}",), links=tuple(links)),
    ]
    meta = {"night": summary["night"], "version": summary["version"],
            "inputs hash": summary["inputs_hash"], "csstflux": summary["csstflux_version"],
            "created": summary["created"]}
    return str(write_html_report(qa / "index.html", f"csstflux nightly flat {summary['night']}",
                                 meta, sections, assets_dir=qa))


@click.command("nightly")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Nightly job file with a [nightly] table (jobs/nightly.toml).")
@click.option("--night", required=True,
              help="Night to process: YYYY-MM-DD (UTC date of the evening), yesterday or today.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def nightly_cmd(config_path: str, night: str, dry_run: bool, as_json: bool) -> None:
    """Update the flat over a rolling window of nights and write a new version.

    Exit status: 0 a new version was written; 1 failed (including: another run of the same
    night holds the lock); 2 usage or configuration error (a missing or invalid job file); 3
    nothing to do (no complete exposure in the night's folder, or a version from exactly these
    inputs exists already).
    """
    from csstflux.io.nights import parse_night
    from csstflux.pipeline.nightly import (
        DONE,
        check_config,
        load_nightly_config,
        plan_night,
        run_night,
    )

    cfg = load_nightly_config(config_path)
    when = parse_night(night)
    check_config(cfg)
    say = (lambda s: None) if as_json else click.echo
    if dry_run:
        plan = plan_night(cfg, when)
        info = plan.describe()
        if as_json:
            click.echo(json.dumps(info, indent=2))
        else:
            click.echo(f"night {info['night']}: version {info['version']}")
            for w in info["window"]:
                click.echo(f"  {w['night']}: {w['n_exposures']} exposures, "
                           f"{w['n_skipped']} skipped")
            for s in info["skipped"]:
                click.echo(f"  skipped {s['path']}: {s['reason']}")
            click.echo(f"would {'do nothing: ' + plan.reason() if plan.nothing_to_do else 'run'}")
        raise SystemExit(EXIT_NOTHING_TO_DO if plan.nothing_to_do else EXIT_DONE)
    run = run_night(cfg, when, qa=qa_report, say=say)
    if as_json:
        click.echo(json.dumps(run.summary, indent=2, default=str))
    elif run.status == DONE:
        s = run.summary
        click.echo(f"version {s['version']}: {s['n_stars']} stars from {s['n_exposures']} "
                   f"exposures ({len(s['skipped'])} skipped)")
        for k, v in s["outputs"].items():
            click.echo(f"  {k}: {v}")
    raise SystemExit(EXIT_DONE if run.status == DONE else EXIT_NOTHING_TO_DO)
