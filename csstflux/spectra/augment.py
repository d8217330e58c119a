"""Training augmentations: what, besides noise, separates a prepared LAMOST input from a clean one.

Each acts on clean continuum-normalised inputs on :data:`~csstflux.grids.INPUT_GRID`
(``(n_spec, 2238)``) and is configured, on or off, by :class:`AugmentConfig`:

* **Residual radial velocity** (:func:`shift_rv`): the catalogue velocity that put the spectrum
  in its rest frame is off by ``v`` (30 km/s moves the predicted SED by about 1σ). The input is
  moved by the Doppler factor of :func:`~csstflux.spectra.doppler.doppler_factor` (a feature at
  λ goes to λ(1 + z) ≈ λ(1 + v/c)) and rebinned onto the grid with the flux-conserving
  :func:`~csstflux.spectra.resample.resample`, which moves a line's centroid by ln(1 + z) to
  1e-4 of the shift (its overlaps are linear in λ within a pixel) and, for a shift of a
  fraction q of a pixel (75 km/s), smooths by a two-pixel box of variance q(1 − q) pixel². The
  spectrum is extended by its edge values first, so no edge pixel is lost.
* **Resolution** (:func:`degrade_lsf`): LAMOST has R ≈ 1800, the inputs R = 2000. The
  input is convolved with the discrete Gaussian kernel T(k; t) = e^{−t} I_k(t) (modified Bessel
  I_k), whose variance is exactly t = (σ/Δ)² pixel² with σ = FWHM_TO_SIGMA · sqrt(1/R² −
  1/2000²) in ln λ (:func:`~csstflux.spectra.degrade.kernel_sigma`) and Δ the grid step: a
  line's variance grows by exactly σ². For R = 1800, σ = 0.41 pixel; the pixel-integrated
  kernel of :func:`~csstflux.spectra.degrade.degrade_resolution` adds 0.225 pixel² there
  instead of 0.169 (R ≈ 1750), because at a sub-pixel width the pixel box no longer averages
  out, hence the separate kernel.
* **Arm-junction artefact** (:func:`junction_artefact`): a step ``a`` (red/blue − 1) and a
  Gaussian bump ``b`` in the flux where the arms are joined, seen through the 51-pixel
  continuum normalisation: the input is multiplied by ``T / moving_average(T)``,
  ``T = 1 + a H(λ − λ_j) + b exp(−½((λ − λ_j)/w)²)``. In the real files
  (``../shared/data/lamost``, prepared as in :mod:`csstflux.spectra.error_profile`) the mean
  normalised flux over the 25 pixels above the junction minus that over the 25 below (≈ a/2
  for a step) is +0.005 and +0.006 at S/N 122 and 232 (noise 0.003, 0.002; absorption lines
  alone give 0.012–0.016 rms elsewhere), +0.03 ± 0.03 and +0.001 ± 0.06 at S/N 21 and 9:
  steps of about +1 %, not significant against the line scatter (±2.5 % in a), so |a| of a
  few per cent at most. A bump could not be separated from lines; its default amplitude in
  ``jobs/train-default.toml`` (±1 %) is a guess.
* **Masked runs** (:func:`masked_runs`): bad columns, sky-line residuals and cosmic rays leave
  runs of masked pixels. A Poisson number of runs per spectrum, lengths log-uniform, masked
  afterwards by the predictor's convention
  (:func:`csstflux.model.predictor.fill_masked`: flux 1, error 1).

:func:`augment` draws and applies the enabled ones in that order, each from its own child
generator (``rng.spawn``), so switching one on or off does not change the others' draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ive

from csstflux.constants import C_KMS
from csstflux.grids import INPUT_GRID, LogGrid
from csstflux.spectra._common import BoolArray, FloatArray, as_batch, clean, unbatch
from csstflux.spectra.degrade import TRUNCATE_SIGMA, kernel_sigma
from csstflux.spectra.doppler import doppler_factor
from csstflux.spectra.error_profile import JUNCTION_RANGE, WIDTH_RANGE
from csstflux.spectra.normalise import moving_average
from csstflux.spectra.resample import resample

__all__ = ["AugmentConfig", "augment", "degrade_lsf", "junction_artefact", "masked_runs",
           "shift_rv"]

_RV_DISTRIBUTIONS = ("gaussian", "uniform")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations of training inputs (a ``[train.augment]`` table); defaults: all off."""

    rv_jitter_kms: float = 0.0
    """Residual radial velocity, km/s: σ of a Gaussian or half-width of a uniform draw; 0 off."""
    rv_distribution: str = "gaussian"
    """``"gaussian"`` or ``"uniform"``."""
    resolution: tuple[float, float] | None = None
    """Range of the resolving power R drawn uniformly per spectrum and reached with
    :func:`degrade_lsf` (values ≥ 2000 leave a spectrum unchanged); None off."""
    junction_step: float = 0.0
    """Largest |a| of the junction step, drawn uniformly in ±junction_step; 0 off."""
    junction_bump: float = 0.0
    """Largest |b| of the junction bump, drawn uniformly in ±junction_bump; 0 off."""
    mask_runs: float = 0.0
    """Mean number of masked-pixel runs per spectrum (Poisson); 0 off."""
    mask_run_length: tuple[int, int] = (1, 40)
    """Shortest and longest run, pixels (log-uniform in between)."""

    def __post_init__(self) -> None:
        if not (self.rv_jitter_kms >= 0 and self.junction_step >= 0 and self.junction_bump >= 0
                and self.mask_runs >= 0):
            raise ValueError("rv_jitter_kms, junction_step, junction_bump and mask_runs must be "
                             ">= 0")
        if self.rv_distribution not in _RV_DISTRIBUTIONS:
            raise ValueError(f"rv_distribution must be one of {_RV_DISTRIBUTIONS}, got "
                             f"{self.rv_distribution!r}")
        if self.resolution is not None and not (len(self.resolution) == 2
                                                and 0 < self.resolution[0] <= self.resolution[1]):
            raise ValueError(f"resolution must be (lo, hi) with 0 < lo <= hi, got "
                             f"{self.resolution}")
        lo, hi = self.mask_run_length
        if not 1 <= lo <= hi:
            raise ValueError(f"mask_run_length must be (lo, hi) with 1 <= lo <= hi, got "
                             f"{self.mask_run_length}")

    @property
    def enabled(self) -> bool:
        """True when any augmentation is on."""
        return bool(self.rv_jitter_kms or self.resolution or self.junction_step
                    or self.junction_bump or self.mask_runs)


def shift_rv(flux: ArrayLike, rv_kms: ArrayLike, mask: ArrayLike | None = None,
             grid: LogGrid = INPUT_GRID) -> tuple[FloatArray, BoolArray]:
    """Move spectra on ``grid`` by a radial velocity (features go from λ to λ(1 + z)).

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Spectra on ``grid`` (any unit; continuum-normalised in training).
    rv_kms : float or (n_spec,) float
        Velocity, km/s, positive = redshift.
    mask : same shape as flux, bool, optional
        True = bad pixel.
    grid : LogGrid
        The grid of ``flux``.

    Returns
    -------
    flux : same shape, float64
        Shifted spectra on ``grid``, the edge values extended beyond the ends; 0.0 where masked.
    mask : same shape, bool
        True where less than half an output pixel is covered by good shifted pixels.
    """
    f2, squeeze = as_batch(flux)
    f2, _, bad = clean(f2, None, mask)
    v = np.broadcast_to(np.asarray(rv_kms, dtype=np.float64), (f2.shape[0],))
    pad = int(np.ceil(np.max(np.abs(v), initial=0.0) / (C_KMS * grid.dlnlambda))) + 1
    lam = grid.start * np.exp(grid.dlnlambda * np.arange(-pad, grid.n + pad))
    lam_shifted = lam[np.newaxis, :] * doppler_factor(v)[:, np.newaxis]
    out, _, m = resample(lam_shifted, np.pad(f2, ((0, 0), (pad, pad)), mode="edge"), grid,
                         mask=np.pad(bad, ((0, 0), (pad, pad)), mode="edge"))
    return unbatch(out, squeeze), unbatch(m, squeeze)


def degrade_lsf(flux: ArrayLike, resolution: ArrayLike, mask: ArrayLike | None = None,
                grid: LogGrid = INPUT_GRID, min_weight: float = 0.5
                ) -> tuple[FloatArray, BoolArray]:
    """Lower the resolving power of spectra on ``grid`` (R = ``grid.resolution``) to ``resolution``.

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Spectra on ``grid``.
    resolution : float or (n_spec,) float
        Target R; values ≥ ``grid.resolution`` leave their spectrum unchanged.
    mask : same shape as flux, bool, optional
        True = bad pixel; left out, the kernel renormalised over the good pixels it covers.
    grid : LogGrid
        The grid of ``flux``, log-uniform, so one kernel serves a whole spectrum.
    min_weight : float
        An output pixel is masked when good pixels carry less than this fraction of its kernel.

    Returns
    -------
    flux : same shape, float64
        Convolved with the discrete Gaussian of variance (σ/Δ)² pixel² (module docstring);
        0.0 where masked.
    mask : same shape, bool
    """
    f2, squeeze = as_batch(flux)
    f2, _, bad = clean(f2, None, mask)
    n_spec, n_pix = f2.shape
    r = np.broadcast_to(np.asarray(resolution, dtype=np.float64), (n_spec,))
    if not (np.all(np.isfinite(r)) and np.all(r > 0)):
        raise ValueError("resolution must be finite and positive")
    t = (kernel_sigma(r, grid.resolution) / grid.dlnlambda) ** 2
    half = int(np.ceil(TRUNCATE_SIGMA * np.sqrt(np.max(t)))) + 1 if np.any(t > 0) else 0
    good = (~bad).astype(np.float64)
    gf = good * f2
    num = np.zeros_like(f2)
    den = np.zeros_like(f2)
    for k in range(-half, half + 1):
        w = ive(abs(k), t)[:, np.newaxis]
        out = slice(max(0, -k), n_pix - max(0, k))   # output i, source i + k
        src = slice(max(0, k), n_pix + min(0, k))
        num[:, out] += w * gf[:, src]
        den[:, out] += w * good[:, src]
    bad_out = bad | (den < min_weight)
    res = np.where(bad_out, 0.0, num / np.where(bad_out, 1.0, den))
    return unbatch(res, squeeze), unbatch(bad_out, squeeze)


def junction_artefact(flux: ArrayLike, junction: ArrayLike, step: ArrayLike, bump: ArrayLike,
                      width: ArrayLike, grid: LogGrid = INPUT_GRID) -> FloatArray:
    """Multiply continuum-normalised spectra by a normalised arm-junction step and bump.

    Parameters
    ----------
    flux : (n_pix,) or (n_spec, n_pix) float
        Continuum-normalised spectra on ``grid``.
    junction : float or (n_spec,) float
        λ_j, Å.
    step : float or (n_spec,) float
        a: the flux redward of λ_j is (1 + a) times the blueward flux.
    bump : float or (n_spec,) float
        b: relative height of a Gaussian bump at λ_j.
    width : float or (n_spec,) float
        Gaussian σ of the bump, Å.

    Returns
    -------
    same shape as flux, float64
        ``flux · T / moving_average(T)`` (module docstring), T ≡ 1 where a = b = 0.
    """
    f2, squeeze = as_batch(flux)
    n = f2.shape[0]
    j, a, b, w = (np.broadcast_to(np.asarray(x, np.float64), (n,))[:, np.newaxis]
                  for x in (junction, step, bump, width))
    lam = grid.wavelength[np.newaxis, :]
    t = 1.0 + a * (lam >= j) + b * np.exp(-0.5 * ((lam - j) / w) ** 2)
    if np.any(t <= 0):
        raise ValueError("junction step or bump makes the flux non-positive")
    cont, _ = moving_average(t)
    return unbatch(f2 * (t / cont), squeeze)


def masked_runs(rng: np.random.Generator, n_spec: int, n_pix: int, mean_runs: float,
                length: tuple[int, int]) -> BoolArray:
    """Random runs of masked pixels.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_spec, n_pix : int
        Shape of the mask.
    mean_runs : float
        Mean number of runs per spectrum (Poisson).
    length : (lo, hi) int
        Run lengths, pixels, log-uniform over [lo, hi]; runs are cut at the spectrum's end
        and may overlap.

    Returns
    -------
    (n_spec, n_pix) bool
        True = masked.
    """
    counts = rng.poisson(mean_runs, n_spec)
    total = int(counts.sum())
    row: NDArray[np.int64] = np.repeat(np.arange(n_spec, dtype=np.int64), counts)
    start = rng.integers(0, n_pix, total)
    lo, hi = length
    size = np.floor(np.exp(rng.uniform(np.log(lo), np.log(hi + 1), total))).astype(np.int64)
    size = np.clip(size, lo, hi)
    diff: NDArray[np.int64] = np.zeros((n_spec, n_pix + 1), np.int64)
    np.add.at(diff, (row, start), 1)
    np.add.at(diff, (row, np.minimum(start + size, n_pix)), -1)
    return np.asarray(np.cumsum(diff[:, :-1], axis=1) > 0)


def augment(flux: ArrayLike, mask: ArrayLike | None, cfg: AugmentConfig,
            rng: np.random.Generator, junction: ArrayLike | None = None,
            grid: LogGrid = INPUT_GRID) -> tuple[FloatArray, BoolArray]:
    """Draw and apply the augmentations ``cfg`` enables, in the module docstring's order.

    Parameters
    ----------
    flux : (n_spec, n_pix) float
        Clean continuum-normalised inputs on ``grid``.
    mask : (n_spec, n_pix) bool or None
        True = bad pixel.
    cfg : AugmentConfig
    rng : numpy.random.Generator
        Parent generator; each augmentation draws from its own ``rng.spawn`` child.
    junction : (n_spec,) float, optional
        Arm-junction wavelengths, Å (to share them with the noise profile); default uniform
        over :data:`~csstflux.spectra.error_profile.JUNCTION_RANGE`.

    Returns
    -------
    flux : (n_spec, n_pix) float64
        0.0 where masked.
    mask : (n_spec, n_pix) bool
        The input mask, grown by the shift and the convolution, plus the masked runs.
    """
    f, squeeze = as_batch(flux)
    f, _, bad = clean(f, None, mask)
    n = f.shape[0]
    r_rv, r_lsf, r_junc, r_mask = rng.spawn(4)
    if cfg.rv_jitter_kms > 0:
        s = cfg.rv_jitter_kms
        v = (s * r_rv.standard_normal(n) if cfg.rv_distribution == "gaussian"
             else r_rv.uniform(-s, s, n))
        f, bad = shift_rv(f, v, bad, grid)
    if cfg.resolution is not None:
        r = r_lsf.uniform(*cfg.resolution, n)
        f, bad = degrade_lsf(f, r, bad, grid)
    if cfg.junction_step > 0 or cfg.junction_bump > 0:
        j = r_junc.uniform(*JUNCTION_RANGE, n) if junction is None else junction
        a = r_junc.uniform(-cfg.junction_step, cfg.junction_step, n)
        b = r_junc.uniform(-cfg.junction_bump, cfg.junction_bump, n)
        w = r_junc.uniform(*WIDTH_RANGE, n)
        f = np.where(bad, 0.0, junction_artefact(f, j, a, b, w, grid))
    if cfg.mask_runs > 0:
        bad = bad | masked_runs(r_mask, n, f.shape[1], cfg.mask_runs, cfg.mask_run_length)
        f = np.where(bad, 0.0, f)
    return unbatch(f, squeeze), unbatch(bad, squeeze)
