"""``csstflux vet-library``, ``build-emulator`` and ``build-trainset``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import handle_errors
from csstflux.config import load_job
from csstflux.containers import Resolution, SpectralLibrary
from csstflux.errors import ConfigError, InputFormatError
from csstflux.logs import fmt_path, quiet_progress

LIBRARY_FORMATS = {"miles": "miles", "ngsl": "ngsl", "pickles": "pickles",
                   "generic": "generic-fits"}

_GENERIC_OPTIONS = [
    click.option("--medium", type=click.Choice(["air", "vacuum"]),
                 help="generic: medium of the files' wavelengths (default: each file's "
                      "AIRORVAC, VACUUM or CTYPE1 AWAV/WAVE, else vacuum with a warning)."),
    click.option("--fwhm", type=float,
                 help="generic: instrumental FWHM, Å (default: each file's FWHM, SPEC_RES, "
                      "RESOLUTN or R keyword, else 2 pixels with a warning)."),
    click.option("--resolution", "resolving_power", type=float,
                 help="generic: resolving power λ/FWHM instead of --fwhm."),
]


def generic_options(f: Any) -> Any:
    """Add ``--medium``, ``--fwhm`` and ``--resolution`` to a command reading a library."""
    for opt in reversed(_GENERIC_OPTIONS):
        f = opt(f)
    return f


def _resolution(fwhm: float | None, resolving_power: float | None) -> Resolution | None:
    if fwhm is not None and resolving_power is not None:
        raise ConfigError("give --fwhm or --resolution, not both",
                          found=f"--fwhm {fwhm} --resolution {resolving_power}")
    for name, v in (("--fwhm", fwhm), ("--resolution", resolving_power)):
        if v is not None and not v > 0:
            raise ConfigError(f"{name} must be positive", found=v)
    if fwhm is None and resolving_power is None:
        return None
    return Resolution(resolving_power=resolving_power, fwhm=fwhm)


def _read_library(kind: str, directory: str, params: str | None, medium: str | None = None,
                  fwhm: float | None = None, resolving_power: float | None = None
                  ) -> SpectralLibrary:
    from csstflux.io import read

    opts: dict[str, Any] = {}
    if params is not None:
        opts["table_path" if kind == "pickles" and not params.endswith(".csv") else
             "params"] = params
    resolution = _resolution(fwhm, resolving_power)
    if kind != "generic" and (medium is not None or resolution is not None):
        raise ConfigError("--medium, --fwhm and --resolution apply to --library generic only",
                          expected="--library generic", found=f"--library {kind}")
    if medium is not None:
        opts["medium"] = medium
    if resolution is not None:
        opts["resolution"] = resolution
    lib = read(directory, format=LIBRARY_FORMATS[kind], **opts)
    if not isinstance(lib, SpectralLibrary):
        raise InputFormatError("expected a library directory, found a single spectrum",
                               path=directory)
    return lib


def _limits(lib: SpectralLibrary, max_ebv: float | None, max_av: float | None
            ) -> dict[str, Any]:
    """Library-specific cuts of §2.2 where the library has the column."""
    out: dict[str, Any] = {}
    for key, limit, names in (("E(B-V)", max_ebv, ("ebv", "e_bv", "ebmv")),
                              ("A_V", max_av, ("av", "a_v"))):
        if limit is None:
            continue
        col = next((lib.extra[n] for n in names if n in lib.extra), None)
        if col is None:
            raise InputFormatError(f"the library has no {key} column for the requested cut",
                                   path=lib.source, expected=", ".join(names),
                                   found=", ".join(lib.extra) or "none")
        out[key] = (col, None, limit)
    return out


@click.command("vet-library")
@click.option("--library", "kind", type=click.Choice(sorted(LIBRARY_FORMATS)), required=True,
              help="Library layout.")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--params", type=click.Path(exists=True, dir_okay=False),
              help="Parameter table (Pickles: Mamajek's table or a CSV; others: a CSV; "
                   "generic: default each file's TEFF, LOGG, FEH keywords).")
@generic_options
@click.option("--rmsae-cut", default=0.05, show_default=True, help="GP RMSAE above which a "
              "star is rejected.")
@click.option("--teff-min", default=5000.0, show_default=True)
@click.option("--teff-max", default=9750.0, show_default=True)
@click.option("--max-ebv", type=float, help="Reject E(B-V) at or above this (needs the column).")
@click.option("--max-av", type=float, help="Reject A_V at or above this (needs the column).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder for kept.txt and rejected.csv.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def vet_library_cmd(kind: str, directory: str, params: str | None, medium: str | None,
                    fwhm: float | None, resolving_power: float | None, rmsae_cut: float,
                    teff_min: float, teff_max: float, max_ebv: float | None,
                    max_av: float | None, out_dir: str, as_json: bool) -> None:
    """Vet a stellar library with the Appendix-B GP (kept list and rejected stars with reasons)."""
    from csstflux.library.prepare import library_targets
    from csstflux.library.vetting import vet

    lib = _read_library(kind, directory, params, medium, fwhm, resolving_power)
    sed, mask, _ = library_targets(lib)
    res = vet(lib.teff, lib.logg, lib.feh, sed, mask, rmsae_cut=rmsae_cut,
              teff_range=(teff_min, teff_max), limits=_limits(lib, max_ebv, max_av))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kept.txt").write_text("".join(f"{n}\n" for n in lib.names[res.kept]))
    with (out / "rejected.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "teff", "logg", "feh", "rmsae", "reason"])
        for i in range(lib.n_star):
            if not res.kept[i]:
                w.writerow([lib.names[i], lib.teff[i], lib.logg[i], lib.feh[i],
                            "" if res.rmsae[i] != res.rmsae[i] else f"{res.rmsae[i]:.5f}",
                            res.reason[i]])
    summary = {"n_input": lib.n_star, "n_kept": res.n_kept,
               "n_rejected": lib.n_star - res.n_kept, "hyperparameters": res.hyper.to_dict()}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        h = res.hyper
        click.echo(f"{lib.n_star} stars: {res.n_kept} kept, {lib.n_star - res.n_kept} rejected "
                   f"(GP σ_f={h.sigma_f:.4g}, σ_n={h.sigma_n:.4g}, l={h.length_scale:.4g})")
        click.echo(f"wrote {out / 'kept.txt'} and {out / 'rejected.csv'}")


@click.command("build-emulator")
@click.option("--library", "kind", type=click.Choice(sorted(LIBRARY_FORMATS)), default="miles",
              show_default=True)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--params", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Output .npz (the compact emulator).")
@click.option("--n-components", default=40, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-vet", is_flag=True, help="Skip the Appendix-B vetting.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def build_emulator_cmd(kind: str, directory: str, params: str | None, out_path: str,
                       n_components: int, seed: int, no_vet: bool, as_json: bool) -> None:
    """Train the R=2000 input emulator (Appendix C) and report its held-out residuals."""
    from csstflux.library.build_emulator import emulator_from_library
    from csstflux.library.emulator import save_emulator

    lib = _read_library(kind, directory, params)
    emu, report = emulator_from_library(lib, seed=seed, n_components=n_components,
                                        do_vet=not no_vet)
    save_emulator(emu, out_path)
    report["out"] = out_path
    if as_json:
        click.echo(json.dumps({k: v for k, v in report.items() if k != "holdout"}
                              | {"holdout": {k: v for k, v in report.get("holdout", {}).items()
                                             if k != "rms_by_wavelength"}}, indent=2))
    else:
        h = report["hyperparameters"]
        click.echo(f"emulator from {report['n_kept']} stars, {report['n_components']} "
                   f"components (σ_f={h['sigma_f']:.4g}, σ_n={h['sigma_n']:.4g}, "
                   f"l={h['length_scale']:.4g}) → {out_path}")
        if "holdout" in report:
            rms = ", ".join(f"{k} Å {v:.4f}" for k, v in report["holdout"]["rms_at"].items())
            click.echo(f"held-out residual RMS: {rms}")


@click.command("build-trainset")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              required=True, help="TOML file (see jobs/trainset-default.toml).")
@click.option("--out", help="Override the output store.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing store.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def build_trainset_cmd(config_path: str, out: str | None, overwrite: bool | None,
                       as_json: bool) -> None:
    """Build a Zarr training store (grid, MILES, Pickles, BOSZ, NGSL sets) from a TOML file."""
    from csstflux.library.sets import TrainsetConfig
    from csstflux.library.trainset import build_trainset

    cfg = load_job(config_path, TrainsetConfig, "trainset",
                   overrides={"out": out, "overwrite": overwrite})
    if as_json:
        quiet_progress()
    _, summary = build_trainset(cfg)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"wrote {fmt_path(summary['out'])}: {summary['n_rows']} pairs")
        for s in summary["sets"]:
            c = s["split_counts"]
            click.echo(f"  {s['subset']:10s} {s['kind']:8s} {s['n_rows']:6d} rows  "
                       f"train {c['train']}  validation {c['validation']}  test {c['test']}")
