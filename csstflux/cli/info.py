"""``csstflux info``: versions, grids and bands."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

import csstflux
from csstflux import grids


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def info_dict() -> dict[str, Any]:
    """Everything ``csstflux info`` reports, as a JSON-serialisable dict."""
    from csstflux.io.fits.inflate import INFLATER
    from csstflux.model.backend import backend_info

    def grid(g: grids.LogGrid) -> dict[str, Any]:
        return {"n": g.n, "start": g.start, "stop": g.stop, "dlnlambda": g.dlnlambda,
                "first": float(g.wavelength[0]), "last": float(g.wavelength[-1]),
                "resolution": g.resolution}

    kb = backend_info()
    return {
        "version": csstflux.__version__,
        "input_grid": grid(grids.INPUT_GRID),
        "output_grid": grid(grids.OUTPUT_GRID),
        "bands": {k: b.to_attrs() for k, b in grids.BANDS.items()},
        "scaling_window": list(grids.SCALING_WINDOW),
        "backend": kb["backend"],
        "keras": kb["keras"],
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "zarr": _version("zarr"),
        "numpy": _version("numpy"),
        "gzip_inflater": INFLATER.name,
    }


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """Show the version, the model grids, the CSST bands and the software stack."""
    d = info_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"csstflux {d['version']}  (keras {d['keras']} on {d['backend']}, "
               f"dask {d['dask']}, zarr {d['zarr']}, gzip inflater {d['gzip_inflater']})")
    for key in ("input_grid", "output_grid"):
        g = d[key]
        click.echo(f"{key:12s} {g['n']:5d} px  {g['first']:.2f}–{g['last']:.2f} Å  "
                   f"Δlnλ={g['dlnlambda']:g}  R={g['resolution']:g}")
    bands = ", ".join(f"{k} {v['lo']:.0f}–{v['hi']:.0f} Å" for k, v in d["bands"].items())
    click.echo(f"bands        {bands}")
    lo, hi = d["scaling_window"]
    click.echo(f"SED scaling  mean flux in {lo:.0f}–{hi:.0f} Å")
