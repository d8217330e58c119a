"""The noise model of the paper's training augmentation (eq. 1).

A noisy spectrum at signal-to-noise ratio ``snr`` is

    F'_λ = F_λ + r · F_λ,   r ~ N(0, (1/snr)²) independently per pixel,

so the noise is proportional to the clean flux and its 1σ error is σ_λ = |F_λ| / snr.
Random numbers come only from a :class:`numpy.random.Generator` the caller passes (no global
state, no default seed). One standard normal is drawn per pixel, masked or not, in C order over
``(n_spec, n_pix)``: a batch therefore gets exactly the numbers that one-at-a-time calls on the
same generator would, and the draws do not depend on the mask.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from csstflux.spectra._common import BoolArray, FloatArray, as_batch, clean, unbatch

__all__ = ["add_noise"]


def add_noise(
    flux: ArrayLike,
    snr: ArrayLike,
    rng: np.random.Generator,
    mask: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Add multiplicative Gaussian noise at a given signal-to-noise ratio (eq. 1).

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Clean spectra, any unit.
    snr : float or (n_spec,) float
        Signal-to-noise ratio per spectrum, finite and > 0.
    rng : numpy.random.Generator
        Source of the noise; required, so every draw is reproducible from its seed.
    mask : same shape as flux, bool, optional
        True = bad pixel.

    Returns
    -------
    noisy : same shape as flux, float64
        ``F (1 + r)``; 0.0 where masked.
    error : same shape, float64
        ``|F| / snr``, the 1σ of the added noise; 0.0 where masked.
    mask : same shape, bool
        Input mask plus non-finite flux and pixels with F = 0, whose error would be 0 (not a
        valid 1σ).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    f2, squeeze = as_batch(flux)
    f2, _, bad = clean(f2, None, mask)
    s = np.asarray(snr, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(f2.shape[0], float(s))
    if s.shape != (f2.shape[0],):
        raise ValueError(f"snr must be a scalar or have shape ({f2.shape[0]},), got {s.shape}")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("snr must be finite and positive")
    r = rng.standard_normal(f2.shape) / s[:, np.newaxis]
    bad = bad | (f2 == 0)
    noisy = np.where(bad, 0.0, f2 * (1.0 + r))
    error = np.where(bad, 0.0, np.abs(f2) / s[:, np.newaxis])
    return unbatch(noisy, squeeze), unbatch(error, squeeze), unbatch(bad, squeeze)
