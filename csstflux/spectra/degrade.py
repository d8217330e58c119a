"""Degrading spectra to a lower resolving power with a Gaussian line-spread function.

Resolving power R = λ / FWHM is a width in ln λ: a Gaussian LSF of FWHM 1/R in ln λ. Going
from a source of resolving power R_s to a target R_t needs a Gaussian kernel of standard
deviation, in ln λ,

    σ_ln = FWHM_TO_SIGMA · sqrt(1/R_t² − 1/R_s²),

evaluated per pixel, so R_s and R_t may vary with wavelength. A model spectrum (``source=None``)
has R_s = ∞; its only intrinsic smoothing is its own pixel sampling, which the convolution
below already accounts for by reading the spectrum as piecewise constant.

The convolution is direct and banded. Output pixel i at x_i = ln λ_i is

    F_out_i = Σ_j w_ij g_j F_j / Σ_j w_ij g_j,   w_ij = Φ(z(e_{j+1})) − Φ(z(e_j)),
    z(e) = clip((e − x_i) / σ_i, −5, 5),

with e the source pixel edges in ln λ (:func:`csstflux.spectra.resample.pixel_edges`), Φ the
standard normal CDF and g_j = 0 for masked pixels. Integrating the Gaussian over each source
pixel, rather than sampling it at pixel centres, keeps the result right on coarse grids
(a 20 Å model grid degraded to R = 200) and on non-uniform ones. The kernel is truncated at
±5σ and renormalised over the unmasked pixels it covers; errors propagate as
σ²_out_i = Σ_j w_ij² g_j σ_j² / (Σ_j w_ij g_j)² (correlations between output pixels are not
returned). Near the array ends the kernel is truncated by the data: callers that need exact
edges degrade a wider range than they keep (as :mod:`csstflux.spectra.prepare` does).

Where the source is already at or below the target (R_s ≤ R_t) there is nothing to remove: those
pixels are left unchanged, their effective resolving power is R_s, and a
:class:`ResolutionWarning` names the wavelength range so the caller can record
:attr:`csstflux.flags.Flag.RESOLUTION`.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from csstflux.constants import FWHM_TO_SIGMA
from csstflux.containers import Resolution
from csstflux.errors import ConfigError
from csstflux.grids import BAND_RESOLUTION, OUTPUT_GRID
from csstflux.spectra._common import (
    BoolArray,
    FloatArray,
    as_batch,
    check_wavelength,
    clean,
    unbatch,
    weighted_result,
)
from csstflux.spectra.resample import pixel_edges

__all__ = ["ResolutionWarning", "degrade_resolution", "kernel_sigma", "match_band_resolution",
           "source_r"]

#: Half-width of the truncated Gaussian kernel, in units of σ.
TRUNCATE_SIGMA: float = 5.0


class ResolutionWarning(UserWarning):
    """The source spectrum is already at or below the target resolving power somewhere."""


def source_r(source: Resolution | ArrayLike | None, wavelength: ArrayLike) -> FloatArray:
    """Resolving power of the source at each wavelength.

    Parameters
    ----------
    source : Resolution, array or None
        A :class:`~csstflux.containers.Resolution`; a resolving power per pixel (scalar,
        ``(n_pix,)`` or ``(n_spec, n_pix)``); or None for a model spectrum (R = ∞).
    wavelength : float array
        Wavelengths at which to evaluate it, Å (observed frame for a :class:`Resolution` given
        as a FWHM in Å).

    Returns
    -------
    float64 array broadcastable against ``wavelength``; ``inf`` where unresolved.
    """
    w = np.asarray(wavelength, dtype=np.float64)
    if source is None:
        return np.full(w.shape, np.inf)
    if isinstance(source, Resolution):
        return source.r_at(w)
    r = np.asarray(source, dtype=np.float64)
    if np.any(np.isnan(r)) or np.any(r <= 0):
        raise ValueError("source resolving power must be positive (inf for unresolved)")
    return r


def kernel_sigma(target_r: ArrayLike, source: ArrayLike) -> FloatArray:
    """Standard deviation of the degrading Gaussian in ln λ; 0 where R_s ≤ R_t.

    Parameters
    ----------
    target_r, source : float arrays (broadcastable)
        Target and source resolving powers (source may be ``inf``).

    Returns
    -------
    float64 array, ln λ units (dimensionless).
    """
    rt = np.asarray(target_r, dtype=np.float64)
    rs = np.asarray(source, dtype=np.float64)
    with np.errstate(divide="ignore"):
        d = 1.0 / rt**2 - 1.0 / rs**2
    return np.where(rs > rt, FWHM_TO_SIGMA * np.sqrt(np.maximum(d, 0.0)), 0.0)


def degrade_resolution(
    wavelength: ArrayLike,
    flux: ArrayLike,
    target_r: ArrayLike,
    source: Resolution | ArrayLike | None = None,
    error: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    min_weight: float = 0.5,
) -> tuple[FloatArray, FloatArray | None, BoolArray, FloatArray]:
    """Convolve spectra with a Gaussian LSF so that they reach resolving power ``target_r``.

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Pixel centres, Å, strictly increasing (any spacing).
    flux : (n_pix,) or (n_spec, n_pix) float
        Flux density, any unit; the output has the same unit.
    target_r : float or float array broadcastable to flux
        Target resolving power λ/FWHM.
    source : Resolution, float array or None
        Source resolving power (see :func:`source_r`); None for a model spectrum.
    error : same shape as flux, optional
        1σ errors; non-finite or non-positive values mask their pixel.
    mask : same shape as flux, bool, optional
        True = bad pixel; never used.
    min_weight : float
        An output pixel is masked when the unmasked pixels carry less than this fraction of its
        (truncated) kernel. A pixel masked on input stays masked.

    Returns
    -------
    flux : same shape as input, float64
        Degraded flux; 0.0 where masked.
    error : same shape, float64, or None when ``error`` is None
        Propagated 1σ errors; 0.0 where masked.
    mask : same shape, bool
        True = bad pixel.
    effective_r : same shape, float64
        Resolving power of the output: ``target_r`` where degraded, the source R where the
        source was already coarser (``R_s ≤ R_t``) and the pixel was left unchanged. The box
        of the source's own pixels (variance Δ²/12 in ln λ) is not counted; it matters only
        when the source pixels are not much narrower than the target FWHM.

    Warns
    -----
    ResolutionWarning
        When an unmasked pixel has ``R_s ≤ R_t``; the message names the wavelength range.
    """
    if not 0.0 < min_weight <= 1.0:
        raise ValueError(f"min_weight must lie in (0, 1], got {min_weight}")
    f2, squeeze = as_batch(flux)
    n_spec, n_pix = f2.shape
    f2, e2, bad = clean(f2, error, mask)
    w2 = check_wavelength(wavelength, n_spec, n_pix)
    rt = np.broadcast_to(np.asarray(target_r, dtype=np.float64), f2.shape)
    if not (np.all(np.isfinite(rt)) and np.all(rt > 0)):
        raise ValueError("target_r must be finite and positive")
    rs_raw = source_r(source, w2)
    if rs_raw.ndim == 1:  # a per-pixel array given for the 1-D case
        rs_raw = rs_raw[np.newaxis, :]
    rs = np.broadcast_to(rs_raw, f2.shape)

    unchanged = ~(rs > rt)
    _warn_unchanged(unchanged & ~bad, w2, rt, rs)
    effective_r = np.where(unchanged, rs, rt).astype(np.float64)

    # kernel rows: one per spectrum only when wavelength or resolution differ between rows
    per_row = (
        w2.shape[0] > 1
        or (rs_raw.ndim == 2 and rs_raw.shape[0] > 1)
        or (np.ndim(target_r) == 2 and np.shape(target_r)[0] > 1)
    )
    n_k = n_spec if per_row else 1
    sig = np.ascontiguousarray(kernel_sigma(rt[:n_k], rs[:n_k]))
    if not np.any(sig > 0):
        # nothing to remove anywhere (e.g. LAMOST, R ≈ 1800, to R = 2000): the kernel is the
        # identity and the result is the cleaned input, exactly as the loop below would give
        e_out = None if e2 is None else unbatch(e2, squeeze)
        return unbatch(f2, squeeze), e_out, unbatch(bad, squeeze), unbatch(effective_r, squeeze)
    x = np.broadcast_to(np.log(w2), (n_k, n_pix))
    e = np.broadcast_to(np.log(pixel_edges(w2)).reshape(w2.shape[0], n_pix + 1), (n_k, n_pix + 1))
    flat = sig == 0
    sig_safe = np.where(flat, 1.0, sig)

    half = _half_width(x, e, sig)
    good = (~bad).astype(np.float64)
    gf = good * f2
    gv = None if e2 is None else good * e2**2
    num = np.zeros(f2.shape)
    # without masked pixels the normalisation is the same for every row sharing a kernel
    any_bad = bool(bad.any())
    den = np.zeros(f2.shape if any_bad else (n_k, n_pix))
    var = None if gv is None else np.zeros(f2.shape)
    for k in range(-half, half + 1):
        # output pixels i and source pixels j = i + k inside the array
        i = slice(max(0, -k), n_pix - max(0, k))
        j = slice(max(0, k), n_pix + min(0, k))
        j1 = slice(max(0, k) + 1, n_pix + min(0, k) + 1)
        xi, si = x[:, i], sig_safe[:, i]
        zhi = np.clip((e[:, j1] - xi) / si, -TRUNCATE_SIGMA, TRUNCATE_SIGMA)
        zlo = np.clip((e[:, j] - xi) / si, -TRUNCATE_SIGMA, TRUNCATE_SIGMA)
        w = np.where(flat[:, i], float(k == 0), ndtr(zhi) - ndtr(zlo))
        num[:, i] += w * gf[:, j]
        den[:, i] += w * good[:, j] if any_bad else w
        if var is not None and gv is not None:
            var[:, i] += w**2 * gv[:, j]

    total = np.where(flat, 1.0, ndtr(TRUNCATE_SIGMA) - ndtr(-TRUNCATE_SIGMA))
    bad_out = bad | (den < min_weight * total)
    flux_out, err_out, mask_out = weighted_result(num, den, var, bad_out, squeeze)
    return flux_out, err_out, mask_out, unbatch(effective_r, squeeze)


def match_band_resolution(
    flux: ArrayLike,
    band: str,
    *,
    wavelength: ArrayLike = OUTPUT_GRID.wavelength,
    error: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray | None]:
    """Bring an observed CSST slitless spectrum to the resolving power of the standard SEDs.

    A spectrum of ``band`` has R = :data:`csstflux.grids.BAND_RESOLUTION` [band] (225 in GU,
    250 in GV and GI); the model's SEDs have R = ``OUTPUT_GRID.resolution`` (200). The spectrum
    is convolved (:func:`degrade_resolution`) with the Gaussian of FWHM² = (λ/200)² − (λ/R)²,
    so that both are compared at R = 200.

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Flux density of the observed spectra, any unit (the output has the same unit).
    band : str
        ``"GU"``, ``"GV"`` or ``"GI"``.
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Pixel centres, vacuum Å, strictly increasing; the output grid by default. The pixels
        should be narrower than the FWHM of the kernel (λ/R_k, R_k = 1/sqrt(1/200² − 1/R²):
        R_k ≈ 437 in GU, 333 in GV and GI).
    error : same shape as flux, optional
        1σ errors, propagated as by :func:`degrade_resolution`.

    Returns
    -------
    flux : same shape as input, float64
        Flux at R = 200. NaN where the result is masked (non-finite input flux or error ≤ 0
        on too much of the kernel), since no mask is returned.
    error : same shape, float64, or None when ``error`` is None
        Propagated 1σ errors; NaN where masked.

    Raises
    ------
    ConfigError
        ``band`` is not a key of :data:`csstflux.grids.BAND_RESOLUTION`.
    """
    if band not in BAND_RESOLUTION:
        raise ConfigError(f"unknown slitless band {band!r}",
                          expected=f"one of {', '.join(BAND_RESOLUTION)}", found=band)
    f_out, e_out, mask, _ = degrade_resolution(
        wavelength, flux, OUTPUT_GRID.resolution,
        source=Resolution(resolving_power=BAND_RESOLUTION[band]), error=error)
    f_out = np.where(mask, np.nan, f_out)
    return f_out, None if e_out is None else np.where(mask, np.nan, e_out)


def _half_width(x: FloatArray, e: FloatArray, sig: FloatArray) -> int:
    """Largest pixel offset any kernel reaches within ±TRUNCATE_SIGMA·σ (0 if all σ = 0)."""
    if not np.any(sig > 0):
        return 0
    n_pix = x.shape[1]
    half = 0
    idx = np.arange(n_pix)
    for r in range(x.shape[0]):
        reach = TRUNCATE_SIGMA * sig[r]
        # pixel holding x ± reach: the last edge at or below it, in [0, n_pix - 1]
        j_lo = np.clip(np.searchsorted(e[r], x[r] - reach, side="right") - 1, 0, n_pix - 1)
        j_hi = np.clip(np.searchsorted(e[r], x[r] + reach, side="left") - 1, 0, n_pix - 1)
        half = max(half, int(np.max(idx - j_lo)), int(np.max(j_hi - idx)))
    return half


def _warn_unchanged(where: BoolArray, w2: FloatArray, rt: FloatArray, rs: FloatArray) -> None:
    """Warn once, naming the wavelength range where the source is already too coarse."""
    if not np.any(where):
        return
    lam = np.broadcast_to(w2, where.shape)[where]
    lo, hi = float(lam.min()), float(lam.max())
    rs_lo, rs_hi = float(np.min(rs[where])), float(np.max(rs[where]))
    frac = float(np.mean(where))
    warnings.warn(
        f"source resolving power R = {rs_lo:.0f}–{rs_hi:.0f} is not above the target "
        f"R = {float(np.min(rt[where])):.0f} at {lo:.1f}–{hi:.1f} Å ({frac:.1%} of pixels); "
        "those pixels are left unchanged and their effective resolving power is the source's",
        ResolutionWarning,
        stacklevel=3,
    )
