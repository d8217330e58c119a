"""Shared argument handling of the spectral core: batch shapes and the mask convention.

Every public function of :mod:`csstflux.spectra` turns its inputs into 2-D float64 arrays
``(n_spec, n_pix)`` here, works on those, and hands back the rank it was given. The mask
convention of the package (see :mod:`csstflux.spectra`) is enforced in one place:
:func:`clean` folds non-finite flux and non-finite or non-positive errors into the mask and
zeroes flux and error under it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def as_batch(flux: ArrayLike, name: str = "flux") -> tuple[FloatArray, bool]:
    """Return ``flux`` as a float64 ``(n_spec, n_pix)`` array and whether it was 1-D."""
    arr = np.asarray(flux, dtype=np.float64)
    if arr.ndim == 1:
        return arr[np.newaxis, :], True
    if arr.ndim == 2:
        return arr, False
    raise ValueError(f"{name} must have shape (n_pix,) or (n_spec, n_pix), got {arr.shape}")


def unbatch(arr: NDArray[Any], squeeze: bool) -> NDArray[Any]:
    """Undo :func:`as_batch`: drop the batch axis again when the input was 1-D."""
    return arr[0] if squeeze else arr


def like_flux(
    arr: ArrayLike | None, shape: tuple[int, int], name: str, dtype: type = np.float64
) -> NDArray[Any] | None:
    """Broadcast an optional per-pixel array (``(n_pix,)`` or ``(n_spec, n_pix)``) to ``shape``."""
    if arr is None:
        return None
    a: NDArray[Any] = np.asarray(arr, dtype=dtype)
    if (
        a.ndim not in (1, 2)
        or a.shape[-1] != shape[1]
        or (a.ndim == 2 and a.shape[0] not in (1, shape[0]))
    ):
        raise ValueError(f"{name} has shape {a.shape}, flux has {shape}")
    return np.broadcast_to(a, shape)


def clean(
    flux: FloatArray, error: ArrayLike | None, mask: ArrayLike | None
) -> tuple[FloatArray, FloatArray | None, BoolArray]:
    """Apply the mask convention to a 2-D batch.

    Parameters
    ----------
    flux : (n_spec, n_pix) float64
    error : (n_pix,) or (n_spec, n_pix), optional
        1σ errors; a pixel whose error is NaN, infinite or ≤ 0 (inverse variance not finite and
        positive) is masked.
    mask : (n_pix,) or (n_spec, n_pix) bool, optional
        True = bad pixel.

    Returns
    -------
    flux, error, mask
        New arrays: ``(n_spec, n_pix)`` float64, float64 or None, bool. Flux and error are 0.0
        wherever the returned mask is True.
    """
    shape = (flux.shape[0], flux.shape[1])
    m = like_flux(mask, shape, "mask", dtype=np.bool_)
    bad = np.zeros(shape, dtype=bool) if m is None else m.copy()
    bad |= ~np.isfinite(flux)
    err = like_flux(error, shape, "error")
    if err is not None:
        with np.errstate(invalid="ignore"):
            bad |= ~(np.isfinite(err) & (err > 0))
    f = np.where(bad, 0.0, flux)
    e = None if err is None else np.where(bad, 0.0, err)
    return f, e, bad


def check_wavelength(
    wavelength: ArrayLike, n_spec: int, n_pix: int, name: str = "wavelength"
) -> FloatArray:
    """Validate a wavelength array and return it as float64 ``(1 or n_spec, n_pix)``.

    Wavelengths must be finite, positive and strictly increasing along the last axis.
    """
    w = np.asarray(wavelength, dtype=np.float64)
    if w.ndim == 1:
        w = w[np.newaxis, :]
    if w.ndim != 2 or w.shape[1] != n_pix or w.shape[0] not in (1, n_spec):
        raise ValueError(
            f"{name} has shape {np.shape(wavelength)}, expected ({n_pix},) or ({n_spec}, {n_pix})"
        )
    if n_pix < 2:
        raise ValueError(f"{name} needs at least 2 pixels, got {n_pix}")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError(f"{name} must be finite and positive")
    if not np.all(np.diff(w, axis=1) > 0):
        raise ValueError(f"{name} must be strictly increasing")
    return w


def weighted_result(num: FloatArray, den: FloatArray, var: FloatArray | None,
                    bad_out: BoolArray, squeeze: bool
                    ) -> tuple[FloatArray, FloatArray | None, BoolArray]:
    """Finish a weighted average: flux = num/den, error = sqrt(var)/den, 0 where ``bad_out``;
    each returned in the caller's rank (see :func:`unbatch`)."""
    safe = np.where(bad_out, 1.0, den)
    flux_out = np.where(bad_out, 0.0, num / safe)
    err_out = None if var is None else np.where(bad_out, 0.0, np.sqrt(var) / safe)
    return (unbatch(flux_out, squeeze),
            None if err_out is None else unbatch(err_out, squeeze),
            unbatch(bad_out, squeeze))
