"""``csstflux inspect``: what each input file is and what is wrong with it."""

from __future__ import annotations

import json

import click

from csstflux.io.inspect import inspect_path


@click.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of reports.")
def inspect_cmd(paths: tuple[str, ...], as_json: bool) -> None:
    """Detect the format of each PATH and report its range, size, metadata and problems.

    Exits 1 when any file is unreadable or unsupported.
    """
    reports = [inspect_path(p) for p in paths]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        for r in reports:
            status = "ok" if r["ok"] else "UNUSABLE"
            click.echo(f"{r['path']}: {r['format'] or 'unknown format'} [{status}]")
            if r["ok"]:
                lo, hi = r["wavelength_range"] or (float("nan"), float("nan"))
                click.echo(f"  {r['kind']}, {r['n_pix']} px, good pixels {lo:.1f}–{hi:.1f} Å")
                meta = ", ".join(f"{k}={v}" for k, v in r["metadata"].items())
                if meta:
                    click.echo(f"  {meta}")
            for prob in r["problems"]:
                click.echo(f"  problem: {prob}")
    bad = [r["path"] for r in reports if not r["ok"]]
    if bad:
        click.echo(f"error: {len(bad)} of {len(reports)} file(s) unreadable or unsupported: "
                   + ", ".join(bad), err=True)
        raise SystemExit(1)
