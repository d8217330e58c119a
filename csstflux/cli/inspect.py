"""``csstflux inspect``: what each input file is and what is wrong with it."""

from __future__ import annotations

import json

import click

from csstflux.cli.errors import EXIT_FAILURE
from csstflux.io.inspect import inspect_path
from csstflux.logs import fmt_num


@click.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of reports.")
def inspect_cmd(paths: tuple[str, ...], as_json: bool) -> None:
    """Detect the format of each PATH and report its range, size, metadata and problems.

    Exits 1 when any file is unreadable or unsupported, or is a spectrum without a single
    good pixel. A usable file with problems is shown as ``[problems]``.
    """
    reports = [inspect_path(p) for p in paths]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        for r in reports:
            status = "UNUSABLE" if not r["ok"] else "problems" if r["problems"] else "ok"
            click.echo(f"{r['path']}: {r['format'] or 'unknown format'} [{status}]")
            if r["kind"]:
                span = ("no good pixels" if r["wavelength_range"] is None else
                        "good pixels {:.1f}–{:.1f} Å".format(*r["wavelength_range"]))
                click.echo(f"  {r['kind']}, {r['n_pix']} px, {span}")
                meta = ", ".join(f"{k}={fmt_num(v, 7)}" for k, v in r["metadata"].items())
                if meta:
                    click.echo(f"  {meta}")
            for prob in r["problems"]:
                click.echo(f"  problem: {prob}")
    bad = [r["path"] for r in reports if not r["ok"]]
    if bad:
        click.echo(f"error: {len(bad)} of {len(reports)} file(s) unreadable, unsupported or "
                   "without a good pixel: " + ", ".join(bad), err=True)
        raise SystemExit(EXIT_FAILURE)
