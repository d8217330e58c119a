"""Noise models of the training augmentation: the paper's eq. (1) and LAMOST-like errors.

Eq. (1), :func:`add_noise`: a noisy spectrum at signal-to-noise ratio ``snr`` is

    F'_λ = F_λ + r · F_λ,   r ~ N(0, (1/snr)²) independently per pixel,

so the noise is proportional to the clean flux and its 1σ error is σ_λ = |F_λ| / snr.

LAMOST-like, :func:`add_profile_noise`: Gaussian noise of 1σ

    σ_λ = e(λ) · |F_λ|^p / snr

with ``e`` a relative-error profile of median 1 (the two-arm shape of
:mod:`csstflux.spectra.error_profile`), so that ``snr`` is the median continuum S/N, and ``p``
the power of the flux in the error: 1 is eq. (1) (with e = 1), 0.5 photon noise of the star, 0
a background-limited spectrum whose error does not drop in absorption lines. In the real
LAMOST files (see :mod:`csstflux.spectra.error_profile`) the slope d ln σ / d ln F, fitted in
250 Å windows, has median 0.26 and 0.46 at S/N 122 and 232 (pooled over absorption-line
pixels ≥ 10 % below their 16-pixel median: 0.18 and 0.32), and −0.03 and −0.11 at S/N 21 and
9, where the sky dominates and noise-deepened pixels at a fixed error bias it low (p ≈ 0).
:class:`NoiseConfig` therefore draws p uniformly over 0–0.5 by default.

:func:`draw_snr` draws the SNR per spectrum: from the paper's set (20–40) with a given
probability, else log-uniformly over a range (LAMOST stars reach S/N 300 and more).

:func:`draw_mixed_noise` is the noise of a training job, drawn in one place for training
(:func:`csstflux.model.data.realistic_inputs`, after its augmentations) and for the domain
model's thresholds (:func:`csstflux.library.domain.survey_noise`): the S/N per spectrum, then a
fraction ``lamost_fraction`` of LAMOST-like errors and eq. (1) for the others.

Random numbers come only from a :class:`numpy.random.Generator` the caller passes (no global
state, no default seed). One standard normal is drawn per pixel, masked or not, in C order over
``(n_spec, n_pix)``: a batch therefore gets exactly the numbers that one-at-a-time calls on the
same generator would, and the draws do not depend on the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from csstflux.spectra._common import BoolArray, FloatArray, as_batch, clean, like_flux, unbatch

__all__ = ["NoiseConfig", "add_noise", "add_profile_noise", "draw_snr", "draw_mixed_noise"]


@dataclass(frozen=True)
class NoiseConfig:
    """How training noise is drawn (a ``[train.noise]`` table); defaults are the paper's."""

    lamost_fraction: float = 0.0
    """Fraction of spectra with LAMOST-like errors (:func:`add_profile_noise` with a profile
    from :func:`~csstflux.spectra.error_profile.draw_error_profiles`); the others get eq. (1)."""
    paper_fraction: float = 1.0
    """Fraction of spectra whose SNR is drawn from the paper's set (``snrs``); the others
    draw it log-uniformly over ``snr_range``."""
    snr_range: tuple[float, float] = (10.0, 300.0)
    """Range of the log-uniform SNR (median continuum S/N per pixel)."""
    red_blue_ratio: tuple[float, float] = (0.35, 1.0)
    """Range of the log-uniform red/blue ratio of relative errors of LAMOST-like profiles
    (measured 0.41–0.61, median 0.59 ≈ the range's geometric mean)."""
    flux_power: tuple[float, float] = (0.0, 0.5)
    """Range of the uniform power p of the flux in LAMOST-like errors, σ ∝ |F|^p (0: sky
    limited, 0.5: photon noise of the star)."""

    def __post_init__(self) -> None:
        for name in ("lamost_fraction", "paper_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("snr_range", "red_blue_ratio", "flux_power"):
            lo_hi = getattr(self, name)
            ok = len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1] and np.isfinite(lo_hi[1])
            if name == "flux_power":
                ok = ok and 0.0 <= lo_hi[0] and lo_hi[1] <= 1.0
            elif ok:
                ok = lo_hi[0] > 0.0
            if not ok:
                bounds = "0 <= lo <= hi <= 1" if name == "flux_power" else "0 < lo <= hi"
                raise ValueError(f"{name} must be (lo, hi) with {bounds}, got {lo_hi}")

    @property
    def is_paper(self) -> bool:
        """True when this is eq. (1) at the paper's SNRs only (the original noise)."""
        return self.lamost_fraction == 0.0 and self.paper_fraction == 1.0


def draw_snr(rng: np.random.Generator, n: int, snrs: ArrayLike,
             snr_range: tuple[float, float], paper_fraction: float) -> FloatArray:
    """SNRs for ``n`` spectra: from ``snrs`` with probability ``paper_fraction``, else
    log-uniform over ``snr_range``.

    With ``paper_fraction`` = 1 this is ``rng.choice(snrs, n)`` and nothing else is drawn (the
    original training stream); with 0 only the log-uniform values are drawn.

    Returns
    -------
    (n,) float64
    """
    paper = np.asarray(snrs, dtype=np.float64)
    lo, hi = np.log(snr_range[0]), np.log(snr_range[1])
    if paper_fraction >= 1.0:
        return np.asarray(rng.choice(paper, size=n))
    wide = np.exp(rng.uniform(lo, hi, n))
    if paper_fraction <= 0.0:
        return wide
    pick = rng.random(n) < paper_fraction
    return np.where(pick, rng.choice(paper, size=n), wide)


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
    _check_rng(rng)
    f2, squeeze = as_batch(flux)
    f2, _, bad = clean(f2, None, mask)
    s = _per_spectrum(snr, f2.shape[0], "snr")
    r = rng.standard_normal(f2.shape) / s[:, np.newaxis]
    bad = bad | (f2 == 0)
    noisy = np.where(bad, 0.0, f2 * (1.0 + r))
    error = np.where(bad, 0.0, np.abs(f2) / s[:, np.newaxis])
    return unbatch(noisy, squeeze), unbatch(error, squeeze), unbatch(bad, squeeze)


def add_profile_noise(
    flux: ArrayLike,
    snr: ArrayLike,
    rng: np.random.Generator,
    profile: ArrayLike | None = None,
    flux_power: ArrayLike = 0.0,
    mask: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Add Gaussian noise of 1σ ``profile · |F|^p / snr`` (LAMOST-like errors).

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Clean continuum-normalised spectra.
    snr : float or (n_spec,) float
        Median continuum S/N per spectrum, finite and > 0.
    rng : numpy.random.Generator
        Source of the noise.
    profile : (n_pix,) or (n_spec, n_pix) float, optional
        Relative-error profile e(λ) > 0 (median 1 makes ``snr`` the median S/N); None: 1.
    flux_power : float or (n_spec,) float
        p; 1 with ``profile`` None is eq. (1) with additive instead of multiplicative
        arithmetic (equal to rounding).
    mask : same shape as flux, bool, optional
        True = bad pixel.

    Returns
    -------
    noisy : same shape as flux, float64
        ``F + σ n``, n ~ N(0, 1); 0.0 where masked.
    error : same shape, float64
        σ; 0.0 where masked.
    mask : same shape, bool
        Input mask plus non-finite flux and pixels whose σ is 0 (F = 0 with p > 0).
    """
    _check_rng(rng)
    f2, squeeze = as_batch(flux)
    f2, _, bad = clean(f2, None, mask)
    n_spec = f2.shape[0]
    s = _per_spectrum(snr, n_spec, "snr")
    p = _per_spectrum(flux_power, n_spec, "flux_power", positive=False)
    e = like_flux(profile, f2.shape, "profile")
    if e is not None and not (np.all(np.isfinite(e)) and np.all(e > 0)):
        raise ValueError("profile must be finite and positive")
    n = rng.standard_normal(f2.shape)
    sigma = np.abs(f2) ** p[:, np.newaxis] / s[:, np.newaxis]
    if e is not None:
        sigma = sigma * e
    bad = bad | (sigma == 0) | ~np.isfinite(sigma)
    noisy = np.where(bad, 0.0, f2 + sigma * n)
    error = np.where(bad, 0.0, sigma)
    return unbatch(noisy, squeeze), unbatch(error, squeeze), unbatch(bad, squeeze)


def _per_spectrum(value: ArrayLike, n_spec: int, name: str, positive: bool = True
                  ) -> FloatArray:
    """A scalar or (n_spec,) parameter as (n_spec,) float64, checked finite (and > 0)."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(n_spec, float(v))
    if v.shape != (n_spec,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_spec},), got {v.shape}")
    if not np.all(np.isfinite(v)) or (positive and not np.all(v > 0)):
        raise ValueError(f"{name} must be finite" + (" and positive" if positive else ""))
    return v


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def draw_mixed_noise(x: ArrayLike, noise: NoiseConfig, snrs: ArrayLike,
                     rng: np.random.Generator, profile_rng: np.random.Generator | None = None,
                     junction: ArrayLike | None = None, mask: ArrayLike | None = None
                     ) -> tuple[FloatArray, FloatArray, BoolArray, FloatArray]:
    """A training job's noise on clean spectra ``x`` (n, n_pix).

    The S/N per spectrum (:func:`draw_snr`: ``snrs`` with probability
    ``noise.paper_fraction``, else log-uniform over ``noise.snr_range``); a fraction
    ``noise.lamost_fraction`` of the spectra get a LAMOST-like profile
    (:func:`~csstflux.spectra.error_profile.draw_error_profiles`, with the arm junction at
    ``junction`` where given) and σ ∝ |F|^p, p uniform over ``noise.flux_power``; the others
    eq. (1); all through :func:`add_profile_noise`. ``rng`` draws the S/N and the noise,
    ``profile_rng`` (``rng`` when None) which spectra are LAMOST-like, their profiles and p.

    Returns
    -------
    noisy, err : (n, n_pix) float64
    bad : (n, n_pix) bool
        ``mask`` and pixels without a valid error.
    snr : (n,) float64
        The S/N drawn per spectrum.
    """
    from csstflux.spectra.error_profile import draw_error_profiles

    f = np.atleast_2d(np.asarray(x, np.float64))
    n = f.shape[0]
    prng = rng if profile_rng is None else profile_rng
    snr = draw_snr(rng, n, snrs, noise.snr_range, noise.paper_fraction)
    lamost = prng.random(size=n) < noise.lamost_fraction
    profile = np.ones(f.shape)
    profile[lamost] = draw_error_profiles(
        prng, int(np.sum(lamost)), noise.red_blue_ratio,
        None if junction is None else np.asarray(junction)[lamost])
    power = np.where(lamost, prng.uniform(noise.flux_power[0], noise.flux_power[1], size=n), 1.0)
    noisy, err, bad = add_profile_noise(f, snr, rng, profile, power, mask)
    return noisy, err, bad, np.asarray(snr, np.float64)
