"""Fit the domain model on a training store and measure it on the store's held-out rows."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import OUTPUT_GRID, TEFF_DOMAIN
from csstflux.io.stores.trainset import SPLITS, TrainingArrays, TrainStore
from csstflux.library.domain import (
    DomainEstimate,
    DomainModel,
    calibrate_thresholds,
    fit_domain_model,
    robust_std,
)
from csstflux.spectra.color import continuum_color

#: Set kinds whose inputs are real spectra (the others are emulated).
REAL_INPUT_KINDS = ("miles", "bosz")


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


def build_domain_model(trainstore: str | os.PathLike[str], *, max_grid_rows: int = 4000,
                       teff_margin: float = 1.0, seed: int = 0
                       ) -> tuple[DomainModel, dict[str, Any]]:
    """Fit on the store's train split, thresholds on its validation split, report on test.

    Grid (synthetic) rows are subsampled to ``max_grid_rows`` and weighted so that, together,
    they weigh as much as the real and empirical rows: real stars shape the model, the grid
    fills its gaps. The test-split report gives label accuracy and the flag rates on held-out
    real rows at SNR 20 and 80.
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
    tr_ok = ~tr.input_mask.any(axis=1)
    tr = tr.take(np.flatnonzero(tr_ok))
    real = _real_rows(tr)
    is_grid = np.array([str(s) == "grid" for s in tr.subset])
    w = np.ones(len(tr))
    if is_grid.any() and (~is_grid).any():
        w[is_grid] = (~is_grid).sum() / is_grid.sum()
    model = fit_domain_model(tr.inputs, tr.teff, tr.logg, tr.feh, _colors(tr), real, w,
                             provenance={"trainset": str(trainstore),
                                         "trainset_created": store.attrs.get("created"),
                                         "rows_by_subset": {str(s): int((tr.subset == s).sum())
                                                            for s in np.unique(tr.subset)}})
    report: dict[str, Any] = {"n_train": len(tr), "n_real_train": int(real.sum()),
                              "color_scatter": model.color_scatter,
                              "median_scatter": float(np.median(model.scatter))}

    def held_out(name: str) -> TrainingArrays:
        rows = store.load(np.flatnonzero(split == SPLITS[name]))
        keep = _real_rows(rows) & ~rows.input_mask.any(axis=1)
        return rows.take(np.flatnonzero(keep))

    val = held_out("validation")
    model, thr = calibrate_thresholds(model, val.inputs, val.teff, val.logg, val.feh,
                                      _colors(val), rng, teff_margin=teff_margin)
    report["thresholds"] = thr
    test = held_out("test")
    report["test"] = {}
    for snr in (20.0, 80.0):
        x, e = noisy_copies(test.inputs, snr, rng)
        est = model.estimate(x, e, color=_colors(test))
        outside, ood = model.flags(est)
        report["test"][f"snr{snr:g}"] = {
            **label_report(est, test.teff, test.logg, test.feh),
            "fraction_outside_domain": float(outside.mean()),
            "fraction_out_of_distribution": float(ood.mean()),
            "fraction_flagged": float((outside | ood).mean())}
    report["teff_domain"] = list(TEFF_DOMAIN)
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    prov = {**model.provenance, "created": created, "holdout": {
        "validation_rows": len(val), "test_rows": len(test), **report["test"]},
        # the real stars never fitted, by name, so that later checks stay on held-out stars
        "validation_names": sorted(str(n) for n in val.name),
        "test_names": sorted(str(n) for n in test.name)}
    model = replace(model, provenance=prov)
    return model, report
