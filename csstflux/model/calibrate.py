"""Per-pixel calibration of the predicted σ on stars the model never saw.

Why
---
The σ branch learns the scatter it meets on the stars it is trained on. With a few hundred
empirical stars it learns them well, and on new stars the predicted σ is too small: in a quick
trial on MILES only ~30 % of the residuals fell inside ±σ instead of 68.3 %. The error budget
the paper leaves out (epistemic error, §5) has to be measured on held-out stars.

Method (``"per-pixel sigma scale, windowed quantile"``)
-----------------------------------------------------
On rows of a split the model was not trained on (the validation split), at each SNR of
``snrs``, eq. (1) noise is drawn (:func:`~csstflux.model.evaluate.predict_residuals`) and for
every unmasked (row, pixel) ``z = |r| / σ_rel`` is formed, with r the relative residual and
``σ_rel = sed_err / |sed|`` the predicted relative σ. The factor ``s_λ`` is the weighted
``target`` quantile (default erf(1/√2) = 0.6827) of the z values pooled over the ``window``
output pixels centred on λ (default 9, i.e. ±4 pixels, ±1 % in λ), so that
``P(|r| < s_λ σ_λ) = target`` on those rows. Pooling a running window smooths the factors along
wavelength and gives a small empirical set enough values per pixel. Each row weighs
``subset_weights[subset]`` (default 1; the same meaning as in training): subsets of very
different difficulty (model grid, MILES, Pickles) are mixed in the proportion the weights give,
e.g. weights ∝ 1/rows give every subset the same say. Pixels without any value take the factor
of the nearest pixel that has one; factors are floored at 1e-3.

The factors are written into the model card (``calibration["sigma_scale"]``, with the method,
the rows fitted on and the coverage per subset and band before and after), and
:class:`~csstflux.model.predictor.Predictor` multiplies ``sed_err`` by them. A model that
already carries factors is calibrated on top of them and the product is stored.

Limits: one factor per pixel for every SNR and star. A σ that is too small by a constant factor
is corrected exactly; an error that does not scale with the noise (a model error that dominates
at high SNR) is corrected on average over the SNRs used, which is why the coverage is reported
per SNR too. The in-sample coverage after calibration is ``target`` by construction; the
held-out check is ``csstflux evaluate`` on the test split.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import OUTPUT_GRID
from csstflux.io.trainstore import TrainingArrays
from csstflux.model.card import ModelCard, load_model, save_model
from csstflux.model.evaluate import PredictorLike, Residuals, band_coverage, predict_residuals

__all__ = ["METHOD", "ONE_SIGMA", "SigmaCalibration", "apply_calibration", "fit_sigma_scale",
           "scale_from_residuals", "weighted_quantile"]

FloatArray = NDArray[np.float64]

#: Fraction of a Gaussian within ±1σ.
ONE_SIGMA: float = math.erf(1.0 / math.sqrt(2.0))
#: Name of the method recorded in model cards.
METHOD: str = "per-pixel sigma scale, windowed quantile"


def weighted_quantile(values: ArrayLike, weights: ArrayLike, q: float) -> float:
    """Weighted quantile with the midpoint rule (Hazen's for equal weights).

    Parameters
    ----------
    values, weights : (n,) float
        Values and their non-negative weights (positive total).
    q : float
        Quantile in [0, 1].

    Returns
    -------
    float
        Linear interpolation of the sorted values at cumulative weight fraction ``q``, each
        value standing at the middle of its weight.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(v)
    v, w = v[order], w[order]
    total = w.sum()
    if not total > 0:
        raise ValueError("weights must have a positive sum")
    cw = (np.cumsum(w) - 0.5 * w) / total
    return float(np.interp(q, cw, v))


def scale_from_residuals(residuals: Sequence[Residuals], weights: ArrayLike | None = None, *,
                         window: int = 9, floor: float = 1e-3,
                         target: float = ONE_SIGMA) -> FloatArray:
    """Per-pixel σ factors from residuals (the method of the module docstring).

    Parameters
    ----------
    residuals : sequence of Residuals
        The same rows at one or more SNRs.
    weights : (n_rows,) float, optional
        Weight of each row (default 1).
    window : int
        Odd number of output pixels pooled around each pixel (1: no pooling).
    floor : float
        Smallest factor.
    target : float
        Coverage to reach.

    Returns
    -------
    (574,) float64 factors ``s_λ``.

    Raises
    ------
    ValueError
        No finite z value at any pixel.
    """
    if window < 1 or window % 2 != 1:
        raise ValueError(f"window must be a positive odd number of pixels, got {window}")
    n_rows = residuals[0].residual.shape[0]
    w_row = np.ones(n_rows) if weights is None else np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.concatenate([np.where(x.mask | ~(x.sigma > 0), np.nan,
                                     np.abs(x.residual) / x.sigma) for x in residuals])
    z[~np.isfinite(z)] = np.nan
    w = np.tile(w_row, len(residuals))
    n_pix = z.shape[1]
    h = window // 2
    scale = np.full(n_pix, np.nan)
    for j in range(n_pix):
        zz = z[:, max(0, j - h):j + h + 1]
        ww = np.broadcast_to(w[:, None], zz.shape)
        ok = np.isfinite(zz) & (ww > 0)
        if ok.any():
            scale[j] = weighted_quantile(zz[ok], ww[ok], target)
    have = np.flatnonzero(np.isfinite(scale))
    if have.size == 0:
        raise ValueError("no finite residual/σ values to calibrate on")
    nearest = have[np.abs(np.arange(n_pix)[:, None] - have[None, :]).argmin(axis=1)]
    return np.maximum(scale[nearest], floor)


@dataclass(frozen=True)
class SigmaCalibration:
    """Fitted σ factors and the coverage they give; see :func:`fit_sigma_scale`."""

    scale: FloatArray
    """(574,) factors ``s_λ``."""
    snrs: tuple[float, ...]
    """SNRs of the noise the factors were fitted on."""
    seed: int
    """Noise seed."""
    window: int
    """Pixels pooled per factor."""
    floor: float
    """Smallest factor."""
    target: float
    """Coverage aimed at."""
    subset_counts: dict[str, int]
    """Rows fitted on per subset."""
    subset_weights: dict[str, float] = field(default_factory=dict)
    """Row weight per subset (missing: 1)."""
    coverage_before: dict[str, Any] = field(default_factory=dict)
    """``{"all": {band: c}, "by_subset": {subset: {band: c}}, "by_snr": {snr: {band: c}}}``."""
    coverage_after: dict[str, Any] = field(default_factory=dict)
    """The same with the factors applied (in-sample; every row counts once, whatever the
    subset weights, so ``"all"`` differs from ``target`` when the weights are not all 1)."""

    def card_section(self, fitted_on: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The model card's ``calibration`` section (``sigma_scale`` included)."""
        return {"sigma_scale": [float(v) for v in self.scale], "method": METHOD,
                "description": ("sigma_scale[λ] is the weighted quantile at `target` of "
                                "|r|/σ_rel pooled over `window` output pixels around λ, on "
                                "held-out rows with eq. (1) noise at `snrs`; the predictor "
                                "multiplies sed_err by it"),
                "target": self.target, "window": self.window, "floor": self.floor,
                "snrs": list(self.snrs), "seed": self.seed,
                "subset_weights": dict(self.subset_weights),
                "fitted_on": {"rows": dict(self.subset_counts), **dict(fitted_on or {})},
                "coverage_before": self.coverage_before, "coverage_after": self.coverage_after}


def _coverage_report(res: Sequence[Residuals], subset: NDArray[np.str_],
                     scale: ArrayLike | None) -> dict[str, Any]:
    return {"all": band_coverage(res, scale=scale),
            "by_subset": {str(s): band_coverage(res, subset == s, scale)
                          for s in np.unique(subset)},
            "by_snr": {f"{x.snr:g}": band_coverage([x], scale=scale) for x in res}}


def fit_sigma_scale(predictor: PredictorLike, data: TrainingArrays,
                    snrs: Sequence[float] = (20.0, 40.0, 80.0), seed: int = 0, *,
                    subset_weights: Mapping[str, float] | None = None, window: int = 9,
                    floor: float = 1e-3, target: float = ONE_SIGMA) -> SigmaCalibration:
    """Fit per-pixel σ factors on held-out rows (see the module docstring).

    Parameters
    ----------
    predictor : callable
        ``(flux_norm, flux_err) -> (sed, sed_err)``; its own calibration, if any, is included
        in the σ being calibrated.
    data : TrainingArrays
        Rows the model was not trained on (the validation split).
    snrs, seed
        Noise of :func:`~csstflux.model.evaluate.predict_residuals`.
    subset_weights : mapping, optional
        Row weight per subset (missing subsets: 1).
    window, floor, target
        As in :func:`scale_from_residuals`.

    Returns
    -------
    SigmaCalibration
    """
    if len(data) == 0:
        raise ValueError("no rows to calibrate on")
    sw = {str(k): float(v) for k, v in (subset_weights or {}).items()}
    if any(v < 0 for v in sw.values()):
        raise ValueError("subset weights must be non-negative")
    weights = np.array([sw.get(str(s), 1.0) for s in data.subset])
    res = predict_residuals(predictor, data, snrs, seed)
    scale = scale_from_residuals(res, weights, window=window, floor=floor, target=target)
    counts = {str(s): int(n) for s, n in zip(*np.unique(data.subset, return_counts=True),
                                             strict=True)}
    return SigmaCalibration(scale=scale, snrs=tuple(float(s) for s in snrs), seed=int(seed),
                            window=window, floor=floor, target=target, subset_counts=counts,
                            subset_weights=sw,
                            coverage_before=_coverage_report(res, data.subset, None),
                            coverage_after=_coverage_report(res, data.subset, scale))


def apply_calibration(model_path: str | os.PathLike[str], scale: ArrayLike,
                      out_path: str | os.PathLike[str], info: Mapping[str, Any] | None = None,
                      *, overwrite: bool = False) -> ModelCard:
    """Write a copy of a model whose card carries σ factors.

    Parameters
    ----------
    model_path : path-like
        The model to calibrate (archive, card or folder).
    scale : (574,) float
        Factors ``s_λ`` (e.g. :attr:`SigmaCalibration.scale`). When the model already carries
        factors, the product of the two is stored.
    out_path : path-like
        A folder (files named after the model) or a ``.keras``/``.json`` file name.
    info : mapping, optional
        Further calibration fields (method, fitted_on, coverage_before/after, ...; e.g.
        :meth:`SigmaCalibration.card_section`); its ``sigma_scale`` is ignored.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    ModelCard
        The new card; its ``training_data``, ``metrics`` and ``normalisation`` are the source's
        and ``calibration["base_model"]`` names the source.
    """
    s = np.asarray(scale, dtype=np.float64)
    if s.shape != (OUTPUT_GRID.n,) or not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"scale must be {OUTPUT_GRID.n} positive finite numbers")
    model, card = load_model(model_path)
    old = card.sigma_scale
    total = s if old is None else s * np.asarray(old, dtype=np.float64)
    calibration = {k: v for k, v in dict(info or {}).items() if k != "sigma_scale"}
    calibration["sigma_scale"] = [float(v) for v in total]
    calibration["base_model"] = {"model_id": card.model_id,
                                 "archive_sha256": card.archive_sha256,
                                 "had_sigma_scale": old is not None}
    p = os.fspath(out_path)
    name = None if p.endswith((".keras", ".json")) else card.name
    return save_model(model, out_path, name=name, training_data=card.training_data,
                      metrics=card.metrics, calibration=calibration,
                      normalisation=card.normalisation, overwrite=overwrite)
