"""The wavelength shape of LAMOST low-resolution errors on the model input grid.

A LAMOST LRS spectrum comes from two spectrograph arms, blue (3700–5900 Å) and red
(5700–9000 Å), joined near a dichroic; its signal-to-noise ratio changes by a factor of about
four across the 4000–7000 Å of the network input. This module describes the *relative* error
``e(λ) = σ_λ / C_λ`` (error over continuum, i.e. the error of the continuum-normalised flux at
continuum level) by a parametric profile,

    ln e(λ) = [λ < λ_j] (b₁ x + b₂ x²) + [λ ≥ λ_j] (r₀ + r₁ x + r₂ x²)
              + d · exp(−½ ((λ − λ_j) / w)²),          x = ln(λ / 5500 Å),

one quadratic per arm, the arms joined at the junction ``λ_j`` where the S/N dips by a factor
``exp(d)`` over a Gaussian of width ``w`` (Å). ``r₀`` is set by the red/blue ratio ρ (median
``e`` over :data:`RED_WINDOW` divided by median ``e`` over :data:`BLUE_WINDOW`); the whole
profile is scaled to median 1 over the grid, so that ``σ = e / SNR`` has median S/N = SNR.

Measured on the real files (``../shared/data/lamost``, the four LRS spectra: DR6/DR7 image and
DR9 coadd layouts, spectral types A2–G7, median continuum S/N 8.7, 21, 122 and 232), each read
with :func:`csstflux.io.formats.lamost.read` and prepared with
:func:`~csstflux.spectra.prepare.prepare_input` at the header's redshift (rest frame,
continuum-normalised, :data:`~csstflux.grids.INPUT_GRID`), then fitted by
:func:`fit_error_profile`. The results are :data:`LAMOST_PROFILES`:

* red/blue ratio ρ of the relative error: 0.411, 0.590, 0.606, 0.594 (median 0.592; with
  ``err/|flux|`` instead of ``err/continuum``: 0.406, 0.585, 0.605, 0.587), i.e. the red arm
  has 1.65–2.4× the S/N of the blue one;
* blue tilt: median e over 4000–4300 Å is 4.9, 2.4, 1.6 and 2.4× that over 5200–5500 Å;
  both arms are curved in ln e (b₂, r₂ = 9–30);
* junction λ_j = 5745–5935 Å (rest frame), S/N dip d = 0.22–0.75 (×1.25–2.1), w = 20–60 Å;
* the fitted profile follows the 16-pixel medians of ln e to 0.04–0.05 (rms) at S/N 122 and
  232, 0.09–0.12 at S/N 9–21, where the medians themselves are noisy.

:func:`draw_error_profiles` makes a family from these: per spectrum a random convex mixture of
the four measured arm shapes (Dirichlet weights, concentration 0.5), λ_j, d and w uniform over
the measured ranges (:data:`JUNCTION_RANGE`, :data:`DIP_RANGE`, :data:`WIDTH_RANGE`), and ρ
log-uniform over a configured range. Pure numpy, no I/O: the files are read by the caller
(``tests/test_spectra_augment.py`` rebuilds :data:`LAMOST_PROFILES` from them and checks
these constants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from csstflux.grids import INPUT_GRID
from csstflux.spectra._common import BoolArray, FloatArray

__all__ = [
    "BLUE_WINDOW",
    "DIP_RANGE",
    "JUNCTION_RANGE",
    "LAMOST_PROFILES",
    "RED_WINDOW",
    "WIDTH_RANGE",
    "ProfileFit",
    "draw_error_profiles",
    "error_profile",
    "fit_error_profile",
    "red_blue_ratio",
]

#: Pixels of the blue arm used for the red/blue ratio, Å (below any junction).
BLUE_WINDOW: tuple[float, float] = (4000.0, 5650.0)
#: Pixels of the red arm used for the red/blue ratio, Å (above any junction).
RED_WINDOW: tuple[float, float] = (5950.0, 7000.0)
#: Range of the arm junction λ_j, Å: measured 5745–5935 (searched over 5650–5950).
JUNCTION_RANGE: tuple[float, float] = (5700.0, 5950.0)
#: Range of the S/N dip at the junction, d in ln e: measured 0.22–0.75.
DIP_RANGE: tuple[float, float] = (0.2, 0.8)
#: Range of the dip's Gaussian width w, Å: measured 20–60.
WIDTH_RANGE: tuple[float, float] = (20.0, 60.0)
#: Dirichlet concentration of the mixture of measured arm shapes: below 1 favours shapes near
#: one measured spectrum; with 0.5 the blue tilt (median e over 4000–4300 Å / 5200–5500 Å) has
#: median 2.5 and 5–95 % range 1.8–4.0 (measured: 1.6, 2.4, 2.4, 4.9), with 1 only 2.0–3.6.
_MIX_CONCENTRATION = 0.5
#: Reference wavelength of x = ln(λ / 5500 Å).
_X_REF = 5500.0
#: Pixels per bin whose median ln e is fitted (robust against absorption lines).
_BIN = 16
_JUNCTION_SEARCH = np.arange(5650.0, 5950.0 + 1e-9, 5.0)
_WIDTH_SEARCH = (10.0, 20.0, 30.0, 45.0, 60.0, 80.0)


@dataclass(frozen=True)
class ProfileFit:
    """One relative-error profile (the parameters of the module docstring's formula)."""

    blue: tuple[float, float]
    """(b₁, b₂): slope and curvature of ln e in the blue arm, per x = ln(λ/5500 Å)."""
    red: tuple[float, float]
    """(r₁, r₂): slope and curvature of ln e in the red arm."""
    junction: float
    """λ_j, Å: where the arms meet and the S/N dips."""
    dip: float
    """d: height of the ln e bump at the junction (the S/N drops by exp(d))."""
    width: float
    """w: Gaussian width of the dip, Å."""
    ratio: float
    """ρ: median e over RED_WINDOW / median e over BLUE_WINDOW."""
    rms: float = 0.0
    """Rms of the fit to the binned medians of ln e (0 for a profile not fitted)."""


#: The four real LAMOST LRS spectra of ``../shared/data/lamost``, fitted by
#: :func:`fit_error_profile` (obsid 101001 G7 S/N 21, 101013 A2 S/N 8.7, 359910161 F5 S/N 122,
#: 677503031 G3 S/N 232; see the module docstring).
LAMOST_PROFILES: tuple[ProfileFit, ...] = (
    ProfileFit(blue=(2.100, 26.74), red=(-13.06, 29.88), junction=5780.0, dip=0.7532,
               width=20.0, ratio=0.4114, rms=0.094),
    ProfileFit(blue=(1.311, 16.06), red=(-8.587, 20.42), junction=5745.0, dip=0.5003,
               width=45.0, ratio=0.5902, rms=0.122),
    ProfileFit(blue=(0.9724, 9.221), red=(-4.735, 8.635), junction=5780.0, dip=0.2242,
               width=60.0, ratio=0.6055, rms=0.041),
    ProfileFit(blue=(0.3595, 11.85), red=(-6.493, 12.06), junction=5935.0, dip=0.2972,
               width=60.0, ratio=0.5941, rms=0.046),
)


def red_blue_ratio(wavelength: ArrayLike, rel_err: ArrayLike,
                   mask: ArrayLike | None = None) -> FloatArray:
    """Median relative error over :data:`RED_WINDOW` over that over :data:`BLUE_WINDOW`.

    Parameters
    ----------
    wavelength : (n_pix,) float
        Rest-frame pixel centres, Å.
    rel_err : (n_pix,) or (n_spec, n_pix) float
        Relative errors (σ/C or σ/|F|).
    mask : same shape as rel_err, bool, optional
        True = pixel left out.

    Returns
    -------
    float64, shape () or (n_spec,)
    """
    w = np.asarray(wavelength, dtype=np.float64)
    e = np.asarray(rel_err, dtype=np.float64)
    if mask is not None:
        e = np.where(np.broadcast_to(np.asarray(mask, bool), e.shape), np.nan, e)
    red = (w >= RED_WINDOW[0]) & (w <= RED_WINDOW[1])
    blue = (w >= BLUE_WINDOW[0]) & (w < BLUE_WINDOW[1])
    out = np.nanmedian(e[..., red], axis=-1) / np.nanmedian(e[..., blue], axis=-1)
    return np.asarray(out)


def _log_profile(x: FloatArray, lam: FloatArray, blue: FloatArray, red: FloatArray,
                 junction: FloatArray, dip: FloatArray, width: FloatArray) -> FloatArray:
    """ln e without r₀ and normalisation, (n, n_pix); parameters (n, 2) or (n,)."""
    is_blue = lam[np.newaxis, :] < junction[:, np.newaxis]
    arm = np.where(is_blue, blue[:, :1] * x + blue[:, 1:] * x**2,
                   red[:, :1] * x + red[:, 1:] * x**2)
    bump = np.exp(-0.5 * ((lam - junction[:, np.newaxis]) / width[:, np.newaxis]) ** 2)
    return np.asarray(arm + dip[:, np.newaxis] * bump)


def error_profile(wavelength: ArrayLike, blue: ArrayLike, red: ArrayLike, junction: ArrayLike,
                  dip: ArrayLike, width: ArrayLike, ratio: ArrayLike) -> FloatArray:
    """Relative-error profiles e(λ), median 1 over ``wavelength`` (module docstring formula).

    Parameters
    ----------
    wavelength : (n_pix,) float
        Rest-frame pixel centres, Å; must reach into both :data:`BLUE_WINDOW` and
        :data:`RED_WINDOW`.
    blue, red : (2,) or (n_spec, 2) float
        (slope, curvature) of ln e per arm.
    junction, dip, width, ratio : float or (n_spec,) float
        λ_j (Å, within [BLUE_WINDOW[1], RED_WINDOW[0]] so the ratio is exact), d, w (Å) and ρ.

    Returns
    -------
    (n_spec, n_pix) float64
        ``e``, positive, median 1 per row; exactly ρ = median over RED_WINDOW / median over
        BLUE_WINDOW.
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    b2, r2 = np.atleast_2d(np.asarray(blue, float)), np.atleast_2d(np.asarray(red, float))
    n = max(b2.shape[0], r2.shape[0], *(np.size(a) for a in (junction, dip, width, ratio)))
    junc, d, w, rho = (np.broadcast_to(np.asarray(a, float), (n,))
                       for a in (junction, dip, width, ratio))
    if np.any((junc < BLUE_WINDOW[1]) | (junc > RED_WINDOW[0])):
        raise ValueError(f"junction must lie in {BLUE_WINDOW[1]}–{RED_WINDOW[0]} Å")
    if not (np.all(rho > 0) and np.all(w > 0)):
        raise ValueError("ratio and width must be positive")
    x = np.log(lam / _X_REF)
    log_e = _log_profile(x, lam, np.broadcast_to(b2, (n, 2)), np.broadcast_to(r2, (n, 2)),
                         junc, d, w)
    red_win = (lam >= RED_WINDOW[0]) & (lam <= RED_WINDOW[1])
    blue_win = (lam >= BLUE_WINDOW[0]) & (lam < BLUE_WINDOW[1])
    e = np.exp(log_e)
    # scaling the red arm scales the red window's median (all of it lies beyond λ_j)
    now = np.median(e[:, red_win], axis=1) / np.median(e[:, blue_win], axis=1)
    e = e * np.where(lam >= junc[:, np.newaxis], (rho / now)[:, np.newaxis], 1.0)
    return np.asarray(e / np.median(e, axis=1, keepdims=True))


def draw_error_profiles(rng: np.random.Generator, n: int,
                        ratio_range: tuple[float, float] = (0.35, 1.0),
                        junction: ArrayLike | None = None,
                        wavelength: ArrayLike = INPUT_GRID.wavelength) -> FloatArray:
    """Random LAMOST-like relative-error profiles (see the module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        Number of profiles.
    ratio_range : (lo, hi)
        ρ is drawn log-uniformly in this range (lo = hi: fixed).
    junction : (n,) float, optional
        λ_j per profile, Å (e.g. shared with a junction flux artefact); default uniform over
        :data:`JUNCTION_RANGE`.
    wavelength : (n_pix,) float
        Pixel centres, Å (the input grid).

    Returns
    -------
    (n, n_pix) float64, median 1 per row.
    """
    lo, hi = ratio_range
    if not 0 < lo <= hi:
        raise ValueError(f"ratio_range must be 0 < lo <= hi, got {ratio_range}")
    mix = rng.dirichlet(np.full(len(LAMOST_PROFILES), _MIX_CONCENTRATION), size=n)
    blue = mix @ np.array([p.blue for p in LAMOST_PROFILES])
    red = mix @ np.array([p.red for p in LAMOST_PROFILES])
    rho = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    dip = rng.uniform(*DIP_RANGE, n)
    width = rng.uniform(*WIDTH_RANGE, n)
    junc = rng.uniform(*JUNCTION_RANGE, n) if junction is None else junction
    return error_profile(wavelength, blue, red, junc, dip, width, rho)


def fit_error_profile(wavelength: ArrayLike, error_norm: ArrayLike,
                      mask: ArrayLike | None = None) -> ProfileFit:
    """Fit the profile of the module docstring to one spectrum's relative errors.

    Medians of ln e over blocks of 16 pixels (blocks with at least 8 good pixels) are fitted
    by least squares: λ_j on a 5 Å grid over 5650–5950 Å and w over (10, 20, 30, 45, 60, 80) Å
    by search, the other parameters linearly.

    Parameters
    ----------
    wavelength : (n_pix,) float
        Rest-frame pixel centres, Å, covering both ratio windows (e.g. the input grid).
    error_norm : (n_pix,) float
        1σ error of the continuum-normalised flux (σ/C), as
        :func:`~csstflux.spectra.prepare.prepare_input` returns it.
    mask : (n_pix,) bool, optional
        True = pixel left out; non-finite or non-positive errors are left out too.

    Returns
    -------
    ProfileFit
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    e = np.asarray(error_norm, dtype=np.float64)
    bad: BoolArray = ~np.isfinite(e) | (e <= 0)
    if mask is not None:
        bad = bad | np.asarray(mask, dtype=bool)
    nb = lam.size // _BIN
    log_e = np.where(bad, np.nan, np.log(np.where(bad, 1.0, e)))[:nb * _BIN].reshape(nb, _BIN)
    keep = np.sum(~bad[:nb * _BIN].reshape(nb, _BIN), axis=1) >= _BIN // 2
    if keep.sum() < 10:
        raise ValueError("too few good pixels to fit an error profile")
    lam_b = np.exp(np.log(lam[:nb * _BIN]).reshape(nb, _BIN).mean(axis=1))[keep]
    y = np.nanmedian(log_e[keep], axis=1)
    x = np.log(lam_b / _X_REF)
    best: tuple[float, float, float, FloatArray] | None = None
    for lam_j in _JUNCTION_SEARCH:
        b = lam_b < lam_j
        for w in _WIDTH_SEARCH:
            a = np.stack([b, b * x, b * x**2, ~b, ~b * x, ~b * x**2,
                          np.exp(-0.5 * ((lam_b - lam_j) / w) ** 2)], axis=1).astype(float)
            coef = np.linalg.lstsq(a, y, rcond=None)[0]
            ss = float(np.sum((a @ coef - y) ** 2))
            if best is None or ss < best[0]:
                best = (ss, float(lam_j), w, coef)
    assert best is not None
    ss, junction, width, c = best
    return ProfileFit(blue=(float(c[1]), float(c[2])), red=(float(c[4]), float(c[5])),
                      junction=junction, dip=float(c[6]), width=width,
                      ratio=float(red_blue_ratio(lam, e, bad)), rms=float(np.sqrt(ss / y.size)))
