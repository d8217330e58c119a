"""Shifting observed wavelengths to the stellar rest frame.

``λ_rest = λ_obs / (1 + z)``. A radial velocity ``v`` (km/s, positive = receding) gives the
relativistic line-of-sight Doppler factor

    1 + z = sqrt((1 + β) / (1 − β)),   β = v / c,

not the first-order ``1 + β``; the two differ by ~β²/2 (6e-8 at 100 km/s; at 500 km/s 1.4e-6,
0.006 of an input-grid pixel: negligible either way, but the exact form costs nothing). Only
wavelengths change: flux densities are not rescaled by (1 + z), because every later step
(continuum normalisation, SED scaling) divides out a constant factor.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from csstflux.constants import C_KMS
from csstflux.spectra._common import FloatArray

__all__ = ["MAX_STELLAR_Z", "doppler_factor", "stellar_redshift", "to_rest_frame"]

#: Largest |z| taken as a star's redshift (1500 km/s, far beyond any Milky Way star); a header
#: value beyond it is a placeholder (LAMOST writes -9999 where LASP measured none) or a
#: galaxy's, and is treated as unknown.
MAX_STELLAR_Z = 0.005


def stellar_redshift(z: ArrayLike) -> FloatArray:
    """``z`` where it is a plausible stellar redshift (finite, |z| < MAX_STELLAR_Z), else NaN."""
    zz = np.asarray(z, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(zz) & (np.abs(zz) < MAX_STELLAR_Z), zz, np.nan)


def doppler_factor(rv_kms: ArrayLike) -> FloatArray:
    """``1 + z`` for radial velocities (km/s, any shape), relativistic: sqrt((1+β)/(1−β))."""
    beta = np.asarray(rv_kms, dtype=np.float64) / C_KMS
    if not (np.all(np.isfinite(beta)) and np.all(np.abs(beta) < 1)):
        raise ValueError("radial velocities must be finite and slower than light")
    return np.sqrt((1.0 + beta) / (1.0 - beta))


def to_rest_frame(
    wavelength: ArrayLike,
    rv_kms: ArrayLike | None = None,
    z: ArrayLike | None = None,
) -> FloatArray:
    """Rest-frame wavelengths, ``λ / (1 + z)``.

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Observed wavelengths, Å.
    rv_kms : float or (n_spec,) float, optional
        Radial velocity, km/s, positive away from the observer.
    z : float or (n_spec,) float, optional
        Redshift, > −1. Give exactly one of ``rv_kms`` and ``z``.

    Returns
    -------
    float64 array, Å
        ``(n_pix,)`` for a 1-D wavelength and a scalar shift; ``(n_spec, n_pix)`` when either
        the wavelength is 2-D or the shift is an ``(n_spec,)`` array.
    """
    if (rv_kms is None) == (z is None):
        raise ValueError("give exactly one of rv_kms and z")
    if rv_kms is not None:
        one_plus_z = doppler_factor(rv_kms)
    else:
        one_plus_z = 1.0 + np.asarray(z, dtype=np.float64)
        if not (np.all(np.isfinite(one_plus_z)) and np.all(one_plus_z > 0)):
            raise ValueError("z must be finite and greater than -1")
    w = np.asarray(wavelength, dtype=np.float64)
    if w.ndim not in (1, 2):
        raise ValueError(f"wavelength must be 1-D or 2-D, got shape {w.shape}")
    if one_plus_z.ndim == 0:
        return w / one_plus_z
    if one_plus_z.ndim != 1 or (w.ndim == 2 and w.shape[0] != one_plus_z.size):
        raise ValueError(f"shift has shape {one_plus_z.shape}, wavelength {w.shape}")
    return np.asarray(w / one_plus_z[:, np.newaxis])
