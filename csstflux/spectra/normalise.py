"""Continuum normalisation of network inputs and scaling of network targets (paper §2.1).

Inputs: "normalized by dividing their continua, which are estimated using the moving average
method with a window size of 51 pixels. In cases where there are fewer than 25 pixels on one
side of the boundary, all pixels on that side are used." At pixel i of an n-pixel spectrum the
window is therefore ``[max(0, i − 25), min(n − 1, i + 25)]``: it shrinks at the ends instead of
being padded or reflected. Masked pixels do not enter the average, which is the mean of the
unmasked pixels in the window; sums come from cumulative sums, O(n) per spectrum.

Targets: "scaled by dividing the mean flux value in the wavelength range of 5526–5586 Å",
the mean of the unmasked pixels whose centres lie in that window.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from csstflux.errors import CoverageError
from csstflux.grids import CONTINUUM_WINDOW, SCALING_WINDOW
from csstflux.spectra._common import (
    BoolArray,
    FloatArray,
    as_batch,
    check_wavelength,
    clean,
    unbatch,
)
from csstflux.stats import nanmedian_rows

__all__ = ["continuum_normalise", "moving_average", "scale_sed"]


def moving_average(
    flux: ArrayLike, mask: ArrayLike | None = None, window: int = CONTINUUM_WINDOW
) -> tuple[FloatArray, FloatArray]:
    """Mean of the unmasked pixels in a centred window that shrinks at the ends.

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
    mask : same shape, bool, optional
        True = pixel left out of every average.
    window : int
        Odd window length in pixels; the half-width is ``window // 2``.

    Returns
    -------
    average : same shape as flux, float64
        0.0 where the window holds no unmasked pixel.
    count : same shape as flux, float64
        Number of unmasked pixels in each window.
    """
    if window < 1 or window % 2 != 1:
        raise ValueError(f"window must be a positive odd number of pixels, got {window}")
    f2, squeeze = as_batch(flux)
    f2, _, bad = clean(f2, None, mask)
    n_pix = f2.shape[1]
    half = window // 2
    good = (~bad).astype(np.float64)
    # cumulative sums of deviations from the row median: small numbers, so the differences of
    # cumulative sums lose little precision, and a constant spectrum gives exactly its value
    ref = np.zeros((f2.shape[0], 1))
    rows = ~bad.all(axis=1)
    ref[rows, 0] = nanmedian_rows(f2[rows], bad[rows])
    zeros = np.zeros((f2.shape[0], 1))
    csum = np.concatenate([zeros, np.cumsum((f2 - ref) * good, axis=1)], axis=1)
    ccount = np.concatenate([zeros, np.cumsum(good, axis=1)], axis=1)
    idx = np.arange(n_pix)
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + half, n_pix - 1) + 1
    total = csum[:, hi] - csum[:, lo]
    count = ccount[:, hi] - ccount[:, lo]
    avg = np.where(count > 0, ref + total / np.where(count > 0, count, 1.0), 0.0)
    return unbatch(avg, squeeze), unbatch(count, squeeze)


def continuum_normalise(
    flux: ArrayLike,
    error: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    window: int = CONTINUUM_WINDOW,
) -> tuple[FloatArray, FloatArray | None, BoolArray, FloatArray]:
    """Divide spectra by their moving-average continuum (paper §2.1).

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Spectra on a common pixel grid (the moving average counts pixels, not Å).
    error : same shape, optional
        1σ errors, flux unit; non-finite or non-positive values mask their pixel.
    mask : same shape, bool, optional
        True = bad pixel, left out of the continuum and masked in the output.
    window : int
        Window length in pixels (``grids.CONTINUUM_WINDOW`` = 51).

    Returns
    -------
    flux_norm : same shape, float64
        ``flux / continuum``, dimensionless; 0.0 where masked.
    error_norm : same shape, float64, or None when ``error`` is None
        ``error / continuum``. The continuum's own noise (an average of ~51 pixels, so ~7×
        smaller than a pixel's) and its correlation with the pixel are neglected.
    mask : same shape, bool
        Input mask, plus pixels whose window holds no unmasked pixel or whose continuum ≤ 0.
    continuum : same shape, float64
        The moving average, flux unit; 0.0 where it is undefined or not positive (it is kept at
        masked pixels whose window holds good ones).
    """
    f2, squeeze = as_batch(flux)
    f2, e2, bad = clean(f2, error, mask)
    cont, count = moving_average(f2, bad, window)
    ok = (count > 0) & (cont > 0)
    cont = np.where(ok, cont, 0.0)
    bad_out = bad | ~ok
    safe = np.where(bad_out, 1.0, cont)
    flux_norm = np.where(bad_out, 0.0, f2 / safe)
    err_norm = None if e2 is None else np.where(bad_out, 0.0, e2 / safe)
    return (
        unbatch(flux_norm, squeeze),
        None if err_norm is None else unbatch(err_norm, squeeze),
        unbatch(bad_out, squeeze),
        unbatch(cont, squeeze),
    )


def scale_sed(
    wavelength: ArrayLike,
    flux: ArrayLike,
    error: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    window: tuple[float, float] = SCALING_WINDOW,
    strict: bool = False,
) -> tuple[FloatArray, FloatArray | None, BoolArray, FloatArray]:
    """Divide SEDs by their mean flux in a wavelength window (paper §2.1: 5526–5586 Å).

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Pixel centres, Å, strictly increasing.
    flux : (n_pix,) or (n_spec, n_pix) float
        Flux density, any unit.
    error : same shape as flux, optional
        1σ errors; non-finite or non-positive values mask their pixel.
    mask : same shape as flux, bool, optional
        True = bad pixel.
    window : (float, float)
        Inclusive range of pixel centres, Å (``grids.SCALING_WINDOW``).
    strict : bool
        Raise :class:`~csstflux.errors.CoverageError` if any spectrum has no usable scale.

    Returns
    -------
    flux_scaled : same shape as flux, float64
        Dimensionless; 0.0 where masked.
    error_scaled : same shape, float64, or None when ``error`` is None
        ``error / scale`` (the scale's own noise is neglected).
    mask : same shape, bool
        Input mask; the whole row is masked where the scale is unusable.
    scale : float64 array of shape () or (n_spec,)
        The divisor, flux unit. NaN for a spectrum with no unmasked pixel centred in the window
        or a non-positive mean there; with ``strict=False`` such a row comes back fully masked.

    Raises
    ------
    CoverageError
        With ``strict=True``, when some spectrum has no usable scale.
    """
    lo, hi = float(window[0]), float(window[1])
    if not hi >= lo:
        raise ValueError(f"invalid scaling window {window}")
    f2, squeeze = as_batch(flux)
    f2, e2, bad = clean(f2, error, mask)
    w2 = check_wavelength(wavelength, f2.shape[0], f2.shape[1])
    use = (w2 >= lo) & (w2 <= hi) & ~bad
    n = use.sum(axis=1)
    total = np.where(use, f2, 0.0).sum(axis=1)
    scale = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    failed = ~(scale > 0)
    if strict and np.any(failed):
        rows = np.flatnonzero(failed)
        raise CoverageError(
            f"no usable scale for {rows.size} spectrum(s) (first row {rows[0]})",
            expected=f"unmasked pixels with positive mean flux in {lo:g}–{hi:g} Å",
            found=f"{int(n[rows[0]])} unmasked pixels",
        )
    scale = np.where(failed, np.nan, scale)
    bad_out = bad | failed[:, np.newaxis]
    safe = np.where(failed, 1.0, scale)[:, np.newaxis]
    flux_s = np.where(bad_out, 0.0, f2 / safe)
    err_s = None if e2 is None else np.where(bad_out, 0.0, e2 / safe)
    return (
        unbatch(flux_s, squeeze),
        None if err_s is None else unbatch(err_s, squeeze),
        unbatch(bad_out, squeeze),
        scale[0, ...] if squeeze else scale,
    )
