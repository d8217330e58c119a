"""``csstflux nightly``: the scheduled flat-field update of one night, and its QA report
(:func:`csstflux.report.flat_qa.nightly_report`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click

from csstflux.cli.errors import EXIT_DONE, EXIT_NOTHING_TO_DO, handle_errors
from csstflux.cli.options import cluster_options, cluster_settings
from csstflux.logs import fmt_path, quiet_progress


@click.command("nightly")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Nightly job file with a [nightly] table (jobs/nightly.toml).")
@click.option("--night", required=True,
              help="Night to process: YYYY-MM-DD (UTC date of the evening), yesterday or today.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def nightly_cmd(config_path: str, night: str, dry_run: bool, cluster_flags: dict[str, Any],
                as_json: bool) -> None:
    """Update the flat over a rolling window of nights and write a new version.

    Exit status: 0 a new version was written; 1 failed (including: another run of the same
    night holds the lock); 2 usage or configuration error (a missing or invalid job file); 3
    nothing to do (no complete exposure in the night's folder, or a version from exactly these
    inputs exists already). Cluster options given here win over the job's [nightly.cluster]
    table.
    """
    from csstflux.io.stores.nights import parse_night
    from csstflux.pipeline.nightly import (
        DONE,
        check_config,
        load_nightly_config,
        plan_night,
        run_night,
    )
    from csstflux.report.flat_qa import nightly_report

    cfg = load_nightly_config(config_path)
    cfg = replace(cfg, cluster=cluster_settings(cluster_flags, cfg.cluster))
    when = parse_night(night)
    check_config(cfg)
    if as_json:
        quiet_progress()
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
                click.echo(f"  skipped {fmt_path(s['path'])}: {s['reason']}")
            click.echo(f"would {'do nothing: ' + plan.reason() if plan.nothing_to_do else 'run'}")
        raise SystemExit(EXIT_NOTHING_TO_DO if plan.nothing_to_do else EXIT_DONE)
    run = run_night(cfg, when, qa=nightly_report)
    if as_json:
        click.echo(json.dumps(run.summary, indent=2, default=str))
    elif run.status == DONE:
        s = run.summary
        click.echo(f"version {s['version']}: {s['n_stars']} stars from {s['n_exposures']} "
                   f"exposures ({len(s['skipped'])} skipped)")
        for k, v in s["outputs"].items():
            click.echo(f"  {k}: {fmt_path(v)}")
    raise SystemExit(EXIT_DONE if run.status == DONE else EXIT_NOTHING_TO_DO)
