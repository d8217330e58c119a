"""Per-pixel calibration of the predicted σ on stars the model never saw.

Why
---
The σ branch learns the scatter it meets on the stars it is trained on. With a few hundred
empirical stars it learns them well, and on new stars the predicted σ is too small: in a quick
trial on MILES only ~30 % of the residuals fell inside ±σ instead of 68.3 %. The error budget
the paper leaves out (epistemic error, §5) has to be measured on held-out stars.

Residuals
---------
On rows of a split the model was not trained on (the validation split), at each SNR of
``snrs`` (default 20, 40, 80), eq. (1) noise is drawn
(:func:`~csstflux.model.evaluate.predict_residuals`) and for every unmasked (row, pixel) the
relative residual r and the predicted relative σ ``σ_rel = sed_err / |sed|`` are formed. Each
pixel λ pools the values of the ``window`` output pixels centred on it (default 9, i.e. ±4
pixels, ±1 % in λ): this smooths the result along wavelength and gives a small empirical set
enough values per pixel. Each row weighs ``subset_weights[subset]`` (default 1; the same meaning
as in training): subsets of very different difficulty (model grid, MILES, Pickles) are mixed in
the proportion the weights give, e.g. weights ∝ 1/rows give every subset the same say. Pixels
without any value take the result of the nearest pixel that has one.

Method ``"scale+floor"`` (default; ``"per-pixel sigma scale and floor, windowed Gaussian
likelihood + quantile touch-up"``)
---------------------------------------------------------------------------------------------
A two-term error model per pixel, in relative units::

    σ_cal² = (s_λ σ_rel)² + τ_λ²,        sed_err = |μ| σ_cal,

a factor ``s_λ`` on the network's σ (which shrinks with SNR) plus a floor ``τ_λ ≥ 0`` that does
not scale with SNR (model and library systematics). One factor alone cannot serve every SNR:
where part of the real error does not shrink with the noise, a single factor makes the coverage
too high at low SNR and too low at high SNR. ``s`` and ``τ`` are told apart only by residuals at
several SNRs, hence the default 20, 40, 80.

1. Fit: per pixel, (s, τ) maximise the weighted Gaussian likelihood of the pooled residuals,
   ``r ~ N(0, s²σ_rel² + τ²)``, with ``s ∈ [floor, max_scale]`` (1e-3, 1e3) and
   ``τ ∈ [0, max_floor]`` (0, 1). The optimiser works on (log s, log τ), started where the two
   terms share the mean square residual equally, with ``log τ`` bounded below at
   ``log(1e-12)`` (the τ → 0 boundary): Levenberg-damped Fisher scoring with the exact
   gradient, vectorised over all pixels (:func:`_fit_scoring`; scipy's L-BFGS-B pixel by pixel,
   ``solver="scipy"``, reaches the same optimum ~20× slower and is kept as a cross-check). The
   boundary is also compared explicitly with the closed-form τ = 0 fit
   (``s² = Σw r²/σ² / Σw``): the floor is kept only when the likelihood-ratio statistic
   ``2 n_eff (mean log L(s, τ) − mean log L(s₀, 0))`` exceeds ``floor_test`` (default 2.71, the
   5 % test for one parameter on a boundary; ``n_eff`` the Kish effective number of pooled
   values); otherwise τ = 0. This keeps τ at 0 when the data cannot tell the two terms
   apart (σ the same at every SNR, or one SNR only), where the scale-only result is recovered.
2. Touch-up: the Gaussian fit aims at the variance, not at the coverage (real residuals have
   heavier tails than a Gaussian). Per pixel, ``c_λ`` is the weighted ``target`` quantile of
   ``|r| / σ_cal`` over the same window, and both s and τ are multiplied by it, so that the
   pooled coverage on the fitting rows (all SNRs together) is exactly ``target``; the ratio
   τ/s of the fit, i.e. how the error is shared between the two terms, is kept. The results are
   then clipped to their bounds.

Method ``"scale"`` (``"per-pixel sigma scale, windowed quantile"``)
-----------------------------------------------------------------
The former method, kept: τ = 0 and ``s_λ`` is the weighted ``target`` quantile (default
erf(1/√2) = 0.6827) of ``z = |r| / σ_rel`` pooled over the window, so that
``P(|r| < s_λ σ_λ) = target`` on those rows; factors are floored at ``floor`` (1e-3). A σ that
is too small by a constant factor is corrected exactly; an error that does not scale with the
noise is corrected only on average over the SNRs used.

SED correction (``correct_sed``, ``csstflux calibrate --correct-sed``)
---------------------------------------------------------------------
The σ calibration leaves the mean alone. A bias common to the held-out stars (the network
sitting between model atmospheres and real stars that disagree in the blue) is removed, when
asked, by per-pixel factors ``k_λ = 1 / (1 + b_λ)``, ``b_λ`` the weighted median residual
over the same window, rows, weights and priority (:func:`sed_factor_from_residuals`), fitted
first; σ is then calibrated on the residuals of the corrected SED ``k μ``.

Output
------
The factors (and floors, and SED factors) are written into the model card
(``calibration["sigma_scale"]``, ``calibration["sigma_floor"]`` and
``calibration["sed_factor"]``, with the method, the rows fitted on and the coverage per subset,
band and SNR before and after), and :class:`~csstflux.model.predictor.Predictor` applies them. A
model that already carries a calibration ``(s₀, τ₀)`` is calibrated on top of it and the
composition is stored: ``s = s₁ s₀``, ``τ = sqrt((s₁ τ₀)² + τ₁²)``. The in-sample coverage after
calibration is ``target`` by construction (pooled over SNRs); the per-SNR in-sample coverage
and ``csstflux evaluate`` on the test split are the checks.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import OUTPUT_GRID
from csstflux.io.stores.trainset import TrainingArrays
from csstflux.model.card import ModelCard, load_model, save_model
from csstflux.model.evaluate import PredictorLike, Residuals, band_coverage, predict_residuals

__all__ = ["METHOD", "METHODS", "METHOD_FLOOR", "METHOD_REFERENCE", "ONE_SIGMA",
           "ReferenceSigma", "SigmaCalibration", "apply_calibration", "apply_reference_sigma",
           "corrected_residuals", "fit_reference_sigma", "fit_sigma_scale", "prioritise",
           "reference_sigma_from_residuals",
           "scale_floor_from_residuals", "scale_from_residuals", "sed_factor_from_residuals",
           "weighted_quantile"]

FloatArray = NDArray[np.float64]

#: Fraction of a Gaussian within ±1σ.
ONE_SIGMA: float = math.erf(1.0 / math.sqrt(2.0))
#: Name of the scale-only method recorded in model cards.
METHOD: str = "per-pixel sigma scale, windowed quantile"
#: Name of the scale-and-floor method recorded in model cards.
METHOD_FLOOR: str = ("per-pixel sigma scale and floor, windowed Gaussian likelihood + quantile "
                     "touch-up")
#: Method keys (``fit_sigma_scale(method=...)``, ``csstflux calibrate --method``) → names.
METHODS: dict[str, str] = {"scale": METHOD, "scale+floor": METHOD_FLOOR}
#: Lower bound of τ in the optimiser (its log is bounded): the τ → 0 boundary.
_TAU_MIN: float = 1e-12


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


def _check_window(window: int) -> None:
    if window < 1 or window % 2 != 1:
        raise ValueError(f"window must be a positive odd number of pixels, got {window}")


def _stack(residuals: Sequence[Residuals], weights: ArrayLike | None, signed: bool = False
           ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """|r| (r with ``signed``), σ_rel (NaN where unusable) and row weights of all SNRs
    stacked: (n·n_snr, 574)."""
    n_rows = residuals[0].residual.shape[0]
    w_row = np.ones(n_rows) if weights is None else np.asarray(weights, dtype=np.float64)
    bad = np.concatenate([x.mask | ~(x.sigma > 0) | ~np.isfinite(x.sigma)
                          | ~np.isfinite(x.residual) for x in residuals])
    r = np.concatenate([x.residual for x in residuals])
    r = np.where(bad, np.nan, r if signed else np.abs(r))
    sig = np.where(bad, np.nan, np.concatenate([x.sigma for x in residuals]))
    return r, sig, np.tile(w_row, len(residuals))


def _fill_nearest(values: FloatArray, what: str = "finite residual/σ values") -> FloatArray:
    """Pixels without a value (NaN) take the value of the nearest pixel that has one."""
    have = np.flatnonzero(np.isfinite(values))
    if have.size == 0:
        raise ValueError(f"no {what} to calibrate on")
    n_pix = values.size
    nearest = have[np.abs(np.arange(n_pix)[:, None] - have[None, :]).argmin(axis=1)]
    return values[nearest]


def _windows(r: FloatArray, sig: FloatArray, w: FloatArray, window: int
             ) -> Iterator[tuple[int, FloatArray, FloatArray, FloatArray]]:
    """Yield ``(pixel, |r|, σ, w)`` of the finite, positively weighted values pooled around
    each pixel (empty arrays where there are none)."""
    h = window // 2
    for j in range(r.shape[1]):
        cols = slice(max(0, j - h), j + h + 1)
        rr, ss = r[:, cols], sig[:, cols]
        ww = np.broadcast_to(w[:, None], rr.shape)
        ok = np.isfinite(rr) & np.isfinite(ss) & (ww > 0)
        yield j, rr[ok], ss[ok], ww[ok]


def scale_from_residuals(residuals: Sequence[Residuals], weights: ArrayLike | None = None, *,
                         window: int = 9, floor: float = 1e-3,
                         target: float = ONE_SIGMA) -> FloatArray:
    """Per-pixel σ factors from residuals (method ``"scale"`` of the module docstring).

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
    _check_window(window)
    r, sig, w = _stack(residuals, weights)
    scale = np.full(r.shape[1], np.nan)
    for j, rr, ss, ww in _windows(r, sig, w, window):
        if rr.size:
            scale[j] = weighted_quantile(rr / ss, ww, target)
    return np.maximum(_fill_nearest(scale), floor)


def sed_factor_from_residuals(residuals: Sequence[Residuals], weights: ArrayLike | None = None,
                              *, window: int = 9) -> FloatArray:
    """Per-pixel factors ``k_λ`` on the predicted SED that remove the median residual.

    ``b_λ`` is the weighted median of the signed relative residual ``r = (μ − Y) / Y`` pooled
    over ``window`` output pixels around λ and over the SNRs; the corrected SED ``k μ`` with
    ``k = 1 / (1 + b)`` has median residual 0 there on these rows. Pixels without a value
    take the nearest pixel's. Raises ValueError when no pixel has a value, or where the median
    prediction is not positive (b ≤ −1).
    """
    _check_window(window)
    r, sig, w = _stack(residuals, weights, signed=True)
    bias = np.full(r.shape[1], np.nan)
    for j, rr, _, ww in _windows(r, sig, w, window):
        if rr.size:
            bias[j] = weighted_quantile(rr, ww, 0.5)
    bias = _fill_nearest(bias, "finite residuals")
    bad = ~(bias > -1.0)
    if bad.any():
        wl = OUTPUT_GRID.wavelength[bad]
        raise ValueError(f"the median predicted SED is not positive at {int(bad.sum())} output "
                         f"pixels ({wl.min():.0f}-{wl.max():.0f} A): no factor can correct it")
    return 1.0 / (1.0 + bias)


def corrected_residuals(residuals: Sequence[Residuals], sed_factor: ArrayLike
                        ) -> list[Residuals]:
    """The residuals of ``k μ`` instead of ``μ``: ``r' = k (r + 1) − 1`` (σ_rel is relative and
    does not change)."""
    k = np.asarray(sed_factor, dtype=np.float64)
    return [Residuals(snr=x.snr, residual=k * (x.residual + 1.0) - 1.0, sigma=x.sigma,
                      mask=x.mask) for x in residuals]


def reference_sigma_from_residuals(residuals: Sequence[Residuals],
                                   weights: ArrayLike | None = None, *, window: int = 9,
                                   target: float = ONE_SIGMA) -> FloatArray:
    """Per-pixel reference terms ``ρ_λ ≥ 0`` (relative units) that make ``sqrt(σ² + ρ²)``
    cover ``target`` of the residuals.

    ``|r| < sqrt(σ² + ρ²)`` is ``r² − σ² < ρ²``, so ``ρ_λ²`` is the weighted ``target``
    quantile of ``q = r² − σ_rel²`` pooled over ``window`` output pixels around λ and over
    the SNRs; where that quantile is not positive (σ alone already covers ``target``), ρ = 0.
    ``σ_rel`` is the predictor's σ as given (its card's calibration included): ρ is what has
    to be added to it, in quadrature, for these rows. Pixels without a value take the nearest
    pixel's.

    Raises ValueError when no pixel has a value.
    """
    _check_window(window)
    r, sig, w = _stack(residuals, weights)
    rho2 = np.full(r.shape[1], np.nan)
    for j, rr, ss, ww in _windows(r, sig, w, window):
        if rr.size:
            rho2[j] = weighted_quantile(rr * rr - ss * ss, ww, target)
    return np.sqrt(np.maximum(_fill_nearest(rho2, "finite residuals"), 0.0))


def _nll(params: FloatArray, r2: FloatArray, s2: FloatArray, w: FloatArray
         ) -> tuple[float, FloatArray]:
    """Mean weighted negative log-likelihood of r ~ N(0, s²σ² + τ²) (constant dropped) and its
    gradient in (log s, log τ); ``w`` sums to 1."""
    a2, b2 = np.exp(2.0 * params[0]), np.exp(2.0 * params[1])
    v = a2 * s2 + b2
    f = float(np.dot(w, 0.5 * np.log(v) + 0.5 * r2 / v))
    g = w * (1.0 - r2 / v) / v
    return f, np.array([a2 * float(np.dot(g, s2)), b2 * float(g.sum())])


def _fit_scipy(r2: FloatArray, s2: FloatArray, w: FloatArray, start: FloatArray,
               bounds: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The fit of :func:`_fit_scoring` pixel by pixel with scipy's L-BFGS-B (a cross-check)."""
    from scipy.optimize import minimize

    theta, f = np.empty_like(start), np.empty(start.shape[0])
    for j in range(start.shape[0]):
        ok = w[j] > 0
        fit = minimize(_nll, start[j], args=(r2[j, ok], s2[j, ok], w[j, ok]), jac=True,
                       method="L-BFGS-B", bounds=list(map(tuple, bounds)),
                       options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-10})
        theta[j], f[j] = fit.x, fit.fun
    return theta, f


def _fit_scoring(r2: FloatArray, s2: FloatArray, w: FloatArray, start: FloatArray,
                 bounds: FloatArray, max_iter: int = 100, tol: float = 1e-7
                 ) -> tuple[FloatArray, FloatArray]:
    """Maximum likelihood of r ~ N(0, s²σ² + τ²) for many pixels at once.

    ``r2``, ``s2``, ``w``: (n_pix, m) squared residuals, σ² and weights (each row summing to
    1; 0 for padding); ``start``: (n_pix, 2) initial (log s, log τ); ``bounds``: (2, 2) lower
    and upper bound of each. Levenberg-damped Fisher scoring in (log s, log τ) with the step
    kept inside the bounds, accepted per pixel only when the likelihood does not drop (else
    the damping grows ×10). With ``u = s²σ²/v`` and ``t = τ²/v``, ``v = s²σ² + τ²``: gradient
    ``Σ w (1 − r²/v) (u, t)``, Fisher matrix ``2 Σ w (u, t)ᵀ(u, t)``.

    Returns
    -------
    theta : (n_pix, 2) fitted (log s, log τ); f : (n_pix,) mean negative log-likelihood.
    """
    def nll(theta: FloatArray) -> FloatArray:
        v = np.exp(2 * theta[:, :1]) * s2 + np.exp(2 * theta[:, 1:])
        return np.sum(w * (0.5 * np.log(v) + 0.5 * r2 / v), axis=1)

    theta = np.clip(start, bounds[:, 0], bounds[:, 1])
    f = nll(theta)
    lam = np.full(theta.shape[0], 1e-3)
    active = np.ones(theta.shape[0], bool)
    for _ in range(max_iter):
        if not active.any():
            break
        th, ww, rr, ss = theta[active], w[active], r2[active], s2[active]
        a2, b2 = np.exp(2 * th[:, :1]), np.exp(2 * th[:, 1:])
        v = a2 * ss + b2
        u, t = a2 * ss / v, b2 / v
        e = ww * (1.0 - rr / v)
        g = np.stack([np.sum(e * u, axis=1), np.sum(e * t, axis=1)], axis=1)
        fuu, ftt, fut = (2 * np.sum(ww * x, axis=1) for x in (u * u, t * t, u * t))
        la = lam[active]
        m11, m22 = fuu * (1 + la) + 1e-12, ftt * (1 + la) + 1e-12
        det = m11 * m22 - fut * fut
        step = -np.stack([m22 * g[:, 0] - fut * g[:, 1], m11 * g[:, 1] - fut * g[:, 0]],
                         axis=1) / det[:, None]
        trial = np.clip(th + step, bounds[:, 0], bounds[:, 1])
        v_t = np.exp(2 * trial[:, :1]) * ss + np.exp(2 * trial[:, 1:])
        f_t = np.sum(ww * (0.5 * np.log(v_t) + 0.5 * rr / v_t), axis=1)
        better = f_t <= f[active]
        idx = np.flatnonzero(active)
        moved = np.max(np.abs(trial - th), axis=1)
        theta[idx[better]] = trial[better]
        f[idx[better]] = f_t[better]
        lam[idx] = np.where(better, np.maximum(la / 3, 1e-9), la * 10)
        done = (better & (moved < tol)) | (lam[idx] > 1e12)
        active[idx[done]] = False
    return theta, f


def scale_floor_from_residuals(residuals: Sequence[Residuals],
                               weights: ArrayLike | None = None, *, window: int = 9,
                               floor: float = 1e-3, max_scale: float = 1e3,
                               max_floor: float = 1.0, target: float = ONE_SIGMA,
                               floor_test: float = 2.71, solver: str = "scoring",
                               block: int = 4_000_000
                               ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-pixel σ factors and floors (method ``"scale+floor"`` of the module docstring).

    Parameters
    ----------
    residuals : sequence of Residuals
        The same rows at several SNRs (one SNR, or σ the same at every SNR, leaves τ = 0).
    weights : (n_rows,) float, optional
        Weight of each row (default 1).
    window : int
        Odd number of output pixels pooled around each pixel (1: no pooling).
    floor, max_scale : float
        Bounds of the factor s.
    max_floor : float
        Upper bound of the floor τ (relative units).
    target : float
        Coverage to reach (touch-up).
    floor_test : float
        Least likelihood-ratio statistic ``2 n_eff Δ(mean log L)`` for which τ > 0 is kept.
    solver : {"scoring", "scipy"}
        Vectorised Fisher scoring over all pixels (:func:`_fit_scoring`), or scipy's L-BFGS-B
        pixel by pixel (the same optimum, ~20× slower; a cross-check).
    block : int
        Pooled values held at once (pixels are fitted in blocks of ``block`` values).

    Returns
    -------
    scale, sigma_floor, touch_up : (574,) float64
        ``s_λ``, ``τ_λ`` and the touch-up factor ``c_λ`` already applied to both (the maximum-
        likelihood values are ``s/c`` and ``τ/c`` before clipping).

    Raises
    ------
    ValueError
        No finite value at any pixel.
    """
    _check_window(window)
    if solver not in ("scoring", "scipy"):
        raise ValueError(f"solver must be 'scoring' or 'scipy', got {solver!r}")
    r, sig, w = _stack(residuals, weights)
    n, n_pix = r.shape
    h = window // 2
    pad = np.full((n, h), np.nan)
    rp, sp = np.hstack([pad, r, pad]), np.hstack([pad, sig, pad])
    bounds = np.log([[floor, max_scale], [_TAU_MIN, max_floor]])
    scale, tau, touch = (np.full(n_pix, np.nan) for _ in range(3))
    step = max(1, block // max(1, n * window))
    for j0 in range(0, n_pix, step):
        j1 = min(n_pix, j0 + step)
        views = [np.lib.stride_tricks.sliding_window_view(x[:, j0:j1 + 2 * h], window, axis=1)
                 for x in (rp, sp)]                                    # (n, pixels, window)
        rr, ss = (np.moveaxis(v, 1, 0).reshape(j1 - j0, -1) for v in views)
        ok = np.isfinite(rr) & np.isfinite(ss) & np.repeat(w > 0, window)[None, :]
        ww = np.where(ok, np.repeat(w, window)[None, :], 0.0)
        total = ww.sum(axis=1)
        have = total > 0
        if not have.any():
            continue
        rr, ss, ok = rr[have], ss[have], ok[have]
        ww = ww[have] / total[have, None]
        r2, s2 = np.where(ok, rr * rr, 0.0), np.where(ok, ss * ss, 1.0)
        n_eff = 1.0 / np.sum(ww * ww, axis=1)
        # τ = 0: closed form
        s0 = np.clip(np.sqrt(np.sum(ww * r2 / s2, axis=1)), floor, max_scale)
        v0 = (s0 * s0)[:, None] * s2
        f0 = np.sum(ww * (0.5 * np.log(v0) + 0.5 * r2 / v0), axis=1)
        # both terms, started where each explains half of the mean square residual
        ms = np.maximum(np.sum(ww * r2, axis=1), _TAU_MIN ** 2)
        start = np.stack([np.log(s0 / np.sqrt(2.0)), 0.5 * np.log(ms / 2.0)], axis=1)
        fit = _fit_scipy if solver == "scipy" else _fit_scoring
        theta, f = fit(r2, s2, ww, start, bounds)
        keep = np.isfinite(f) & (2.0 * n_eff * (f0 - f) > floor_test)
        s = np.where(keep, np.exp(theta[:, 0]), s0)
        t = np.where(keep, np.exp(theta[:, 1]), 0.0)
        c = np.empty(s.size)
        for k in range(s.size):
            o = ok[k]
            c[k] = weighted_quantile(rr[k, o] / np.sqrt(s[k] ** 2 * s2[k, o] + t[k] ** 2),
                                     ww[k, o], target)
        idx = np.arange(j0, j1)[have]
        scale[idx], tau[idx], touch[idx] = s * c, t * c, c
    scale = np.clip(_fill_nearest(scale), floor, max_scale)
    tau = np.clip(_fill_nearest(tau), 0.0, max_floor)
    return scale, tau, _fill_nearest(touch)


@dataclass(frozen=True)
class SigmaCalibration:
    """Fitted σ factors (and floors) and the coverage they give; see :func:`fit_sigma_scale`."""

    scale: FloatArray
    """(574,) factors ``s_λ``."""
    snrs: tuple[float, ...]
    """SNRs of the noise the factors were fitted on."""
    seed: int
    """Noise seed."""
    window: int
    """Pixels pooled per factor."""
    floor: float
    """Smallest factor (not the σ floor τ; that is :attr:`sigma_floor`)."""
    target: float
    """Coverage aimed at."""
    subset_counts: dict[str, int]
    """Rows fitted on per subset."""
    subset_weights: dict[str, float] = field(default_factory=dict)
    """Row weight per subset (missing: 1)."""
    coverage_before: dict[str, Any] = field(default_factory=dict)
    """``{"all": {band: c}, "by_subset": {subset: {band: c}}, "by_snr": {snr: {band: c}}}``."""
    coverage_after: dict[str, Any] = field(default_factory=dict)
    """The same with the calibration applied (in-sample; every row counts once, whatever the
    subset weights, so ``"all"`` differs from ``target`` when the weights are not all 1)."""
    method: str = "scale"
    """Key of :data:`METHODS`."""
    sigma_floor: FloatArray | None = None
    """(574,) floors ``τ_λ`` (relative units) of method ``"scale+floor"``; None for ``"scale"``."""
    touch_up: FloatArray | None = None
    """(574,) touch-up factors ``c_λ`` of method ``"scale+floor"``."""
    priority: tuple[str, ...] = ()
    """Subset precedence per pixel (:func:`prioritise`); empty: all rows pooled."""
    sed_factor: FloatArray | None = None
    """(574,) factors ``k_λ`` on the predicted SED (:func:`sed_factor_from_residuals`), fitted
    before σ; None: the mean is left as the network gives it."""

    def card_section(self, fitted_on: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The model card's ``calibration`` section (``sigma_scale``, ``sigma_floor``
        included)."""
        out: dict[str, Any] = {"sigma_scale": [float(v) for v in self.scale]}
        if self.sed_factor is not None:
            out["sed_factor"] = [float(v) for v in self.sed_factor]
            out["sed_factor_description"] = (
                "sed = sed_factor[λ] μ: 1 / (1 + the weighted median relative residual pooled "
                "over `window` output pixels around λ and over `snrs`) on the same held-out rows "
                "(with `priority`), fitted before σ, whose residuals are those of the corrected "
                "SED")
        if self.sigma_floor is not None:
            out["sigma_floor"] = [float(v) for v in self.sigma_floor]
            description = (
                "relative sigma_cal = sqrt((sigma_scale[λ] σ_rel)² + sigma_floor[λ]²), "
                "sed_err = |sed| sigma_cal; (sigma_scale, sigma_floor) maximise the Gaussian "
                "likelihood of r pooled over `window` output pixels around λ on held-out rows "
                "with eq. (1) noise at `snrs`, then both are multiplied by the `target` "
                "quantile of |r|/sigma_cal there (touch-up) so the pooled coverage is `target`")
        else:
            description = ("sigma_scale[λ] is the weighted quantile at `target` of "
                           "|r|/σ_rel pooled over `window` output pixels around λ, on "
                           "held-out rows with eq. (1) noise at `snrs`; the predictor "
                           "multiplies sed_err by it")
        out |= {"method": METHODS[self.method], "method_key": self.method,
                "description": description, "target": self.target, "window": self.window,
                "floor": self.floor, "snrs": list(self.snrs), "seed": self.seed,
                "subset_weights": dict(self.subset_weights),
                "priority": list(self.priority),
                "fitted_on": {"rows": dict(self.subset_counts), **dict(fitted_on or {})}}
        if self.touch_up is not None:
            out["touch_up"] = {"min": float(self.touch_up.min()),
                               "median": float(np.median(self.touch_up)),
                               "max": float(self.touch_up.max())}
        out |= {"coverage_before": self.coverage_before, "coverage_after": self.coverage_after}
        return out


#: Teff bins (K) of the coverage reports.
TEFF_BINS: tuple[float, ...] = (5000.0, 6000.0, 7000.0, 8000.0, 9750.0)


def _coverage_report(res: Sequence[Residuals], subset: NDArray[np.str_],
                     scale: ArrayLike | None, floor: ArrayLike | None = None,
                     teff: NDArray[np.float64] | None = None) -> dict[str, Any]:
    out = {"all": band_coverage(res, scale=scale, floor=floor),
           "by_subset": {str(s): band_coverage(res, subset == s, scale, floor)
                         for s in np.unique(subset)},
           "by_snr": {f"{x.snr:g}": band_coverage([x], scale=scale, floor=floor)
                      for x in res}}
    if teff is not None:
        out["by_teff"] = {f"{lo:g}-{hi:g}": band_coverage(res, (teff >= lo) & (teff < hi),
                                                          scale, floor)
                          for lo, hi in zip(TEFF_BINS[:-1], TEFF_BINS[1:], strict=True)
                          if np.any((teff >= lo) & (teff < hi))}
    return out


def prioritise(residuals: Sequence[Residuals], subset: ArrayLike, priority: Sequence[str],
               min_rows: int = 3) -> list[Residuals]:
    """Residuals in which each output pixel keeps the rows of one entry of ``priority`` only.

    An entry is a subset name or several joined by ``+`` (``"miles+pickles"``: their rows are
    pooled). At every pixel the first entry with at least ``min_rows`` usable rows there (all
    its subsets together) is kept and the rows of every other subset are masked (subsets not
    named in ``priority`` come after it, one entry each, in no particular order).

    With ``("miles", "pickles", "grid")`` real stars with real inputs set σ where MILES has
    flux (3540–7410 Å), real SEDs (Pickles) where MILES has none, and the synthetic grid only
    where neither reaches. With ``("miles+pickles", "grid")`` the two real libraries are
    pooled wherever either has rows: σ is then one compromise for both kinds of real star
    (the Pickles rows, whose inputs are emulated, have larger residuals than the MILES rows
    inside the MILES range), while the synthetic grid, whose residuals are much smaller
    than either's, is still never pooled with them.
    """
    sub = np.asarray([str(s) for s in np.asarray(subset)])
    names = sorted({str(s) for s in sub})
    groups = [tuple(n.strip() for n in str(entry).split("+") if n.strip())
              for entry in priority]
    named = [n for g in groups for n in g]
    unknown = [p for p in named if p not in names]
    if unknown:
        near = {p: difflib.get_close_matches(p, names, n=1) for p in unknown}
        hint = "; ".join(f"{p!r}" + (f" (did you mean {m[0]!r}?)" if m else "")
                         for p, m in near.items())
        raise ValueError(f"priority names subsets that have no rows here: {hint}; the rows "
                         f"are of {names}")
    if len(set(named)) != len(named):
        raise ValueError(f"priority names a subset twice: {list(priority)}")
    order = [*groups, *((n,) for n in sorted(set(sub) - set(named)))]
    usable = ~np.logical_or.reduce([x.mask for x in residuals])           # (rows, pix)
    taken = np.zeros(usable.shape[1], bool)
    keep = np.zeros(usable.shape, bool)
    for group in order:
        rows = np.isin(sub, group)
        enough = usable[rows].sum(axis=0) >= min_rows
        here = enough & ~taken
        keep[rows] = here[None, :]
        taken |= here
    return [Residuals(snr=x.snr, residual=x.residual, sigma=x.sigma, mask=x.mask | ~keep)
            for x in residuals]


def fit_sigma_scale(predictor: PredictorLike, data: TrainingArrays,
                    snrs: Sequence[float] = (20.0, 40.0, 80.0), seed: int = 0, *,
                    subset_weights: Mapping[str, float] | None = None, window: int = 9,
                    floor: float = 1e-3, target: float = ONE_SIGMA,
                    method: str = "scale+floor", priority: Sequence[str] = (),
                    min_rows: int = 3, correct_sed: bool = False) -> SigmaCalibration:
    """Fit per-pixel σ factors (and floors) on held-out rows (see the module docstring).

    Parameters
    ----------
    predictor : callable
        ``(flux_norm, flux_err) -> (sed, sed_err)``; its own calibration, if any, is included
        in the σ being calibrated.
    data : TrainingArrays
        Rows the model was not trained on (the validation split).
    snrs, seed
        Noise of :func:`~csstflux.model.evaluate.predict_residuals`; ``"scale+floor"`` needs
        several SNRs to tell the floor from the factor.
    subset_weights : mapping, optional
        Row weight per subset (missing subsets: 1).
    window, floor, target
        As in :func:`scale_from_residuals` / :func:`scale_floor_from_residuals`.
    method : {"scale+floor", "scale"}
        Error model: a factor and a floor per pixel, or a factor only.
    priority : sequence of str
        Subsets in order of precedence, ``+`` joining subsets to pool (:func:`prioritise`);
        empty: every row everywhere.
    min_rows : int
        Rows a subset needs at a pixel to take it (with ``priority``).
    correct_sed : bool
        First fit per-pixel SED factors (:func:`sed_factor_from_residuals`, same window,
        weights and priority) and calibrate σ on the residuals of the corrected SED.

    Returns
    -------
    SigmaCalibration
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if len(data) == 0:
        raise ValueError("no rows to calibrate on")
    sw = {str(k): float(v) for k, v in (subset_weights or {}).items()}
    if any(v < 0 for v in sw.values()):
        raise ValueError("subset weights must be non-negative")
    weights = np.array([sw.get(str(s), 1.0) for s in data.subset])
    res = predict_residuals(predictor, data, snrs, seed)
    fit_res = prioritise(res, data.subset, priority, min_rows) if priority else res
    factor = None
    res_after = res
    if correct_sed:
        factor = sed_factor_from_residuals(fit_res, weights, window=window)
        fit_res = corrected_residuals(fit_res, factor)
        res_after = corrected_residuals(res, factor)
    tau = touch = None
    if method == "scale":
        scale = scale_from_residuals(fit_res, weights, window=window, floor=floor,
                                     target=target)
    else:
        scale, tau, touch = scale_floor_from_residuals(fit_res, weights, window=window,
                                                       floor=floor, target=target)
    counts = {str(s): int(n) for s, n in zip(*np.unique(data.subset, return_counts=True),
                                             strict=True)}
    return SigmaCalibration(scale=scale, snrs=tuple(float(s) for s in snrs), seed=int(seed),
                            window=window, floor=floor, target=target, subset_counts=counts,
                            subset_weights=sw,
                            coverage_before=_coverage_report(res, data.subset, None,
                                                             teff=data.teff),
                            coverage_after=_coverage_report(res_after, data.subset, scale,
                                                            tau, teff=data.teff),
                            method=method, sigma_floor=tau, touch_up=touch,
                            priority=tuple(priority), sed_factor=factor)


#: Name of the reference-term method recorded in model cards.
METHOD_REFERENCE: str = ("per-pixel reference term in quadrature, windowed quantile of "
                         "r² − σ², cross-fitted over groups of held-out rows")


@dataclass(frozen=True)
class ReferenceSigma:
    """A fitted reference term and its out-of-sample check; see :func:`fit_reference_sigma`."""

    sigma: FloatArray
    """(574,) ``ρ_λ`` (relative units), fitted on every reference row."""
    reference: tuple[str, ...]
    """Subsets whose rows ``ρ`` is fitted on (an independent library)."""
    groups: tuple[str, ...]
    """Names of the groups of rows used as folds (e.g. the splits), in order."""
    fold_sigma: dict[str, FloatArray]
    """``ρ`` fitted without each group (group → (574,))."""
    snrs: tuple[float, ...]
    seed: int
    window: int
    target: float
    subset_counts: dict[str, dict[str, int]]
    """Rows per group and subset."""
    coverage_without: dict[str, Any]
    """Coverage with σ alone: ``{"by_subset": {subset: {band: c}}}`` over every row."""
    coverage_crossfit: dict[str, Any]
    """Out-of-sample coverage with ``sqrt(σ² + ρ²)``: every row judged with the ``ρ`` fitted
    without its group; ``{"by_subset": ..., "by_group": {group: {subset: {band: c}}}}``."""

    def card_section(self, fitted_on: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The model card's ``calibration["reference"]`` block (``ρ`` itself is
        ``calibration["reference_sigma"]``)."""
        return {"method": METHOD_REFERENCE,
                "description": (
                    "reference_sigma[λ] = ρ: sqrt((sed_err/|sed|)² + ρ²) is the relative 1σ of "
                    "the SED against an independent spectrophotometric library (`reference`), "
                    "sed_err alone its 1σ on the training library's own flux scale. ρ² is the "
                    "`target` quantile of r² − σ² pooled over `window` output pixels and "
                    "`snrs` on every reference row; coverage_crossfit judges each group with "
                    "the ρ fitted on the others"),
                "reference": list(self.reference), "groups": list(self.groups),
                "snrs": list(self.snrs), "seed": self.seed, "window": self.window,
                "target": self.target,
                "fitted_on": {"rows": self.subset_counts, **dict(fitted_on or {})},
                "coverage_without": self.coverage_without,
                "coverage_crossfit": self.coverage_crossfit}


def _concat_residuals(parts: Sequence[Sequence[Residuals]]) -> list[Residuals]:
    """Rows of several residual sets (same SNRs, same order) as one set."""
    return [Residuals(snr=xs[0].snr,
                      residual=np.concatenate([x.residual for x in xs]),
                      sigma=np.concatenate([x.sigma for x in xs]),
                      mask=np.concatenate([x.mask for x in xs]))
            for xs in zip(*parts, strict=True)]


def fit_reference_sigma(predictor: PredictorLike, data: Mapping[str, TrainingArrays],
                        reference: Sequence[str], snrs: Sequence[float] = (20.0, 40.0, 80.0),
                        seed: int = 0, *, window: int = 25,
                        target: float = ONE_SIGMA) -> ReferenceSigma:
    """Fit the reference term ``ρ`` (:func:`reference_sigma_from_residuals`) on the rows of
    the ``reference`` subsets, and check it out of sample by cross-fitting.

    Why: the σ calibration (:func:`fit_sigma_scale`) is fitted where the training library has
    flux on that library's held-out stars, so it measures the error on that library's flux
    scale. An independent library (Pickles beside MILES) disagrees with it by more than that
    σ, star after star, even for a predictor that only averages the training library's nearest
    stars: part of the error is the libraries' own. ``ρ`` is that part, added in quadrature.

    Parameters
    ----------
    predictor : callable
        ``(flux_norm, flux_err) -> (sed, sed_err)`` with its σ calibration applied.
    data : mapping group → TrainingArrays
        Held-out rows in at least two groups (e.g. ``{"validation": ..., "test": ...}``): each
        group is judged with the ρ fitted on the reference rows of the other groups; the ρ
        returned is fitted on the reference rows of all of them. Rows of other subsets are
        only reported (their coverage with and without ρ).
    reference : sequence of str
        Subsets of the independent library.
    snrs, seed, window, target
        As in :func:`fit_sigma_scale` (the window is wider by default: a library of a few tens
        of stars gives few values per pixel).

    Returns
    -------
    ReferenceSigma
    """
    ref = tuple(str(r) for r in reference)
    if not ref:
        raise ValueError("name the reference subsets")
    if len(data) < 2:
        raise ValueError("cross-fitting needs at least two groups of rows")
    res = {g: predict_residuals(predictor, d, snrs, seed) for g, d in data.items()}
    sub = {g: np.asarray([str(s) for s in d.subset]) for g, d in data.items()}
    is_ref = {g: np.isin(sub[g], ref) for g in data}
    for g, sel in is_ref.items():
        if not sel.any():
            raise ValueError(f"group {g!r} has no rows of the reference subsets {list(ref)}")

    def rows_of(g: str, sel: NDArray[np.bool_], floor: FloatArray | None = None
                ) -> list[Residuals]:
        f = 0.0 if floor is None else floor
        return [Residuals(x.snr, x.residual[sel], np.hypot(x.sigma[sel], f), x.mask[sel])
                for x in res[g]]

    names = list(data)
    fold = {g: reference_sigma_from_residuals(
        _concat_residuals([rows_of(h, is_ref[h]) for h in names if h != g]),
        window=window, target=target) for g in names}
    rho = reference_sigma_from_residuals(
        _concat_residuals([rows_of(g, is_ref[g]) for g in names]), window=window, target=target)
    subsets = sorted({s for g in names for s in sub[g]})

    def coverage_of(s: str, floors: Mapping[str, FloatArray | None]) -> dict[str, float]:
        return band_coverage(_concat_residuals([rows_of(g, sub[g] == s, floors[g])
                                                for g in names if np.any(sub[g] == s)]))

    without = {s: coverage_of(s, dict.fromkeys(names)) for s in subsets}
    crossfit = {s: coverage_of(s, fold) for s in subsets}
    per_group = {g: {s: band_coverage(rows_of(g, sub[g] == s, fold[g]))
                     for s in subsets if np.any(sub[g] == s)} for g in names}
    counts = {g: {str(s): int(n) for s, n in zip(*np.unique(sub[g], return_counts=True),
                                                 strict=True)} for g in names}
    return ReferenceSigma(sigma=rho, reference=ref, groups=tuple(names), fold_sigma=fold,
                          snrs=tuple(float(s) for s in snrs), seed=int(seed), window=window,
                          target=target, subset_counts=counts,
                          coverage_without={"by_subset": without},
                          coverage_crossfit={"by_subset": crossfit, "by_group": per_group})


def apply_reference_sigma(model_path: str | os.PathLike[str], sigma: ArrayLike,
                          out_path: str | os.PathLike[str],
                          info: Mapping[str, Any] | None = None, *,
                          overwrite: bool = False) -> ModelCard:
    """Write a copy of a model whose card also carries a reference term ``ρ``
    (``calibration["reference_sigma"]``, and ``info`` as ``calibration["reference"]``, e.g.
    :meth:`ReferenceSigma.card_section`). Everything else of the card is kept; a reference
    term already there is replaced (it is fitted on the model's σ as it stands, so it is never
    composed). Returns the new card."""
    rho = _per_pixel(sigma, "reference sigma", positive=False)
    model, card = load_model(model_path)
    calibration = dict(card.calibration)
    calibration["reference_sigma"] = [float(v) for v in rho]
    calibration["reference"] = dict(info or {}) | {
        "base_model": {"model_id": card.model_id, "archive_sha256": card.archive_sha256}}
    p = os.fspath(out_path)
    name = None if p.endswith((".keras", ".json")) else card.name
    return save_model(model, out_path, name=name, training_data=card.training_data,
                      metrics=card.metrics, calibration=calibration,
                      normalisation=card.normalisation, overwrite=overwrite)


def _per_pixel(values: ArrayLike, name: str, *, positive: bool) -> FloatArray:
    """``values`` as (574,) float64, refused unless finite and positive (or non-negative)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v > 0 if positive else v >= 0
    if v.shape != (OUTPUT_GRID.n,) or not np.all(np.isfinite(v) & ok):
        raise ValueError(f"{name} must be {OUTPUT_GRID.n} "
                         f"{'positive' if positive else 'non-negative'} finite numbers")
    return v


def apply_calibration(model_path: str | os.PathLike[str], scale: ArrayLike,
                      out_path: str | os.PathLike[str], info: Mapping[str, Any] | None = None,
                      *, floor: ArrayLike | None = None, sed_factor: ArrayLike | None = None,
                      overwrite: bool = False) -> ModelCard:
    """Write a copy of a model whose card carries σ factors (and floors, and SED factors).

    Parameters
    ----------
    model_path : path-like
        The model to calibrate (archive, card or folder).
    scale : (574,) float
        Factors ``s₁`` (e.g. :attr:`SigmaCalibration.scale`).
    out_path : path-like
        A folder (files named after the model) or a ``.keras``/``.json`` file name.
    info : mapping, optional
        Further calibration fields (method, fitted_on, coverage_before/after, ...; e.g.
        :meth:`SigmaCalibration.card_section`); its ``sigma_scale`` and ``sigma_floor`` are
        ignored.
    floor : (574,) float, optional
        Floors ``τ₁ ≥ 0`` in relative units (e.g. :attr:`SigmaCalibration.sigma_floor`).
    sed_factor : (574,) float, optional
        Factors ``k₁ > 0`` on the SED (e.g. :attr:`SigmaCalibration.sed_factor`); composed
        with the model's own, ``k = k₁ k₀``.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    ModelCard
        The new card; its ``training_data``, ``metrics`` and ``normalisation`` are the source's
        and ``calibration["base_model"]`` names the source. When the model already carries
        ``(s₀, τ₀)`` (missing: 1 and 0) the composition is stored, ``s = s₁ s₀`` and
        ``τ = sqrt((s₁ τ₀)² + τ₁²)``; ``sigma_floor`` is written when either has a floor, and
        ``sed_factor`` when either has SED factors.
    """
    s = _per_pixel(scale, "scale", positive=True)
    t = None if floor is None else _per_pixel(floor, "floor", positive=False)
    k = None if sed_factor is None else _per_pixel(sed_factor, "sed_factor", positive=True)
    model, card = load_model(model_path)
    old, old_floor = card.sigma_scale, card.sigma_floor
    total = s if old is None else s * np.asarray(old, dtype=np.float64)
    calibration = {key: v for key, v in dict(info or {}).items()
                   if key not in ("sigma_scale", "sigma_floor", "sed_factor")}
    calibration["sigma_scale"] = [float(v) for v in total]
    old_factor = card.sed_factor
    if k is not None or old_factor is not None:
        k_total = (np.ones(OUTPUT_GRID.n) if k is None else k) * (
            1.0 if old_factor is None else np.asarray(old_factor, dtype=np.float64))
        calibration["sed_factor"] = [float(v) for v in k_total]
    if t is not None or old_floor is not None:
        t0 = 0.0 if old_floor is None else s * np.asarray(old_floor, dtype=np.float64)
        t1 = 0.0 if t is None else t
        calibration["sigma_floor"] = [float(v) for v in np.broadcast_to(np.hypot(t0, t1),
                                                                        (OUTPUT_GRID.n,))]
    calibration["base_model"] = {"model_id": card.model_id,
                                 "archive_sha256": card.archive_sha256,
                                 "had_sigma_scale": old is not None,
                                 "had_sigma_floor": old_floor is not None,
                                 "had_sed_factor": old_factor is not None}
    p = os.fspath(out_path)
    name = None if p.endswith((".keras", ".json")) else card.name
    return save_model(model, out_path, name=name, training_data=card.training_data,
                      metrics=card.metrics, calibration=calibration,
                      normalisation=card.normalisation, overwrite=overwrite)
