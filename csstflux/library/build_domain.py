"""Fit the domain model on a training store, calibrate its thresholds by cross-fitting over
the store's real rows, and measure it on the store's held-out test rows."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import OUTPUT_GRID, TEFF_DOMAIN, TRAIN_SNRS
from csstflux.io.stores.trainset import SPLITS, TrainingArrays, TrainStore
from csstflux.library.domain import (
    CHI2_CAP,
    DomainEstimate,
    DomainModel,
    calibrate_thresholds,
    fit_domain_model,
    robust_std,
    survey_noise,
)
from csstflux.spectra.color import continuum_color
from csstflux.spectra.noise import NoiseConfig

#: Set kinds whose inputs are real spectra (the others are emulated).
REAL_INPUT_KINDS = ("miles", "bosz")


#: S/N bins (median |flux|/error of the input) of the test-split report with training's noise.
SURVEY_SNR_BINS = ((10.0, 30.0), (30.0, 80.0), (80.0, 1000.0))


def _real_rows(data: TrainingArrays) -> NDArray[np.bool_]:
    kinds = {s["subset"]: s["kind"] for s in data.attrs.get("sets", [])}
    return np.array([kinds.get(str(s), str(s)) in REAL_INPUT_KINDS for s in data.subset])


def _colors(data: TrainingArrays) -> NDArray[np.float64]:
    return np.asarray(continuum_color(OUTPUT_GRID.wavelength, data.targets, data.target_mask))


def label_report(est: DomainEstimate, teff: NDArray[np.float64], logg: NDArray[np.float64],
                 feh: NDArray[np.float64]) -> dict[str, Any]:
    """Median and robust scatter of estimate − truth (Teff in K and as a fraction)."""
    d_t = est.teff - teff
    return {"n": int(teff.size),
            "teff_median_K": float(np.median(d_t)), "teff_robust_sigma_K": float(robust_std(d_t)),
            "teff_robust_sigma_frac": float(robust_std(d_t / teff)),
            "logg_median": float(np.median(est.logg - logg)),
            "logg_robust_sigma": float(robust_std(est.logg - logg)),
            "feh_median": float(np.median(est.feh - feh)),
            "feh_robust_sigma": float(robust_std(est.feh - feh)),
            "teff_z_std": float(robust_std(d_t / est.teff_err))}


def noisy_copies(x: NDArray[np.floating[Any]], snr: float, rng: np.random.Generator
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Eq. (1)-style noise at one SNR on clean inputs: (noisy, error)."""
    e = np.abs(np.asarray(x, np.float64)) / snr
    return x + e * rng.standard_normal(x.shape), e


def stratified_folds(teff: NDArray[np.float64], k: int, rng: np.random.Generator
                     ) -> NDArray[np.int64]:
    """(n,) fold (0…k−1) of each row: rows sorted by Teff, each run of ``k`` consecutive rows
    spread over the ``k`` folds in random order, so that every fold spans the Teff range."""
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    n = len(teff)
    order = np.argsort(teff, kind="stable")
    fold = np.empty(n, np.int64)
    for start in range(0, n, k):
        block = order[start:start + k]
        fold[block] = rng.permutation(k)[:block.size]
    return fold


def _grid_weights(data: TrainingArrays) -> NDArray[np.float64]:
    """Row weights: the grid rows together weigh as much as all the other rows."""
    is_grid = np.array([str(s) == "grid" for s in data.subset])
    w = np.ones(len(data))
    if is_grid.any() and (~is_grid).any():
        w[is_grid] = (~is_grid).sum() / is_grid.sum()
    return w


def _fit(data: TrainingArrays, color: NDArray[np.float64], real: NDArray[np.bool_],
         chi2_cap: float, provenance: dict[str, Any] | None = None) -> DomainModel:
    model = fit_domain_model(data.inputs, data.teff, data.logg, data.feh, color, real,
                             _grid_weights(data), provenance=provenance)
    return replace(model, chi2_cap=chi2_cap)


def build_domain_model(trainstore: str | os.PathLike[str], *, noise: NoiseConfig,
                       snrs: tuple[float, ...] = TRAIN_SNRS, max_grid_rows: int = 4000,
                       teff_margin: float = 1.0, seed: int = 0, folds: int = 5,
                       draws: int = 40, quantile: float = 0.99, chi2_cap: float = CHI2_CAP
                       ) -> tuple[DomainModel, dict[str, Any]]:
    """Fit on the store's train split, thresholds by cross-fitting, report on test.

    The shipped model is fitted on the train split: grid (synthetic) rows are subsampled to
    ``max_grid_rows`` and weighted so that, together, they weigh as much as the real and
    empirical rows (real stars shape the model, the grid fills its gaps).

    Thresholds (:func:`~csstflux.library.domain.calibrate_thresholds`): the real rows of the
    train and validation splits (clean inputs, no masked pixel) are split into ``folds``
    Teff-stratified folds; for each fold the model is fitted again, the same way, on the
    train rows and the validation real rows outside that fold, and scores that fold's rows
    with ``draws`` noisy copies each (training's noise: ``noise``, ``snrs``). The χ²
    thresholds are the per-S/N-bin ``quantile`` over all of them, and the systematic label
    errors the robust scatter of their cross-fitted residuals. Each cross-fitted model has
    ~(folds−1)/folds of the real rows the shipped one has, so its held-out χ² is, if
    anything, a little larger: the thresholds err towards flagging less.

    The test-split report gives label accuracy and the flag rates on held-out real rows at
    SNR 20 and 80 with eq. (1) errors (as ``csstflux verify-library`` draws them), and with
    training's noise (``survey``, with the spread of the Teff z-scores per S/N bin of
    :data:`SURVEY_SNR_BINS`).
    """
    store = TrainStore(trainstore)
    split = store.column("split")
    subset = np.array([str(s) for s in store.column("subset")])
    rng = np.random.default_rng(seed)
    train_idx = np.flatnonzero(split == SPLITS["train"])
    grid_rows = train_idx[subset[train_idx] == "grid"]
    other = train_idx[subset[train_idx] != "grid"]
    if grid_rows.size > max_grid_rows:
        grid_rows = np.sort(rng.choice(grid_rows, max_grid_rows, replace=False))
    idx = np.sort(np.concatenate([grid_rows, other]))
    tr = store.load(idx)
    tr = tr.take(np.flatnonzero(~tr.input_mask.any(axis=1)))
    real = _real_rows(tr)
    tr_color = _colors(tr)
    build = {"max_grid_rows": max_grid_rows, "teff_margin": teff_margin, "seed": seed,
             "folds": folds, "draws": draws, "quantile": quantile, "chi2_cap": chi2_cap}
    model = _fit(tr, tr_color, real, chi2_cap, provenance={
        "trainset": str(trainstore), "trainset_created": store.attrs.get("created"),
        "rows_by_subset": {str(s): int((tr.subset == s).sum()) for s in np.unique(tr.subset)},
        "build": build})
    report: dict[str, Any] = {"n_train": len(tr), "n_real_train": int(real.sum()),
                              "color_scatter": model.color_scatter,
                              "median_scatter": float(np.median(model.scatter))}

    def held_out(name: str) -> TrainingArrays:
        rows = store.load(np.flatnonzero(split == SPLITS[name]))
        keep = _real_rows(rows) & ~rows.input_mask.any(axis=1)
        return rows.take(np.flatnonzero(keep))

    # cross-fitting over the real rows of train + validation
    val = held_out("validation")
    val_color = _colors(val)
    pool = TrainingArrays.concatenate([tr.take(np.flatnonzero(real)), val], attrs=tr.attrs)
    pool_color = np.concatenate([tr_color[real], val_color])
    fold = stratified_folds(pool.teff, folds, rng)
    tr_fold = np.full(len(tr), -1)
    tr_fold[np.flatnonzero(real)] = fold[:int(real.sum())]
    val_fold = fold[int(real.sum()):]
    fold_models = []
    for k in range(folds):
        keep_tr = np.flatnonzero(tr_fold != k)
        keep_val = np.flatnonzero(val_fold != k)
        rows = TrainingArrays.concatenate([tr.take(keep_tr), val.take(keep_val)],
                                          attrs=tr.attrs)
        fold_models.append(_fit(rows, np.concatenate([tr_color[keep_tr], val_color[keep_val]]),
                                np.concatenate([real[keep_tr], np.ones(keep_val.size, bool)]),
                                chi2_cap))
    model, thr = calibrate_thresholds(model, pool.inputs, pool.teff, pool.logg, pool.feh,
                                      pool_color, rng, noise=noise, snrs=snrs,
                                      fold_models=fold_models, fold=fold, draws=draws,
                                      quantile=quantile, teff_margin=teff_margin)
    report["thresholds"] = thr
    test = held_out("test")
    test_color = _colors(test)
    report["test"] = {}

    def flag_rates(est: DomainEstimate) -> dict[str, float]:
        outside, ood = model.flags(est)
        return {"fraction_outside_domain": float(outside.mean()),
                "fraction_out_of_distribution": float(ood.mean()),
                "fraction_flagged": float((outside | ood).mean())}

    for snr in (20.0, 80.0):
        x, e = noisy_copies(test.inputs, snr, rng)
        est = model.estimate(x, e, color=test_color)
        report["test"][f"snr{snr:g}"] = {**label_report(est, test.teff, test.logg, test.feh),
                                         **flag_rates(est)}
    if len(test):
        parts, draws_test = [], 10
        for _ in range(draws_test):
            noisy, err, bad, _snr = survey_noise(test.inputs, rng, noise, snrs)
            parts.append(model.estimate(noisy, err, bad, test_color))
        est = DomainEstimate.concatenate(parts)
        z = (est.teff - np.tile(test.teff, draws_test)) / est.teff_err
        by_snr = {}
        for lo, hi in SURVEY_SNR_BINS:
            in_bin = (est.snr >= lo) & (est.snr < hi)
            by_snr[f"{lo:g}-{hi:g}"] = {"n": int(in_bin.sum()), "teff_z_std": (
                float(robust_std(z[in_bin])) if in_bin.sum() >= 10 else None)}
        report["test"]["survey"] = {"n": len(test), "draws": draws_test, **flag_rates(est),
                                    "by_snr": by_snr}
    report["teff_domain"] = list(TEFF_DOMAIN)
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    prov = {**model.provenance, "created": created, "calibration": thr, "holdout": {
        "validation_rows": len(val), "crossfit_rows": len(pool), "test_rows": len(test),
        **report["test"]},
        # the real stars never fitted, by name, so that later checks stay on held-out stars
        "validation_names": sorted(str(n) for n in val.name),
        "test_names": sorted(str(n) for n in test.name)}
    model = replace(model, provenance=prov)
    return model, report
