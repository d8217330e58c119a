"""From extracted star spectra and predicted SEDs to the 3D flat-field cube (paper §5).

For each star ``s`` and wavelength ``λ`` of a band, the flux ratio
``r = counts / (pred_sed · throughput · t · scale)`` samples the flat ``f(x_s, y_s, λ)``
(in a slitless exposure at the point of the star's trace where λ landed, ``x_s(λ), y_s(λ)``:
every position argument below takes one position per star or one per star and wavelength);
a weighted 2D polynomial per wavelength through the ratios of many stars is the large-scale
flat. The fits go through additive normal equations (:mod:`csstflux.flat.polyfit2d`):
:func:`exposure_normal_equations` turns one exposure into a :class:`NormalEquations` stacked
over the band's wavelengths, any number of them are summed (the Dask tree reduction), and
:func:`solve_flat` turns the sum into a normalised flat cube with errors. The sum over
exposures equals one fit on all their stars, because every weight depends only on its own
star.

The star's absolute flux (``star_scale``)
-----------------------------------------
The predicted SEDs are relative; the absolute flux of each star is one number per star.

- Known (``star_scale=None``: ``pred_sed`` is already absolute, e.g. the recorded truth of
  simulations or SEDs anchored to photometry by ``csstflux anchor``, converted to e⁻ s⁻¹ per
  pixel, whose ``pred_err`` then holds the scale and E(B−V) errors too; or an array of
  per-star factors): the ratio samples the whole flat, its achromatic spatial shape
  included.
- Unknown (``star_scale="median"``): each star's ratios are divided by their own median over
  the band's pixels, a per-star grey term. A constant is harmless (flats are normalised to a
  detector mean of 1), but a per-star grey factor also absorbs the flat's value at the star's
  position averaged over the band: what is recovered is ``f(x, y, λ) / f̃(x, y)`` with ``f̃``
  the band median of the flat at ``(x, y)``, i.e. only the flat's chromatic variation across
  the detector. An achromatic flat comes out as 1 everywhere. The grey spatial part must then
  come from elsewhere (photometric flats, known fluxes).

Errors: ``σ_r² = (σ_counts / D)² + (m_s σ_pred / pred)²`` with ``D = pred · T · t · scale``
and ``m_s`` the star's own band median of ``r`` (≈ the flat there), so that the weight of a
star uses only that star. With ``"median"`` the ratio and its error are divided by ``m_s``
(its own noise, ~1/√n_pix of one pixel's, is neglected).

Repeated observations of a star
-------------------------------
The prediction error belongs to the star, not to the exposure: a star observed ``k`` times
on a detector contributes ``k`` ratios whose SED terms are the *same* draw (correlation 1),
while the counts noise is independent. Weighting each of them with the marginal
``1/σ_r²`` counts the SED error ``k`` times as independent and makes the formal covariance
too small (a noisy simulated build-flat with 3 dithered pointings and 1 % SED errors had
flat z-scores of std 1.45 instead of 1, while χ²/dof stayed ≈ 1, because a per-star offset
repeated at nearly the same position looks like a good fit). The weights therefore use
``σ_w² = σ_n² + k σ_s²`` (``repeats=k``; ``σ_n``, ``σ_s`` the counts and SED terms): the
star's summed weight ``k/(σ_n² + kσ_s²) = 1/(σ_n²/k + σ_s²)`` is the inverse variance of its
mean ratio, so ``(AᵀWA)⁻¹`` is the true covariance when the star's positions and counts
noise are the same in its ``k`` exposures (small dithers), and an upper bound otherwise
(the sandwich ``(AᵀWA)⁻¹AᵀWΣWA(AᵀWA)⁻¹`` differs from it by a negative semi-definite
``σ_s² w² [(Σa)(Σa)ᵀ − kΣaaᵀ]`` term per star with equal weights ``w``, and by
``σ_s² aaᵀ [(Σw)² − kΣw²] ≤ 0`` at one position with unequal ones). The estimate stays
unbiased either way;
the census of ``k`` per detector is :class:`StarRepeats`. Clipping tests use the marginal
``σ_r`` (a single ratio scatters by that much).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.flat.normalise import normalise_flat
from csstflux.flat.polyfit2d import (
    DEFAULT_ORDER,
    NormalEquations,
    PolyFit,
    Shape,
    evaluate,
    fit_sigma_clip,
    normal_equations,
    solve,
)

Array = NDArray[np.float64]
StarScale = ArrayLike | Literal["median"] | None


def band_pixels(throughput: ArrayLike) -> NDArray[np.bool_]:
    """Pixels of a band: finite throughput > 0, shape (n_wave,)."""
    tp = np.asarray(throughput, dtype=float)
    return np.isfinite(tp) & (tp > 0)


def flux_ratio_variances(counts: ArrayLike, counts_err: ArrayLike, pred_sed: ArrayLike,
                         pred_err: ArrayLike, throughput: ArrayLike, *,
                         exposure_time: float = 1.0, star_scale: StarScale = None
                         ) -> tuple[Array, Array, Array]:
    """Observed / predicted flux ratios on the band's pixels and their two variance terms.

    Parameters as in :func:`flux_ratios`.

    Returns
    -------
    ratio, var_noise, var_sed : ndarray, shape (n_star, n_band)
        Dimensionless ratio; ``(σ_counts/D)²`` (independent between exposures) and
        ``(m_s σ_pred/pred)²`` (the same in every exposure of a star); NaN where any input is
        missing or non-positive.
    """
    band = band_pixels(throughput)
    c = np.asarray(counts, dtype=float)[:, band]
    ce = np.asarray(counts_err, dtype=float)[:, band]
    p = np.asarray(pred_sed, dtype=float)[:, band]
    pe = np.broadcast_to(np.asarray(pred_err, dtype=float), np.shape(pred_sed))[:, band]
    tp = np.asarray(throughput, dtype=float)[band]
    if isinstance(star_scale, str):
        if star_scale != "median":
            raise ValueError(f"star_scale must be None, per-star factors or 'median', "
                             f"got {star_scale!r}")
        sc: Array = np.ones((c.shape[0], 1))
    elif star_scale is None:
        sc = np.ones((c.shape[0], 1))
    else:
        sc = np.broadcast_to(np.asarray(star_scale, dtype=float).reshape(-1, 1),
                             (c.shape[0], 1))
    denom = p * tp * exposure_time * sc
    good = np.isfinite(c) & (ce > 0) & (denom > 0) & (pe >= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(good, c / denom, np.nan)
        m = _row_median(r)
        var_noise = np.where(good, (ce / denom) ** 2, np.nan)
        var_sed = np.where(good, (m[:, None] * pe / p) ** 2, np.nan)
        if isinstance(star_scale, str):
            m = np.where(m > 0, m, np.nan)
            r = r / m[:, None]
            var_noise, var_sed = var_noise / m[:, None] ** 2, var_sed / m[:, None] ** 2
    return r, var_noise, var_sed


def flux_ratios(counts: ArrayLike, counts_err: ArrayLike, pred_sed: ArrayLike,
                pred_err: ArrayLike, throughput: ArrayLike, *, exposure_time: float = 1.0,
                star_scale: StarScale = None, repeats: ArrayLike | None = None
                ) -> tuple[Array, Array]:
    """Observed / predicted flux ratios on the band's pixels, with errors.

    Parameters
    ----------
    counts, counts_err : array_like, shape (n_star, n_wave)
        Extracted spectra and 1σ errors, e⁻ per output pixel.
    pred_sed, pred_err : array_like, shape (n_star, n_wave)
        Predicted SEDs and 1σ errors (relative, or absolute in e⁻ s⁻¹ per pixel for unit
        throughput when ``star_scale`` is None).
    throughput : array_like, shape (n_wave,)
        Band throughput; only pixels with throughput > 0 are used.
    exposure_time : float
        Seconds.
    star_scale : None, array_like (n_star,) or "median"
        How each star's absolute flux is known (module docstring).
    repeats : array_like (n_star,), optional
        Number of exposures ``k`` of each star entering the same fit; the SED term of the
        error is multiplied by √k, which gives the fit weight ``1/σ_w²`` (module docstring).
        None: 1, the marginal error of one ratio.

    Returns
    -------
    ratio, ratio_err : ndarray, shape (n_star, n_band)
        Dimensionless; NaN where any input is missing or non-positive.
    """
    r, var_noise, var_sed = flux_ratio_variances(counts, counts_err, pred_sed, pred_err,
                                                 throughput, exposure_time=exposure_time,
                                                 star_scale=star_scale)
    k = _repeats_column(repeats, r.shape[0])
    return r, np.sqrt(var_noise + k * var_sed)


def exposure_normal_equations(x: ArrayLike, y: ArrayLike, counts: ArrayLike,
                              counts_err: ArrayLike, pred_sed: ArrayLike, pred_err: ArrayLike,
                              throughput: ArrayLike, order: int = DEFAULT_ORDER, *,
                              shape: Shape, exposure_time: float = 1.0,
                              star_scale: StarScale = None,
                              repeats: ArrayLike | None = None) -> NormalEquations:
    """Normal equations of the flat fit from the stars of one exposure (or any chunk).

    Parameters
    ----------
    x, y : array_like, shape (n_star,) or (n_star, n_wave)
        Pixel positions of each star (per wavelength when 2D).
    counts, counts_err, pred_sed, pred_err, throughput, exposure_time, star_scale, repeats
        As in :func:`flux_ratios`.
    order : int
        Total polynomial order (paper: 2).
    shape : (int, int)
        Detector shape ``(n_y, n_x)``.

    Returns
    -------
    NormalEquations
        Leading axis (n_band,): the pixels of :func:`band_pixels`, in grid order. Add the
        results of all exposures of a detector and pass the sum to :func:`solve_flat`.
    """
    r, err = flux_ratios(counts, counts_err, pred_sed, pred_err, throughput,
                         exposure_time=exposure_time, star_scale=star_scale, repeats=repeats)
    xa, ya = _band_positions(x, y, band_pixels(throughput))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
    return normal_equations(xa, ya, r, w, order, shape=shape)


def outliers(coeffs: ArrayLike, x: ArrayLike, y: ArrayLike, ratio: ArrayLike,
             ratio_err: ArrayLike, order: int = DEFAULT_ORDER, *, shape: Shape,
             nsigma: float = 3.0) -> NDArray[np.bool_]:
    """Ratios more than ``nsigma`` σ from a fitted flat model (one sigma-clipping test).

    Parameters
    ----------
    coeffs : array_like, shape (n_band, n_terms)
        Un-normalised polynomial coefficients per band pixel (``PolyFit.coeffs``).
    x, y : array_like, shape (n_star,) or (n_star, n_band)
    ratio, ratio_err : array_like, shape (n_star, n_band)
        From :func:`flux_ratios` (the marginal error: ``repeats`` None).
    order, shape
        As in :func:`exposure_normal_equations`.

    Returns
    -------
    ndarray of bool, shape (n_star, n_band)
        True where ``|ratio − model| > nsigma · ratio_err`` or the ratio or its error is not
        finite; False wherever the model is NaN (an unsolved wavelength keeps its stars).
    """
    model = evaluate(coeffs, x, y, order, shape=shape)
    with np.errstate(invalid="ignore"):
        far = ~(np.abs(np.asarray(ratio, dtype=float) - model)
                <= nsigma * np.asarray(ratio_err, dtype=float))
    return far & np.isfinite(model)


@dataclass(frozen=True)
class StarRepeats:
    """Census of repeated observations: per detector, how many exposures each star enters.

    Built from the star ids matched in each exposure (:meth:`from_ids`) and summed over
    exposures (``+``, or builtin ``sum``); :meth:`of` gives the ``repeats`` of
    :func:`flux_ratios`. Ids are the predictions store's, which are the same in every
    exposure; each id is counted once per exposure and detector.
    """

    ids: dict[str, NDArray[np.int64]]
    """Detector → sorted unique star ids."""
    counts: dict[str, NDArray[np.int64]]
    """Detector → number of exposures of each id, aligned with ``ids``."""

    @classmethod
    def from_ids(cls, ids: Mapping[str, ArrayLike]) -> StarRepeats:
        """Census of one exposure: detector → ids of the stars it used (repeats ignored)."""
        uniq = {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in ids.items()}
        return cls(uniq, {k: np.ones(v.size, dtype=np.int64) for k, v in uniq.items()})

    def __add__(self, other: object) -> StarRepeats:
        if not isinstance(other, StarRepeats):
            return NotImplemented
        ids, counts = dict(self.ids), dict(self.counts)
        for k, v in other.ids.items():
            if k not in ids:
                ids[k], counts[k] = v, other.counts[k]
                continue
            both = np.concatenate([ids[k], v])
            ids[k], inv = np.unique(both, return_inverse=True)
            counts[k] = np.bincount(inv, np.concatenate([counts[k], other.counts[k]]),
                                    minlength=ids[k].size).astype(np.int64)
        return StarRepeats(ids, counts)

    def __radd__(self, other: object) -> StarRepeats:
        if isinstance(other, int) and other == 0:  # lets builtin sum() start from 0
            return self
        return self.__add__(other)

    def of(self, detector: str, ids: ArrayLike) -> NDArray[np.int64]:
        """Exposure counts of ``ids`` on ``detector``, shape like ``ids``; 1 where unknown."""
        q = np.asarray(ids, dtype=np.int64)
        known, counts = self.ids.get(detector), self.counts.get(detector)
        if known is None or counts is None or known.size == 0:
            return np.ones(q.shape, dtype=np.int64)
        pos = np.minimum(np.searchsorted(known, q), known.size - 1)
        return np.where(known[pos] == q, np.maximum(counts[pos], 1), 1).astype(np.int64)

    @property
    def max_repeats(self) -> int:
        """Largest count over all detectors (0 for an empty census)."""
        return max((int(v.max()) for v in self.counts.values() if v.size), default=0)


@dataclass(frozen=True)
class FlatSolution:
    """A fitted, normalised flat cube of one detector and band."""

    flat: Array
    """Flat on the coarse grid, shape (n_band, n_gy, n_gx), mean 1 over the detector."""
    sigma: Array
    """1σ error of ``flat`` from the fit covariance, shape (n_band, n_gy, n_gx)."""
    reduced_chi2: Array
    """χ²/dof of each wavelength's fit, shape (n_band,)."""
    fit: PolyFit
    """The polynomial fits (coefficients, covariance, star counts, kept mask when clipped)."""


def solve_flat(neq: NormalEquations, grid_x: ArrayLike, grid_y: ArrayLike, *,
               rescale_errors: bool = False) -> FlatSolution:
    """Solve summed normal equations into a normalised flat cube with errors.

    Parameters
    ----------
    neq : NormalEquations
        Sum of :func:`exposure_normal_equations` over exposures, leading axis (n_band,).
    grid_x : array_like, shape (n_gx,)
    grid_y : array_like, shape (n_gy,)
        Pixel coordinates of the coarse output grid.
    rescale_errors : bool
        Multiply the covariance by max(1, χ²/dof) per wavelength (errors known only up to a
        factor, e.g. underestimated SED errors).

    Returns
    -------
    FlatSolution
        Unsolvable wavelengths (too few stars, singular) are NaN.
    """
    return _finish(solve(neq), grid_x, grid_y, rescale_errors)


def fit_flat_sigma_clip(x: ArrayLike, y: ArrayLike, ratio: ArrayLike, ratio_err: ArrayLike,
                        grid_x: ArrayLike, grid_y: ArrayLike, order: int = DEFAULT_ORDER, *,
                        shape: Shape, nsigma: float = 3.0, max_iter: int = 5,
                        rescale_errors: bool = False) -> FlatSolution:
    """Single-node flat fit with iterative sigma clipping per wavelength.

    Not additive over exposures: concatenate the stars of all exposures (rows of
    :func:`flux_ratios`, positions restricted to the band's pixels when 2D) and fit once.

    Parameters
    ----------
    x, y : array_like, shape (n_star,) or (n_star, n_band)
    ratio, ratio_err : array_like, shape (n_star, n_band)
        From :func:`flux_ratios`.
    grid_x, grid_y, rescale_errors
        As in :func:`solve_flat`.
    nsigma, max_iter
        As in :func:`csstflux.flat.polyfit2d.fit_sigma_clip`.

    Returns
    -------
    FlatSolution
        ``fit.kept`` (n_star, n_band) marks the stars used.
    """
    fit = fit_sigma_clip(x, y, ratio, ratio_err, order, shape=shape, nsigma=nsigma,
                         max_iter=max_iter)
    return _finish(fit, grid_x, grid_y, rescale_errors)


def _finish(fit: PolyFit, grid_x: ArrayLike, grid_y: ArrayLike,
            rescale_errors: bool) -> FlatSolution:
    red = np.asarray(fit.reduced_chi2, dtype=float)
    cov = fit.cov
    if rescale_errors:
        factor = np.where(np.isfinite(red), np.maximum(red, 1.0), 1.0)
        cov = cov * factor[..., None, None]
    flat, sigma = normalise_flat(fit.coeffs, cov, grid_x, grid_y, fit.order, shape=fit.shape)
    if flat.ndim == 2:
        flat, sigma = flat[None], sigma[None]
    return FlatSolution(flat, sigma, np.atleast_1d(red), fit)


def _band_positions(x: ArrayLike, y: ArrayLike, band: NDArray[np.bool_]
                    ) -> tuple[Array, Array]:
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.ndim == 2:
        return xa[:, band], ya[:, band]
    return xa, ya


def _row_median(a: Array) -> Array:
    """Median of each row ignoring NaN; NaN (without a warning) for an all-NaN row."""
    out = np.full(a.shape[0], np.nan)
    has = np.isfinite(a).any(axis=1)
    if has.any():
        out[has] = np.nanmedian(a[has], axis=1)
    return out


def _repeats_column(repeats: ArrayLike | None, n_star: int) -> Array:
    """``repeats`` as an (n_star, 1) column of floats ≥ 1 (1 for None)."""
    if repeats is None:
        return np.ones((n_star, 1))
    k = np.asarray(repeats, dtype=float).reshape(-1)
    if k.size not in (1, n_star) or not np.all(k >= 1):
        raise ValueError(f"repeats must be (n_star,) = ({n_star},) values >= 1, "
                         f"got shape {k.shape}")
    return np.broadcast_to(k.reshape(-1, 1), (n_star, 1))
