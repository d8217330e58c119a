"""``csstflux evaluate``, ``calibrate``, ``calibrate-reference`` and ``verify-library``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from csstflux.cli.errors import handle_errors
from csstflux.cli.library import LIBRARY_FORMATS, _read_library, generic_options
from csstflux.errors import ConfigError

_SPLITS = ("train", "validation", "test")


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers", found=text) from None
    if not vals or min(vals) <= 0:
        raise ConfigError(f"{what} must be positive numbers", found=text)
    return vals


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _pairs(text: str, what: str) -> dict[str, float]:
    """``"grid=300,miles=60"`` → {"grid": 300.0, "miles": 60.0}."""
    out = {}
    for item in _names(text):
        key, sep, val = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(val)
        except ValueError:
            raise ConfigError(f"{what} must look like subset=number[,subset=number]",
                              found=text) from None
    return out


def _predictor(model_path: str | None) -> Any:
    from csstflux.model.card import default_model_path
    from csstflux.model.predictor import load_predictor

    return load_predictor(model_path if model_path is not None else default_model_path())


def _rows(trainset: str, subsets: str, split: str, max_rows: str, seed: int) -> Any:
    from csstflux.errors import StoreError
    from csstflux.io.stores.trainset import TrainStore
    from csstflux.model.evaluate import subset_rows
    from csstflux.model.training import select_rows

    store = TrainStore(trainset)
    data = select_rows(store, _names(subsets), split)
    limits = {k: int(v) for k, v in _pairs(max_rows, "--max-rows").items()}
    if limits:
        data = subset_rows(data, limits, seed)
    if len(data) == 0:
        raise StoreError(f"no rows in split {split!r} of subsets {subsets or 'all'}",
                         path=trainset)
    return data


_model_option = click.option(
    "--model", "model_path", type=click.Path(exists=True),
    help="Model (.keras archive, its .json card, or a folder); default: the shipped model.")
_store_options = [
    click.option("--trainset", type=click.Path(exists=True, file_okay=False), required=True,
                 help="Training store (csstflux build-trainset)."),
    click.option("--subsets", default="", help="Comma-separated subsets (default: all)."),
    click.option("--snrs", default="20,40,80", show_default=True,
                 help="SNRs of the eq. (1) noise."),
    click.option("--max-rows", default="", help="Random subsample, e.g. grid=300 (per subset)."),
    click.option("--seed", default=0, show_default=True, help="Seed of the noise and subsample."),
]


def _with(options: list[Any]) -> Any:
    def deco(f: Any) -> Any:
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def _fmt(x: float | None) -> str:
    return "   nan" if x is None else f"{x:.4f}"


@click.command("evaluate")
@_model_option
@_with(_store_options)
@click.option("--split", type=click.Choice(_SPLITS), default="test", show_default=True)
@click.option("--teff-bin", default=500.0, show_default=True, help="Teff bin width, K.")
@click.option("--baseline", default="",
              help="Also predict every row without the network, from the training-split rows "
                   "of this subset (e.g. miles): the median SED of the --baseline-k stars "
                   "whose normalised inputs are nearest; summary key baseline_by_subset.")
@click.option("--baseline-k", default=5, show_default=True,
              help="Neighbours of the --baseline prediction.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="evaluation",
              show_default=True, help="Folder for the CSV tables and PNG figures.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def evaluate_cmd(model_path: str | None, trainset: str, subsets: str, snrs: str, max_rows: str,
                 seed: int, split: str, teff_bin: float, baseline: str, baseline_k: int,
                 out_dir: str, as_json: bool) -> None:
    """Accuracy and uncertainty of a model on store rows (paper Figs. 2-5): tables and PNGs."""
    from csstflux.model.evaluate import evaluate_rows
    from csstflux.report.evaluation import write_evaluation

    predictor = _predictor(model_path)
    data = _rows(trainset, subsets, split, max_rows, seed)
    reference = _rows(trainset, baseline, "train", "", seed) if baseline else None
    try:
        ev = evaluate_rows(predictor, data, _floats(snrs, "--snrs"), seed=seed,
                           teff_bin=teff_bin, reference_sigma=predictor.reference_sigma,
                           baseline=reference, baseline_k=baseline_k, baseline_name=baseline)
    except ValueError as exc:
        raise ConfigError(f"cannot evaluate: {exc}") from exc
    write_evaluation(ev, out_dir)
    summary = ev.summary() | {"model_id": predictor.card.model_id, "split": split,
                              "calibrated": (predictor.card.sigma_scale is not None
                                             or predictor.card.sigma_floor is not None
                                             or predictor.card.sed_factor is not None),
                              "out": out_dir}
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{ev.n_rows} rows ({', '.join(f'{k} {v}' for k, v in ev.subset_counts.items())})"
               f", split {split}, model {predictor.card.model_id}")
    click.echo("typical robust 1σ      " + "  ".join(f"{b:>6s}" for b in ev.bands)
               + "   coverage " + "  ".join(f"{b:>6s}" for b in ev.bands))
    for snr, d in summary["typical"].items():
        cov = summary["coverage"][snr]
        click.echo(f"  SNR {snr:>4s}             " + "  ".join(
            _fmt(d[b]["sigma"]) for b in ev.bands) + "            "
            + "  ".join(_fmt(cov[b]) for b in ev.bands))
    for sub, cov in ev.coverage_by_subset.items():
        ref = ev.coverage_with_reference_by_subset.get(sub)
        click.echo(f"  coverage {sub:8s} " + "  ".join(f"{b} {_fmt(cov[b])}" for b in ev.bands)
                   + ("" if ref is None else "   with the reference term "
                      + "  ".join(f"{b} {_fmt(ref[b])}" for b in ev.bands)))
    for sub, b in ev.baseline_by_subset.items():
        click.echo(f"  {sub} without the network ({b['k']} nearest {b['reference']} stars): "
                   "median residual " + ", ".join(
                       f"{w} Å {_fmt(v)}" for w, v in b["median"].items() if v is not None)
                   + "; network minus it " + ", ".join(
                       f"{w} Å {_fmt(v)}" for w, v in b["network_minus_baseline"].items()
                       if v is not None))
    click.echo("paper comparison (robust 1σ, ours/paper):")
    for r in ev.paper_comparison():
        click.echo(f"  {r['teff']:.0f} K [{r['bin'][0]:.0f}, {r['bin'][1]:.0f}) n={r['n']:<5d} "
                   f"SNR {r['snr']:<3g} {r['band']}: {_fmt(r['sigma'])} / {r['paper']:.4f}")
    click.echo(f"wrote tables and figures to {out_dir}")


@click.command("robustness")
@_model_option
@click.option("--trainset", type=click.Path(exists=True, file_okay=False), required=True,
              help="Training store (csstflux build-trainset).")
@click.option("--subsets", default="", help="Comma-separated subsets (default: all).")
@click.option("--split", type=click.Choice(_SPLITS), default="test", show_default=True)
@click.option("--max-rows", default="", help="Random subsample, e.g. grid=300 (per subset).")
@click.option("--rv", "rv_kms", default=30.0, show_default=True,
              help="Residual radial-velocity error, km/s (applied as +v and -v).")
@click.option("--snr", default=20.0, show_default=True, help="S/N of the noise check.")
@click.option("--draws", default=16, show_default=True, help="Noisy copies per row.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def robustness_cmd(model_path: str | None, trainset: str, subsets: str, split: str,
                   max_rows: str, rv_kms: float, snr: float, draws: int, seed: int,
                   as_json: bool) -> None:
    """How far predictions move, in units of their σ, under a residual RV error and noise."""
    from csstflux.model.robustness import robustness

    predictor = _predictor(model_path)
    data = _rows(trainset, subsets, split, max_rows, seed)
    rep = robustness(predictor, data, rv_kms=rv_kms, snr=snr, draws=draws, seed=seed)
    rep |= {"model_id": predictor.card.model_id, "split": split,
            "subsets": sorted({str(s) for s in data.subset})}
    if as_json:
        click.echo(json.dumps(rep, indent=2))
        return
    click.echo(f"{rep['n_rows']} {split} rows, model {rep['model_id']}; |Δ| in units of σ "
               "(median / 90th percentile / RMS)")
    for key, what in (("rv", f"RV ±{rv_kms:g} km/s"), ("noise", f"mean at S/N {snr:g}")):
        for band, st in rep[key]["bands"].items():
            click.echo(f"  {what:>18s} {band}: {_fmt(st['median'])} / {_fmt(st['p90'])} / "
                       f"{_fmt(st['rms'])}")


@click.command("calibrate")
@_model_option
@_with(_store_options)
@click.option("--split", type=click.Choice(_SPLITS), default="validation", show_default=True,
              help="Rows to fit on: stars the model was not trained on.")
@click.option("--subset-weights", default="", help="Row weight per subset, e.g. miles=60 "
              "(default 1 each).")
@click.option("--priority", default="",
              help="Subsets in order of precedence per output pixel, e.g. miles,pickles,grid: at "
                   "each wavelength only the first subset with rows there is fitted; '+' pools "
                   "subsets into one entry, e.g. miles+pickles,grid (default: all rows pooled).")
@click.option("--window", default=9, show_default=True, help="Output pixels pooled per factor.")
@click.option("--method", type=click.Choice(["scale+floor", "scale"]), default="scale+floor",
              show_default=True,
              help="Error model per pixel: sqrt((s σ)² + τ²) (a factor and an SNR-independent "
                   "floor, needs several --snrs) or s σ (a factor only).")
@click.option("--correct-sed", is_flag=True,
              help="Also correct the mean: per-pixel SED factors that remove the median residual "
                   "on the same rows (window, weights, priority), fitted before σ.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for the calibrated model and sigma_scale.csv/png.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def calibrate_cmd(model_path: str | None, trainset: str, subsets: str, snrs: str,
                  max_rows: str, seed: int, split: str, subset_weights: str, priority: str,
                  window: int, method: str, correct_sed: bool, out_dir: str, overwrite: bool,
                  as_json: bool) -> None:
    """Fit per-pixel σ factors (and floors, and SED factors) on held-out rows; write a
    calibrated model copy."""
    from csstflux.model.calibrate import apply_calibration, fit_sigma_scale
    from csstflux.model.card import default_model_path
    from csstflux.model.predictor import load_predictor
    from csstflux.report.evaluation import write_calibration

    source = model_path if model_path is not None else str(default_model_path())
    predictor = load_predictor(source)
    data = _rows(trainset, subsets, split, max_rows, seed)
    try:
        cal = fit_sigma_scale(predictor, data, _floats(snrs, "--snrs"), seed,
                              subset_weights=_pairs(subset_weights, "--subset-weights"),
                              window=window, method=method, priority=_names(priority),
                              correct_sed=correct_sed)
    except ValueError as exc:
        raise ConfigError(f"cannot calibrate: {exc}") from exc
    fitted_on = {"trainset": str(trainset), "split": split,
                 "subsets": list(_names(subsets)) or "all", "max_rows": max_rows or None}
    card = apply_calibration(source, cal.scale, out_dir, cal.card_section(fitted_on),
                             floor=cal.sigma_floor, sed_factor=cal.sed_factor,
                             overwrite=overwrite)
    write_calibration(cal, out_dir)

    def stats(x: Any) -> dict[str, float] | None:
        return None if x is None else {"min": float(np.min(x)), "median": float(np.median(x)),
                                       "max": float(np.max(x))}

    factors, floors = stats(cal.scale), stats(cal.sigma_floor)
    summary = {"model": str(Path(out_dir) / card.archive), "model_id": card.model_id,
               "method": method, "rows": cal.subset_counts, "snrs": list(cal.snrs),
               "sigma_scale": factors, "sigma_floor": floors,
               "sed_factor": stats(cal.sed_factor),
               "coverage_before": cal.coverage_before, "coverage_after": cal.coverage_after}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    assert factors is not None
    click.echo(f"fitted on {sum(cal.subset_counts.values())} {split} rows "
               f"({', '.join(f'{k} {v}' for k, v in cal.subset_counts.items())}), SNR "
               f"{', '.join(f'{s:g}' for s in cal.snrs)}, method {method}; factors "
               f"{factors['min']:.3g}–{factors['max']:.3g}"
               + ("" if floors is None else
                  f", floors {floors['min']:.3g}–{floors['max']:.3g}")
               + ("" if cal.sed_factor is None else
                  f", SED factors {cal.sed_factor.min():.3g}–{cal.sed_factor.max():.3g}"))
    before, after = cal.coverage_before, cal.coverage_after
    groups = {"all": (before["all"], after["all"])} | {
        sub: (before["by_subset"][sub], after["by_subset"][sub]) for sub in before["by_subset"]
    } | {f"SNR {snr}": (before["by_snr"][snr], after["by_snr"][snr])
         for snr in before["by_snr"]}
    for group, (b, a) in groups.items():
        click.echo(f"  coverage {group:8s} " + "  ".join(
            f"{k} {_fmt(b[k])}→{_fmt(a[k])}" for k in b if k != "all"))
    click.echo(f"calibrated model: {summary['model']} ({card.model_id})")


@click.command("calibrate-reference")
@_model_option
@_with(_store_options)
@click.option("--reference", required=True,
              help="Subsets of an independent library to fit the reference term on, e.g. "
                   "pickles (its rows in every --splits group).")
@click.option("--splits", default="validation,test", show_default=True,
              help="Groups of held-out rows, two or more: each is judged with the term fitted "
                   "on the others (cross-fitting); the term written is fitted on all of them.")
@click.option("--window", default=25, show_default=True, help="Output pixels pooled per value.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for the model copy and reference_sigma.csv/png.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def calibrate_reference_cmd(model_path: str | None, trainset: str, subsets: str, snrs: str,
                            max_rows: str, seed: int, reference: str, splits: str, window: int,
                            out_dir: str, overwrite: bool, as_json: bool) -> None:
    """Fit the reference term: what an independent library adds, in quadrature, to the
    calibrated σ; write a model copy whose card carries it."""
    from csstflux.grids import OUTPUT_GRID
    from csstflux.model.calibrate import apply_reference_sigma, fit_reference_sigma
    from csstflux.model.card import default_model_path
    from csstflux.model.evaluate import BIAS_WAVELENGTHS
    from csstflux.report.evaluation import write_reference

    groups = _names(splits)
    bad = [g for g in groups if g not in _SPLITS]
    if bad or len(set(groups)) < 2:
        raise ConfigError(f"--splits must name two or more of {', '.join(_SPLITS)}",
                          found=splits)
    ref = _names(reference)
    names = _names(subsets)
    if names and not set(ref) <= set(names):
        names = (*names, *(r for r in ref if r not in names))
    source = model_path if model_path is not None else str(default_model_path())
    predictor = _predictor(source)
    data = {g: _rows(trainset, ",".join(names), g, max_rows, seed) for g in groups}
    try:
        fit = fit_reference_sigma(predictor, data, ref, _floats(snrs, "--snrs"), seed,
                                  window=window)
    except ValueError as exc:
        raise ConfigError(f"cannot fit the reference term: {exc}") from exc
    card = apply_reference_sigma(source, fit.sigma, out_dir,
                                 fit.card_section({"trainset": str(trainset),
                                                   "max_rows": max_rows or None}),
                                 overwrite=overwrite)
    write_reference(fit, out_dir)
    wl = {f"{w:g}": float(np.interp(w, OUTPUT_GRID.wavelength, fit.sigma))
          for w in BIAS_WAVELENGTHS}
    summary = {"model": str(Path(out_dir) / card.archive), "model_id": card.model_id,
               "reference": list(fit.reference), "groups": list(fit.groups),
               "rows": fit.subset_counts, "reference_sigma_at": wl,
               "coverage_without": fit.coverage_without["by_subset"],
               "coverage_crossfit": fit.coverage_crossfit["by_subset"],
               "coverage_crossfit_by_group": fit.coverage_crossfit["by_group"]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"reference {', '.join(fit.reference)}; groups {', '.join(fit.groups)}; "
               "ρ at " + ", ".join(f"{k} Å {v:.4f}" for k, v in wl.items()))
    for sub, before in summary["coverage_without"].items():
        after = summary["coverage_crossfit"][sub]
        click.echo(f"  coverage {sub:8s} σ → hypot(σ, ρ) out of sample: " + "  ".join(
            f"{b} {_fmt(before[b])}→{_fmt(after[b])}" for b in before if b != "all"))
    click.echo(f"model with the reference term: {summary['model']} ({card.model_id})")


@click.command("verify-library")
@_model_option
@click.option("--library", "kind", type=click.Choice(sorted(LIBRARY_FORMATS)), required=True,
              help="Library layout (miles; generic: one 1-D FITS file with a WCS or one "
                   "ECSV/CSV table per star).")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--params", type=click.Path(exists=True, dir_okay=False),
              help="Parameter file (MILES: its params file; generic: a CSV name,teff,logg,feh;"
                   " default: the MILES params file in the folder, each generic file's TEFF, "
                   "LOGG, FEH keywords). Stars whose Teff lies outside 5000-9750 K are left "
                   "out; stars without a Teff are kept (the domain block splits them by the "
                   "Teff their spectrum gives).")
@generic_options
@click.option("--vet", "do_vet", is_flag=True, help="Apply the Appendix-B vetting first.")
@click.option("--snr", default=80.0, show_default=True,
              help="SNR assumed for the input errors |flux|/SNR (no noise is added).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="verification",
              show_default=True, help="Folder for stars.csv, pixels.csv and residuals.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def verify_library_cmd(model_path: str | None, kind: str, directory: str, params: str | None,
                       medium: str | None, fwhm: float | None, resolving_power: float | None,
                       do_vet: bool, snr: float, out_dir: str, as_json: bool) -> None:
    """Predict each library star from its own spectrum and compare with its own SED (§4.3)."""
    from csstflux.grids import TEFF_DOMAIN
    from csstflux.library.domain import load_domain_model
    from csstflux.model.verify import verify_library
    from csstflux.report.evaluation import write_verification

    if not snr > 0:
        raise ConfigError("--snr must be positive", found=snr)
    predictor = _predictor(model_path)
    lib = _read_library(kind, directory, params, medium, fwhm, resolving_power)
    res = verify_library(predictor, lib, snr=snr, vet_stars=do_vet,
                         teff_range=TEFF_DOMAIN,
                         domain_model=load_domain_model())
    write_verification(res, out_dir)
    summary = res.summary() | {"model_id": predictor.card.model_id, "out": out_dir}
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    left = ", ".join(f"{k} {v}" for k, v in summary["n_left_out"].items() if v)
    click.echo(f"{res.n_stars} of {res.n_input} stars verified"
               + (f" (left out: {left})" if left else ""))
    click.echo("  λ (Å)      " + "  ".join(f"{k:>6s}" for k in res.sigma_at))
    click.echo("  robust 1σ  " + "  ".join(_fmt(v) for v in res.sigma_at.values()))
    click.echo("  std        " + "  ".join(_fmt(v) for v in res.std_at.values()))
    click.echo(f"  median RMSAE {_fmt(summary['median_rmsae'])}, coverage "
               f"{_fmt(summary['coverage'])}")
    for band, b in summary["bands"].items():
        click.echo(f"  {band}: median {_fmt(b['median'])}, robust 1σ {_fmt(b['sigma'])}, "
                   f"std {_fmt(b['std'])}, coverage {_fmt(b['coverage'])} "
                   f"({b['n_pixels']} pixels)")
    click.echo(f"wrote {out_dir}/stars.csv, pixels.csv, residuals.png")
