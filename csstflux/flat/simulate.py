"""Simulated slitless observations of stars through a known flat (paper §5 Monte Carlo).

The flat-field experiment of the paper: stars with predicted SEDs are observed on a detector
whose 3D flat ``f(x, y, λ)`` is known, their extracted 1D spectra are divided by the predicted
SEDs, and a 2D polynomial per wavelength is fitted to the ratios
(:mod:`csstflux.flat.fit`). This module supplies the ground truth and the observations:

- :class:`TrueFlat`: a smooth large-scale flat, a 2D polynomial in ``(x, y)`` whose
  coefficients are themselves polynomials in wavelength, plus optional achromatic small-scale
  structure (a seeded sum of sinusoids);
- :func:`draw_true_seds`: true SEDs consistent with a prediction and its ``sed_err``;
- :func:`simulate_observations`: extracted counts and their errors.

Units. SEDs are relative (the network's output, scaled to 1 in
:data:`csstflux.grids.SCALING_WINDOW`); each star's absolute flux is one ``scale`` factor in
photo-electrons per second per output pixel for unit throughput and unit SED. Counts are
photo-electrons per output-grid pixel summed over the extraction aperture; sky is
e⁻ s⁻¹ per output pixel in the same aperture; read noise is e⁻ per output pixel (the detector
read noise times √(aperture pixels)). Wavelengths are vacuum Å, positions 0-based pixels.

Physical fluxes. :func:`counts_per_flux` turns f_λ (erg s⁻¹ cm⁻² Å⁻¹) arriving at the
telescope into e⁻ s⁻¹ per output pixel for unit throughput, ``A λ Δλ / (h c)``: photons of
energy ``hc/λ`` collected over :data:`COLLECTING_AREA_CM2` within the pixel's width
``Δλ = λ_{k+½} − λ_{k−½}`` (:attr:`csstflux.grids.LogGrid.edges`; ≈ λ/400 on OUTPUT_GRID, so
the factor grows as λ²: 1.22e17 at the scaling window). The first-order throughput curve
carries every other loss (mirrors, grating, quantum efficiency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.signal import lfilter

from csstflux.constants import C_KMS
from csstflux.flat.normalise import detector_mean_functional
from csstflux.flat.polyfit2d import DEFAULT_ORDER, Shape, evaluate, n_terms
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW

Array = NDArray[np.float64]

#: CSST's collecting area, cm²: the full 2 m primary, π (100 cm)² = 3.14 m². CSST is an
#: off-axis three-mirror anastigmat without any obstruction (Zhan 2021, Chinese Science
#: Bulletin 66, 1290), so nothing is subtracted; reflectivities, grating efficiency and QE are
#: in the throughput curves.
COLLECTING_AREA_CM2: float = float(np.pi * 100.0**2)
#: Planck constant, erg s (exact, SI 2019); ``hc = PLANCK_ERG_S · C_KMS · 1e13`` erg Å.
PLANCK_ERG_S: float = 6.626_070_15e-27


@dataclass(frozen=True, eq=False)
class TrueFlat:
    """Ground-truth flat of one detector: smooth 2D polynomial, chromatic, plus ripple.

    ``f(x, y, λ) = Σ_t c_t(λ) a_t(x, y) + ripple(x, y)``, where ``a_t`` are the terms of
    :func:`csstflux.flat.polyfit2d.design_matrix` and ``c_t(λ) = Σ_k coeffs[k, t] s^k`` with
    ``s = 2(λ − lo)/(hi − lo) − 1`` (λ outside ``wavelength_range`` extrapolates). The ripple
    ``A √(2/M) Σ_m sin(k_m·(x, y) + φ_m)`` has rms ``A`` for ``M`` modes and does not depend
    on λ (small-scale flats come from LED exposures at a few wavelengths, paper footnote 1).
    With ``ripple_amplitude = 0`` and ``order`` ≤ the fitted order the flat is exactly what a
    fit can represent.
    """

    coeffs: Array
    """Chromatic coefficients, shape (n_chroma, n_terms(order)): row k multiplies s^k."""
    shape: Shape
    """Detector shape ``(n_y, n_x)``, pixels."""
    wavelength_range: tuple[float, float]
    """``(lo, hi)`` Å mapped onto s ∈ [-1, 1]."""
    order: int = DEFAULT_ORDER
    """Total spatial polynomial order."""
    ripple_amplitude: float = 0.0
    """Rms of the small-scale structure (dimensionless, additive)."""
    ripple_wavevectors: Array = field(default_factory=lambda: np.zeros((0, 2)))
    """Wave vectors ``(k_x, k_y)`` of the ripple modes, shape (M, 2), rad per pixel."""
    ripple_phases: Array = field(default_factory=lambda: np.zeros(0))
    """Phases of the ripple modes, shape (M,), rad."""

    def __post_init__(self) -> None:
        c = np.array(self.coeffs, dtype=float, ndmin=2)
        if c.ndim != 2 or c.shape[1] != n_terms(self.order):
            raise ValueError(f"coeffs must be (n_chroma, {n_terms(self.order)}) for order "
                             f"{self.order}, got shape {c.shape}")
        kv = np.array(self.ripple_wavevectors, dtype=float).reshape(-1, 2)
        ph = np.array(self.ripple_phases, dtype=float).reshape(-1)
        if kv.shape[0] != ph.size:
            raise ValueError(f"{kv.shape[0]} ripple wave vectors but {ph.size} phases")
        if self.ripple_amplitude < 0 or (self.ripple_amplitude > 0 and ph.size == 0):
            raise ValueError("ripple_amplitude must be >= 0 and needs at least one mode")
        lo, hi = (float(v) for v in self.wavelength_range)
        if not hi > lo > 0:
            raise ValueError(f"invalid wavelength_range {self.wavelength_range}")
        for name, arr in (("coeffs", c), ("ripple_wavevectors", kv), ("ripple_phases", ph)):
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "wavelength_range", (lo, hi))
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @classmethod
    def random(cls, rng: np.random.Generator, *, shape: Shape,
               wavelength_range: tuple[float, float], order: int = DEFAULT_ORDER,
               amplitude: float = 0.03, chromatic_fraction: float = 0.5,
               chromatic_order: int = 2, ripple_amplitude: float = 0.0,
               ripple_period: tuple[float, float] = (100.0, 1000.0),
               n_ripple_modes: int = 8) -> TrueFlat:
        """Draw a flat: constant term 1, other terms N(0, amplitude/√(n_terms − 1)).

        Parameters
        ----------
        amplitude : float
            Typical size of the large-scale variation (0.01–0.05 for 1–5 %).
        chromatic_fraction : float
            Size of the wavelength-dependent part of each coefficient relative to its
            constant part (for s^1 … s^chromatic_order).
        ripple_period : (float, float)
            Range of ripple periods, pixels (drawn log-uniform, random directions).
        """
        if not 0 <= amplitude < 0.5:
            raise ValueError(f"amplitude must be in [0, 0.5), got {amplitude}")
        t = n_terms(order)
        sig = amplitude / np.sqrt(max(t - 1, 1))
        c = np.zeros((chromatic_order + 1, t))
        c[0, 1:] = rng.normal(0.0, sig, t - 1)
        c[1:, 1:] = rng.normal(0.0, sig * chromatic_fraction, (chromatic_order, t - 1))
        c[0, 0] = 1.0
        c[1:, 0] = rng.normal(0.0, sig * chromatic_fraction, chromatic_order)
        lo_p, hi_p = np.log(ripple_period[0]), np.log(ripple_period[1])
        period = np.exp(rng.uniform(lo_p, hi_p, n_ripple_modes))
        angle = rng.uniform(0.0, 2 * np.pi, n_ripple_modes)
        kv = (2 * np.pi / period)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return cls(c, shape, wavelength_range, order, ripple_amplitude, kv,
                   rng.uniform(0.0, 2 * np.pi, n_ripple_modes))

    def coefficients(self, wavelength: ArrayLike) -> Array:
        """Spatial polynomial coefficients at each wavelength, shape (n_wave, n_terms)."""
        lo, hi = self.wavelength_range
        s = 2.0 * (np.atleast_1d(np.asarray(wavelength, dtype=float)) - lo) / (hi - lo) - 1.0
        return np.vander(s, self.coeffs.shape[0], increasing=True) @ self.coeffs

    def ripple(self, x: ArrayLike, y: ArrayLike) -> Array:
        """Small-scale structure at pixel positions, same shape as ``x`` and ``y``."""
        xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        out = np.zeros(xa.shape)
        if self.ripple_amplitude == 0:
            return out
        norm = self.ripple_amplitude * np.sqrt(2.0 / self.ripple_phases.size)
        for (kx, ky), ph in zip(self.ripple_wavevectors, self.ripple_phases, strict=True):
            out += np.sin(kx * xa + ky * ya + ph)
        return norm * out

    def value(self, x: ArrayLike, y: ArrayLike, wavelength: ArrayLike) -> Array:
        """Un-normalised flat at star positions.

        Parameters
        ----------
        x, y : array_like, shape (n,) or (n, n_wave)
            Pixel positions (per wavelength when 2D).
        wavelength : array_like, shape (n_wave,)
            Å.

        Returns
        -------
        ndarray, shape (n, n_wave)
        """
        c = self.coefficients(wavelength)
        xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        poly = evaluate(c, xa, ya, self.order, shape=self.shape)
        rip = self.ripple(xa, ya)
        return poly + (rip[:, None] if rip.ndim == 1 else rip)

    def detector_mean(self, wavelength: ArrayLike) -> Array:
        """Exact mean of :meth:`value` over the detector area, shape (n_wave,).

        The polynomial part is ``μ·c(λ)``
        (:func:`csstflux.flat.normalise.detector_mean_functional`),
        the same functional :func:`csstflux.flat.normalise.normalise_flat` divides fits by; the
        ripple's mean over the rectangle of pixel edges is computed analytically.
        """
        mean = self.coefficients(wavelength) @ detector_mean_functional(self.order)
        if self.ripple_amplitude == 0:
            return mean
        ny, nx = self.shape
        total = 0.0 + 0.0j
        for (kx, ky), ph in zip(self.ripple_wavevectors, self.ripple_phases, strict=True):
            total += np.exp(1j * ph) * _mean_exp(kx, nx) * _mean_exp(ky, ny)
        return mean + self.ripple_amplitude * np.sqrt(2.0 / self.ripple_phases.size) * total.imag

    def cube(self, grid_x: ArrayLike, grid_y: ArrayLike, wavelength: ArrayLike) -> Array:
        """Flat on a coarse grid, normalised to mean 1 over the detector at each wavelength.

        Parameters
        ----------
        grid_x : array_like, shape (n_gx,)
        grid_y : array_like, shape (n_gy,)
            Pixel coordinates of the grid.
        wavelength : array_like, shape (n_wave,)
            Å.

        Returns
        -------
        ndarray, shape (n_wave, n_gy, n_gx)
            Dimensionless, comparable with :func:`csstflux.flat.normalise.normalise_flat`.
        """
        gx, gy = np.asarray(grid_x, dtype=float), np.asarray(grid_y, dtype=float)
        xx, yy = np.meshgrid(gx, gy)
        val = self.value(xx.ravel(), yy.ravel(), wavelength)  # (n_g, n_wave)
        val = val / self.detector_mean(wavelength)[None, :]
        return val.T.reshape(-1, gy.size, gx.size)


def _mean_exp(k: float, n: int) -> complex:
    """Mean of exp(i k x) over x ∈ [-0.5, n - 0.5]."""
    if k == 0:
        return 1.0 + 0.0j
    a, b = -0.5, n - 0.5
    return complex((np.exp(1j * k * b) - np.exp(1j * k * a)) / (1j * k * (b - a)))


def draw_true_seds(pred_sed: ArrayLike, pred_err: ArrayLike, rng: np.random.Generator, *,
                   correlation_length: float = 0.0, ideal: bool = False) -> Array:
    """True SEDs drawn around a prediction with its error (the "realistic" condition).

    ``truth = pred + pred_err · z`` with ``z`` a unit-variance Gaussian process along the
    wavelength axis: independent pixels for ``correlation_length = 0``, else a stationary
    AR(1) process ``z_k = ρ z_{k−1} + √(1−ρ²) ε_k`` with ``ρ = exp(−1/L)``, whose correlation
    between pixels ``d`` apart is ``exp(−d/L)`` (L in output-grid pixels; on
    :data:`csstflux.grids.OUTPUT_GRID` one pixel is Δlnλ = 1/400). Correlated errors move a
    star's whole band up or down together, as a wrong temperature or extinction would.

    Parameters
    ----------
    pred_sed, pred_err : array_like, shape (n_star, n_wave)
        Predicted relative SEDs and their 1σ errors; NaN stays NaN.
    rng : numpy.random.Generator
    correlation_length : float
        L, pixels (≥ 0).
    ideal : bool
        Return the prediction itself (the "ideal" condition: truth equals prediction).

    Returns
    -------
    ndarray, shape (n_star, n_wave)
    """
    pred = np.asarray(pred_sed, dtype=float)
    if ideal:
        return pred.copy()
    err = np.broadcast_to(np.asarray(pred_err, dtype=float), pred.shape)
    if correlation_length < 0:
        raise ValueError(f"correlation_length must be >= 0, got {correlation_length}")
    eps = rng.standard_normal(pred.shape)
    if correlation_length > 0 and pred.shape[-1] > 1:
        rho = float(np.exp(-1.0 / correlation_length))
        gain = np.sqrt(1.0 - rho * rho)
        eps[..., 0] /= gain  # start in the stationary state: z_0 = ε_0
        eps = lfilter([gain], [1.0, -rho], eps, axis=-1)
    return pred + err * eps


def simulate_observations(true_sed: ArrayLike, x: ArrayLike, y: ArrayLike, flat: TrueFlat,
                          throughput: ArrayLike, exposure_time: float, scale: ArrayLike,
                          sky_per_pixel: ArrayLike, read_noise: float,
                          rng: np.random.Generator, *, ideal: bool = False,
                          wavelength: ArrayLike | None = None) -> tuple[Array, Array]:
    """Extracted 1D spectra of stars in one slitless exposure.

    Expected source counts ``S = true_sed · scale · throughput · f(x, y, λ) · t``; the sky
    adds ``B = sky_per_pixel · t``. Unless ``ideal``, the counts are
    ``Poisson(S + B) − B + N(0, read_noise²)`` (sky-subtracted with a perfect sky model);
    with ``ideal`` they are ``S``. The error is always ``√(S + B + read_noise²)``, the
    expected noise (using the noisy counts instead would bias weighted fits low by ~1/SNR²).

    Parameters
    ----------
    true_sed : array_like, shape (n_star, n_wave)
        Relative SEDs (n_wave = 574 on the output grid).
    x, y : array_like, shape (n_star,) or (n_star, n_wave)
        Pixel positions of each star (per wavelength when 2D: its trace,
        :mod:`csstflux.flat.traces`); a non-finite position records nothing (NaN counts and
        error there: a trace point cut at the detector's edge).
    flat : TrueFlat
    throughput : array_like, shape (n_wave,)
        Band throughput on the same grid; pixels where it is not > 0 come back NaN.
    exposure_time : float
        Seconds.
    scale : array_like, shape (n_star,) or scalar
        Each star's absolute flux, e⁻ s⁻¹ per output pixel for unit SED and throughput.
    sky_per_pixel : array_like, shape (n_wave,) or scalar
        Sky, e⁻ s⁻¹ per output pixel in the extraction aperture.
    read_noise : float
        e⁻ per output pixel.
    rng : numpy.random.Generator
    ideal : bool
        Noise-free counts.
    wavelength : array_like, shape (n_wave,), optional
        Å; default the output grid.

    Returns
    -------
    counts, counts_err : ndarray, shape (n_star, n_wave)
        e⁻ per output pixel.
    """
    sed = np.asarray(true_sed, dtype=float)
    if sed.ndim != 2:
        raise ValueError(f"true_sed must be (n_star, n_wave), got shape {sed.shape}")
    wave = OUTPUT_GRID.wavelength if wavelength is None else np.asarray(wavelength, float)
    tp = np.asarray(throughput, dtype=float)
    if tp.shape != (sed.shape[1],) or wave.shape != tp.shape:
        raise ValueError(f"throughput {tp.shape} and wavelength {wave.shape} must be "
                         f"({sed.shape[1]},) to match true_sed")
    if exposure_time <= 0 or read_noise < 0:
        raise ValueError("exposure_time must be > 0 and read_noise >= 0")
    band = np.isfinite(tp) & (tp > 0)
    sc = np.asarray(scale, dtype=float)
    sc = np.broadcast_to(sc.reshape(-1, 1) if sc.ndim else sc, (sed.shape[0], 1))
    expected = np.full(sed.shape, np.nan)
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.ndim == 2:
        xa, ya = xa[:, band], ya[:, band]
    f = flat.value(xa, ya, wave[band])
    expected[:, band] = sed[:, band] * sc * tp[band] * f * exposure_time
    sky = np.broadcast_to(np.asarray(sky_per_pixel, dtype=float) * exposure_time, tp.shape)
    return add_noise(expected, sky, read_noise, rng, band=band, ideal=ideal)


def add_noise(expected: ArrayLike, sky: ArrayLike, read_noise: float,
              rng: np.random.Generator, *, band: ArrayLike, ideal: bool = False
              ) -> tuple[Array, Array]:
    """Noisy extracted counts from expected ones (the noise model of
    :func:`simulate_observations`).

    Parameters
    ----------
    expected : array_like, shape (n_star, n_wave)
        Expected source counts, e⁻ per output pixel; NaN where nothing was recorded (outside
        the band, or a trace point off the detector): NaN comes back there.
    sky : array_like, shape (n_wave,) or scalar
        Expected sky counts in the aperture, e⁻ per output pixel (rate × exposure time).
    read_noise : float
        e⁻ per output pixel.
    rng : numpy.random.Generator
        Draws ``Poisson`` then ``Normal`` over the (n_star, n_band) block (as
        :func:`simulate_observations` always did: the same stream for the same inputs).
    band : array_like of bool, shape (n_wave,)
        The band's pixels; the others are NaN.
    ideal : bool
        Noise-free: the counts are ``expected``.

    Returns
    -------
    counts, counts_err : ndarray, shape (n_star, n_wave)
        ``Poisson(S + B) − B + N(0, read_noise²)`` and ``√(S + B + read_noise²)``.
    """
    exp = np.asarray(expected, dtype=float)
    inb = np.asarray(band, dtype=bool)
    sky_b = np.broadcast_to(np.asarray(sky, dtype=float), inb.shape)
    exp = np.where(inb[None, :], exp, np.nan)
    var = exp + sky_b + read_noise**2
    with np.errstate(invalid="ignore"):
        err = np.sqrt(np.where(var > 0, var, np.nan))
    if ideal:
        return exp, err
    counts = np.full(exp.shape, np.nan)
    block = exp[:, inb]
    lam = np.maximum(np.nan_to_num(block + sky_b[inb], nan=0.0), 0.0)
    drawn = (rng.poisson(lam) - sky_b[inb] + read_noise * rng.standard_normal(lam.shape))
    counts[:, inb] = np.where(np.isfinite(block), drawn, np.nan)
    return counts, err


def draw_ebv(rng: np.random.Generator, n: int, mean: float, maximum: float) -> Array:
    """E(B−V) of ``n`` stars: exponential of scale ``mean`` truncated at ``maximum``, mag.

    Drawn by inverting the truncated CDF, ``E = −μ ln(1 − u (1 − e^(−max/μ)))`` with ``u``
    uniform, so every star uses exactly one uniform deviate; ``mean = 0`` gives zeros (and
    draws nothing).
    """
    if mean < 0 or not maximum > 0:
        raise ValueError(f"need mean >= 0 and maximum > 0, got {mean}, {maximum}")
    if mean == 0:
        return np.zeros(n)
    u = rng.uniform(0.0, 1.0, n)
    return -mean * np.log1p(-u * -np.expm1(-maximum / mean))


def counts_per_flux(area_cm2: float = COLLECTING_AREA_CM2) -> Array:
    """e⁻ s⁻¹ per OUTPUT_GRID pixel per unit f_λ, for unit throughput (module docstring).

    Parameters
    ----------
    area_cm2 : float
        Collecting area, cm².

    Returns
    -------
    ndarray, shape (574,)
        ``A λ Δλ / (h c)``, e⁻ s⁻¹ pixel⁻¹ per erg s⁻¹ cm⁻² Å⁻¹.
    """
    if not area_cm2 > 0:
        raise ValueError(f"area_cm2 must be > 0, got {area_cm2}")
    hc = PLANCK_ERG_S * C_KMS * 1e13  # erg Å
    return area_cm2 * OUTPUT_GRID.wavelength * np.diff(OUTPUT_GRID.edges) / hc


def window_mean(values: ArrayLike) -> Array:
    """Mean over the pixels of :data:`csstflux.grids.SCALING_WINDOW`, along the last axis.

    With ``values`` = :func:`counts_per_flux`, the e⁻ s⁻¹ per pixel in the window of a unit
    f_λ: the factor between a star's ``scale`` in e⁻ (:func:`simulate_observations`) and its
    f_λ in the window.
    """
    v = np.asarray(values, dtype=float)
    return np.asarray(v[..., OUTPUT_GRID.window(*SCALING_WINDOW)].mean(axis=-1))


def uniform_positions(n_star: int, shape: Shape, rng: np.random.Generator
                      ) -> tuple[Array, Array]:
    """Star positions uniform over the detector, ``x, y`` each (n_star,), pixels."""
    ny, nx = int(shape[0]), int(shape[1])
    if min(ny, nx) < 1:
        raise ValueError(f"shape must be a positive (n_y, n_x), got {shape!r}")
    return rng.uniform(-0.5, nx - 0.5, n_star), rng.uniform(-0.5, ny - 0.5, n_star)
