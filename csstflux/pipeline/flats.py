"""Simulated slitless exposures of a field, and the 3D flat built from them on Dask.

:func:`simulate` observes the stars of a predictions store through a known flat per detector
(:class:`csstflux.core.flatsim.TrueFlat`) and writes one exposure file per pointing plus the
truth (:mod:`csstflux.io.exposures`). :func:`build_flat` cross-matches each exposure's
sources to the store, turns each exposure into per-detector normal equations of the flat fit
(one Dask task per exposure, :func:`exposure_equations`), sums them by a pairwise tree
reduction of futures (only the small normal equations travel, never star arrays), solves
per detector and wavelength and normalises (:func:`csstflux.core.flatfit.solve_flat`).

Repeated stars. A star observed in ``k`` exposures on a detector carries the same SED error
in all of them; the fit weights account for it (:mod:`csstflux.core.flatfit`, "Repeated
observations"). Before the fit a census pass (one task per exposure, ``flat-census-*``, tree
reduced on the workers) counts, per detector, the exposures each matched store star enters
(:class:`csstflux.core.flatfit.StarRepeats`: star ids and counts, 16 bytes per star, never
spectra); the equation tasks take the census future and look their stars up in it. The
``reduced_chi2`` of the solutions is χ² over its expectation for a correct model,
``χ²/(Σ w σ_r² − n_terms)``: χ²/dof when no star repeats, and still ≈ 1 when they do.

Sigma clipping is done in passes over the exposures: after a pass the driver solves and sends
the (small) polynomial coefficients back to the tasks; a task drops the ratios more than
``nsigma`` marginal σ from that model (a ratio clipped against an early, outlier-pulled model
comes back once the model moves away from it) and also counts, per band pixel, the ratios
whose kept/clipped status differs from the pass before (it gets that pass's model too: no
state is kept between passes). The loop stops when no status changed in any exposure: the
masks, not just the star counts, are then a fixed point (``provenance["clip_converged"]``;
None when ``max_iter`` is 0); otherwise it stops after ``max_iter`` clipping passes, and
``provenance["clip_changed_last"]`` says how many ratios the last pass still moved. Noisy
simulations with 5 % blended stars and 0.5 % cosmic-ray pixels needed 5 clipping passes
(the last one changing nothing); with 3, 0.2 % of the ratios were still moving and the
flat's z-scores against the truth had the same std (0.978).

Throughputs. A directory of CESS ``{GU,GV,GI}.Throughput.1st.fits`` curves, averaged onto
:data:`csstflux.grids.OUTPUT_GRID`; without one, the documented fallback, a top-hat of
:data:`TOPHAT_THROUGHPUT` over each band of :data:`csstflux.grids.BANDS`, named in a warning
and in each exposure's ``throughput_source`` (:func:`band_throughputs`). The curve used is
written into each exposure file, and :func:`build_flat` uses that recorded curve.

Simulated stars. Each store star in the cone gets a true relative SED drawn around its
prediction (:func:`csstflux.core.flatsim.draw_true_seds`), a ``scale`` log-uniform in
``scale_range`` (e⁻ s⁻¹ per output pixel in the scaling window for unit throughput, before
reddening) and an E(B−V) (exponential, mean ``ebv_mean``, truncated at ``ebv_max``; 0 by
default). In physical units (the default) its observed SED is
``f_λ = s · sed · 10^(−0.4 E k(λ))`` with ``s = scale / c̄`` its intrinsic f_λ in the window
(c̄: :func:`csstflux.core.flatsim.counts_per_flux` averaged there; 10–1000 e⁻ s⁻¹ is
8.2e-17–8.2e-15 erg s⁻¹ cm⁻² Å⁻¹, AB ≈ 19.1–14.1 at 5556 Å) and k of F99, R_V 3.1, and the
expected counts are ``f_λ · counts_per_flux · throughput · flat · t``; ``photometry.csv``
holds its synthetic sdss_u..z magnitudes in the catalogue system with Gaussian errors
(stated σ 0.03, 0.02, 0.02, 0.02, 0.03 mag, plus an unstated 0.02 mag: the anchor's floor).
``units="relative"`` is the simulation before physical units (rates ∝ the relative SED, no
photometry). The reddening and the photometry draw from their own random stream: with
relative units and E(B−V) = 0 the exposures are those of that version, bit for bit, and
physical units only multiply the expected counts by ``counts_per_flux / c̄``. Each exposure
records ``scale``, ``ebv``, the law and ``counts_per_flux`` (:mod:`csstflux.io.exposures`).

Traces (``simulate(traces=True)``, the default). Each star's reference position (where its
undispersed image falls) is placed by the pointing's WCS; the instrument model
(:mod:`csstflux.core.traces`, the shipped ``slitless_instrument.toml`` or ``instrument``)
chooses its grating and puts the light of each output pixel's wavelength at ``x(λ), y(λ)``
on its first-order trace. Sources are the stars with their reference position on the
detector or a trace point on it; trace points off the detector are cut (NaN counts and
positions there). For each source, with ``r(λ)`` its R = 200 e⁻ s⁻¹ per pixel (SED, scale,
reddening, photon conversion, throughput):

1. the flat is applied at the trace, ``r(λ) f(x(λ), y(λ), λ) t``;
2. the spectrum is taken to the band's resolution, :data:`csstflux.grids.BAND_RESOLUTION`
   (GU 225, GV and GI 250; the one source of truth): the unique spectrum on the output grid
   that :func:`csstflux.spectra.degrade.match_band_resolution` brings back to it
   (:func:`to_band_resolution`; a well-conditioned banded solve). The predicted SEDs and
   their truth are R = 200 spectra and nothing finer exists to convolve; build-flat's
   matching then returns step 1's spectrum exactly. Applying the flat before the change of
   resolution rather than after leaves out the smoothing of the flat's own chromatic
   variation by the R = 200 kernel (< 1e-6 inside a band; up to ~1e-4 in the two pixels at
   each band edge, where the kernel is one-sided): an effect of any R = 200 comparison,
   not simulated;
3. the neighbours' light in its aperture is added (:func:`csstflux.core.contamination
   .contamination`, from the other sources' expected counts; off-detector sources whose
   zeroth order falls in a gap are included, zeroth orders are not), recorded per pixel as
   ``contamination`` (fraction of the counts) and flagged ``contaminated`` above the model's
   ``contamination_limit`` (1e-4; 2.0 % of the pixels at 100 stars per detector, 3.6 % at
   400, 9.0 % at 1000);
4. sky and detector noise as before (:func:`csstflux.core.flatsim.add_noise`).

The exposure records the traces (``x_trace``, ``y_trace``), the contamination and its mask,
the extraction's resolution and the instrument model with its fingerprint
(:mod:`csstflux.io.exposures`). With ``traces=False`` every wavelength is recorded at the
star's position at R = 200, as before traces (bit for bit).

Build with traces. :func:`build_flat` takes each exposure's positions per source and
wavelength (its traces; one position per source for exposures without), brings each
extracted spectrum to the standards' R = 200 before forming ratios (:func:`match_extracted`;
pixels within the kernel's reach of a cut are left out) and leaves out CONTAMINATED pixels
and those the matching kernel mixes them into (:func:`extracted_spectra`), counted per
detector in ``provenance["contaminated_excluded"]``. Noise-free traced simulations recover
an order-2 flat to 4e-8 (float32 counts).

Star scale (``star_scale``): the predicted spectrum each ratio divides by.

- ``"known"``: the relative SED times the source's recorded ``scale``, reddening and photon
  conversion (:func:`known_rate`; simulations only): the whole flat is recovered.
- ``"anchored"``: the store's ``sed_abs`` (``csstflux anchor``: the SED tied to photometry,
  observed frame, erg s⁻¹ cm⁻² Å⁻¹) times the exposure's recorded ``counts_per_flux``; its
  ``sed_abs_err`` (relative SED, scale and E(B−V) errors) is the star's SED error, common to
  all its exposures. Stars flagged ``NO_PHOTOMETRY`` or ``PHOT_INCONSISTENT`` or without a
  finite ``sed_abs`` are left out and counted (``provenance["unanchored"]``, sources per
  reason). The whole flat is recovered without any truth. A store never anchored, or
  exposures in relative units, are refused before any task runs.
- ``"median"``: each star's ratios divided by their band median: only the chromatic part of
  the flat is recovered (see :mod:`csstflux.core.flatfit`). It ignores reddening: a reddened
  star's own 10^(−0.4 E k) tilt across the band is unmodelled scatter (simulations with
  E(B−V) exponential of mean 0.1 moved two nights' median flats apart by up to 0.18, against
  < 0.05 unreddened), so simulate with ``ebv_mean=0`` for it.

Measured on the chain simulate → anchor → build (12 detectors × 40 stars, 3 dithered
pointings, E(B−V) mean 0.1, 0.5 % SED errors correlated over 80 pixels, top-hat 0.3, with
traces; ``tests/test_flats_anchored.py``, seeds 1–8, all stars photometered): z = (fit −
truth)/σ has std 0.875–1.050 (mean 0.957) anchored and 0.953–1.031 (mean 0.996) known;
rms(fit/truth − 1) per band anchored GU 2.2–3.2e-2, GV 1.1–1.4e-2, GI 1.0–1.5e-2 against
known 0.9–1.2e-2, 5.6–7.1e-3, 4.7–6.1e-3; 0.04–0.9 % of the pixels CONTAMINATED. (Before
traces: anchored 0.867–0.995, known 0.971–1.034.) The anchored errors are conservative (the
anchor's E(B−V) bound at 0 and the quadrature sum of anticorrelated errors in
``sed_abs_err``), more so for larger SED errors: 1 % gives a z std of 0.85–0.91 (measured
before traces). ``csstflux flat-precision --star-scale anchored``
gives the single-exposure Monte Carlo numbers (:mod:`csstflux.core.flatmc`).
"""

from __future__ import annotations

import functools
import operator
import os
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from distributed import Client
from numpy.typing import ArrayLike, NDArray

from csstflux._version import __version__
from csstflux.constants import FWHM_TO_SIGMA
from csstflux.core.contamination import contamination
from csstflux.core.crossmatch import MatchStatus, angular_separation, match_nearest
from csstflux.core.detectors import (
    PIXEL_SCALE_ARCSEC,
    SLITLESS_FOCAL_PLANE,
    Detector,
    sky_to_pixel,
)
from csstflux.core.flatfit import (
    FlatSolution,
    StarRepeats,
    band_pixels,
    flux_ratio_variances,
    outliers,
    solve_flat,
)
from csstflux.core.flatsim import (
    COLLECTING_AREA_CM2,
    TrueFlat,
    add_noise,
    counts_per_flux,
    draw_ebv,
    draw_true_seds,
    simulate_observations,
    window_mean,
)
from csstflux.core.polyfit2d import (
    DEFAULT_ORDER,
    NormalEquations,
    n_terms,
    normal_equations,
    solve,
)
from csstflux.core.traces import SlitlessInstrument, TraceGeometry, load_instrument, on_grid
from csstflux.errors import ConfigError, CsstFluxError, GridMismatchError
from csstflux.flags import Flag
from csstflux.grids import BAND_RESOLUTION, BANDS, OUTPUT_GRID
from csstflux.io.anchorstore import anchor_attrs
from csstflux.io.csst_throughput import load_band_throughputs, throughput_on_grid
from csstflux.io.exposures import (
    Exposure,
    list_exposures,
    read_exposure,
    read_exposure_attrs,
    write_exposure,
    write_photometry,
    write_truth,
)
from csstflux.io.predstore import open_predictions, read_attrs
from csstflux.photometry import SyntheticPhotometry, extinction_k, load_bands, redden
from csstflux.photometry.anchor import Anchor, AnchorConfig, fit_anchor
from csstflux.spectra.degrade import match_band_resolution

Array = NDArray[np.float64]
_A = TypeVar("_A", NDArray[np.float64], NDArray[np.int64], int)
StarScaleMode = Literal["median", "known", "anchored"]
#: The ``star_scale`` modes of :func:`build_flat` (module docstring).
STAR_SCALES: tuple[str, ...] = ("median", "known", "anchored")
SimUnits = Literal["physical", "relative"]
#: Reddening of simulated stars: extinction law and R_V (csstflux.photometry.extinction).
EXTINCTION_LAW, EXTINCTION_RV = "F99", 3.1
#: Default E(B−V) distribution of simulated stars: exponential mean and truncation, mag.
EBV_MEAN, EBV_MAX = 0.0, 0.5
#: Photometry of simulated fields: bands and their stated 1σ, mag (SDSS-like at r ≈ 17).
PHOT_BANDS: tuple[str, ...] = ("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z")
PHOT_SIGMA: tuple[float, ...] = (0.03, 0.02, 0.02, 0.02, 0.03)
#: Unstated per-band scatter of simulated photometry, mag: the anchor's error floor.
PHOT_FLOOR: float = AnchorConfig().floor_mag
#: Why a matched source is left out of an anchored build (keys of ``unanchored``).
UNANCHORED_KEYS = ("no_photometry", "phot_inconsistent", "no_sed_abs")
#: Top-hat first-order throughput used when no curves are given (dimensionless).
TOPHAT_THROUGHPUT = 0.3
#: One detector of each band: the default of :func:`simulate`.
DEFAULT_DETECTORS: tuple[str, ...] = tuple(SLITLESS_FOCAL_PLANE.band(b)[0].name
                                           for b in ("GU", "GV", "GI"))
MATCH_KEYS = tuple(s.name.lower() for s in MatchStatus)


class EmptyResultError(CsstFluxError):
    """Valid inputs that would produce nothing useful: no star on any simulated detector, no
    exposure in the folder, no exposure source matched to the store.

    The CLI exits 1 ("failed", :mod:`csstflux.cli.errors`): the run cannot deliver what was
    asked for, and a scheduler must see that. Not 2 (no option or key is wrong as such: the
    field, the folder or the store simply hold nothing that fits) and not 3 ("nothing to do"
    means the work is already done, as a nightly version that exists).
    """


def band_throughputs(directory: str | os.PathLike[str] | None
                     ) -> tuple[dict[str, Array], str]:
    """Band → throughput on OUTPUT_GRID (574,), and a description of the source.

    Without a directory the simulation still runs, on the documented fallback, a top-hat of
    :data:`TOPHAT_THROUGHPUT` over each band, and says so in a ``UserWarning`` (the CLI prints
    it) and in every exposure's ``throughput_source``: a simulation's throughput is a choice,
    not a missing input, and build-flat uses the curve each exposure recorded.
    """
    if directory is None:
        warnings.warn(f"no throughput curves given (--throughputs): the simulated first-order "
                      f"throughput is the top-hat fallback, {TOPHAT_THROUGHPUT} over each band "
                      "of csstflux.grids.BANDS; give the folder of the CESS "
                      "{GU,GV,GI}.Throughput.1st.fits curves for the real ones", stacklevel=2)
        wave = OUTPUT_GRID.wavelength
        return ({b: np.where(BANDS[b].mask(wave), TOPHAT_THROUGHPUT, 0.0) for b in BANDS},
                f"tophat {TOPHAT_THROUGHPUT}")
    curves = load_band_throughputs(directory)
    return {b: throughput_on_grid(w, s) for b, (w, s) in curves.items()}, str(directory)


def kernel_reach(resolution: float) -> int:
    """Output pixels either side within which the R → 200 matching kernel mixes pixels:
    ``ceil(3σ)`` of its Gaussian (σ in ln λ = FWHM_TO_SIGMA √(1/200² − 1/R²); 2 pixels in
    every band; the weight beyond is < 1e-5)."""
    r0 = OUTPUT_GRID.resolution
    if not resolution > r0:
        return 0
    sig = FWHM_TO_SIGMA * np.sqrt(1.0 / r0**2 - 1.0 / resolution**2) / OUTPUT_GRID.dlnlambda
    return int(np.ceil(3.0 * sig))


@functools.lru_cache(maxsize=16)
def _matching_operator(band: str, pixels: tuple[int, ...]) -> Array:
    """(n_b, n_b) matrix ``A`` of :func:`csstflux.spectra.degrade.match_band_resolution` on a
    spectrum defined on ``pixels`` (NaN elsewhere): ``F_200 = A @ F_band``."""
    inb = np.zeros(OUTPUT_GRID.n, dtype=bool)
    inb[list(pixels)] = True
    eye = np.full((inb.sum(), OUTPUT_GRID.n), np.nan)
    eye[:, inb] = np.eye(int(inb.sum()))
    out, _ = match_band_resolution(eye, band)
    return np.ascontiguousarray(np.nan_to_num(out[:, inb]).T)


def to_band_resolution(spectra: Array, band: str, inband: NDArray[np.bool_]) -> Array:
    """The band-resolution spectra whose R = 200 matching gives ``spectra`` (the simulation's
    extraction; :func:`simulate`, "Resolution").

    ``spectra`` (n, 574) at R = 200 on the ``inband`` pixels (NaN elsewhere); the result is
    ``A⁻¹ spectra`` on those pixels with ``A`` the matching operator of
    :func:`csstflux.spectra.degrade.match_band_resolution` there (banded, condition number
    ≈ 2.8 in GV and GI, less in GU), NaN elsewhere.
    """
    pix = tuple(int(i) for i in np.flatnonzero(inband))
    out = np.full(np.shape(spectra), np.nan)
    if not pix or not np.shape(spectra)[0]:
        return out
    v = np.array(np.asarray(spectra, float)[:, list(pix)])
    gaps = ~np.isfinite(v)
    for r in np.flatnonzero(gaps.any(axis=1) & ~gaps.all(axis=1)):
        # a masked pixel of the truth (a NaN SED pixel): bridged for the solve, NaN again
        # after (build-flat leaves the matching kernel's reach around it out)
        k = np.arange(v.shape[1])
        v[r, gaps[r]] = np.interp(k[gaps[r]], k[~gaps[r]], v[r, ~gaps[r]])
    out[:, list(pix)] = np.where(gaps, np.nan,
                                 np.linalg.solve(_matching_operator(band, pix), v.T).T)
    return out


def match_extracted(counts: ArrayLike, counts_err: ArrayLike, band: str,
                    inband: NDArray[np.bool_], resolution: float | None
                    ) -> tuple[Array, Array]:
    """Extracted spectra brought to the standards' R = 200 before ratios are formed.

    ``resolution`` is the extraction's (None or ≤ 200: returned as they are). The spectra are
    matched by :func:`csstflux.spectra.degrade.match_band_resolution` (the band's R is
    :data:`csstflux.grids.BAND_RESOLUTION`, which ``resolution`` must equal); in-band pixels
    missing from the extraction (a trace cut at the detector's edge) and every pixel within
    :func:`kernel_reach` of one come back NaN, since the kernel renormalised over the gap is not
    the one the standards were smoothed with.

    Returns
    -------
    counts, counts_err : ndarray, shape (n, 574), float64
    """
    c = np.asarray(counts, dtype=float)
    e = np.asarray(counts_err, dtype=float)
    if resolution is None or not resolution > OUTPUT_GRID.resolution or not c.shape[0]:
        return c, e
    if resolution != BAND_RESOLUTION[band]:
        raise GridMismatchError(f"spectra extracted at R = {resolution:g}, but the {band} band's "
                                "resolution is csstflux.grids.BAND_RESOLUTION",
                                expected=BAND_RESOLUTION[band], found=resolution)
    m, me = match_band_resolution(c, band, error=e)
    assert me is not None
    lost = spread(~np.isfinite(c) & inband[None, :], kernel_reach(resolution))
    return np.where(lost, np.nan, m), np.where(lost, np.nan, me)


def spread(mask: NDArray[np.bool_], reach: int) -> NDArray[np.bool_]:
    """``mask`` (n, n_wave) dilated by ``reach`` pixels along the wavelength axis."""
    out = np.array(mask, dtype=bool, copy=True)
    for k in range(1, reach + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    return out


def coarse_grid(det: Detector, n: int) -> tuple[Array, Array]:
    """``n`` × ``n`` grid points spanning the detector's pixel centres, (grid_x, grid_y)."""
    if n < 2:
        raise ConfigError(f"the coarse grid needs at least 2 points per axis, got {n}")
    return np.linspace(0.0, det.n_x - 1.0, n), np.linspace(0.0, det.n_y - 1.0, n)


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` wrote."""

    exposures: list[Path]
    truth: Path
    n_stars_field: int
    n_sources: list[int]
    detectors: list[str]
    photometry: Path | None = None
    """``photometry.csv`` (physical units only)."""
    contaminated_fraction: list[float] = field(default_factory=list)
    """Per exposure: CONTAMINATED pixels over all recorded in-band pixels (0 without
    traces)."""


@dataclass(frozen=True, eq=False)
class SimulatedPhotometry:
    """Catalogue photometry of simulated stars, and ``csstflux anchor``'s fit of it.

    Magnitudes are the synthetic AB magnitudes of the true observed (reddened, absolute)
    SED (:class:`csstflux.photometry.SyntheticPhotometry`), minus each band's ``ab_offset``
    (the catalogue system), plus Gaussian noise of ``sigma`` (stated, the ``_err`` columns)
    and ``floor`` (not stated) in quadrature.
    """

    bands: tuple[str, ...] = PHOT_BANDS
    sigma: tuple[float, ...] = PHOT_SIGMA
    """1σ per band, mag (one value: every band)."""
    floor: float = PHOT_FLOOR
    """Unstated scatter, mag (the anchor's error floor)."""

    def __post_init__(self) -> None:
        sig = np.atleast_1d(np.asarray(self.sigma, dtype=float))
        if sig.size == 1:
            sig = np.full(len(self.bands), sig[0])
        if sig.shape != (len(self.bands),) or not np.all(sig >= 0) or not self.floor >= 0:
            raise ConfigError(f"photometric sigma must be one value or one per band "
                              f"({len(self.bands)}), each >= 0, and the floor >= 0; got "
                              f"{self.sigma!r}, {self.floor!r}")
        object.__setattr__(self, "sigma", tuple(float(v) for v in sig))
        object.__setattr__(self, "bands", tuple(b.name for b in self._loaded))

    @cached_property
    def _loaded(self) -> tuple[Any, ...]:
        return load_bands(list(self.bands))  # ConfigError for an unknown name

    @cached_property
    def anchor(self) -> Anchor:
        """The fit of ``csstflux anchor`` (default settings, F99 R_V 3.1) on these bands."""
        synth = SyntheticPhotometry.from_bands(self._loaded)
        return Anchor(synth=synth, k=extinction_k(synth.wavelength, EXTINCTION_LAW,
                                                  EXTINCTION_RV))

    @cached_property
    def k(self) -> Array:
        """(574,) A(λ)/E(B−V) on OUTPUT_GRID, the law the simulation reddens with."""
        return np.asarray(self.anchor.k[:OUTPUT_GRID.n])

    def catalogue(self, flux: Array, rng: np.random.Generator, *, ideal: bool = False
                  ) -> Array:
        """(n, nb) catalogue magnitudes of observed SEDs ``flux`` (n, 574), erg s⁻¹ cm⁻² Å⁻¹;
        noise-free with ``ideal`` (and then nothing is drawn)."""
        ab = self.anchor.synth.ab_mags(flux)
        cat = ab - np.array([b.ab_offset for b in self._loaded])
        if ideal:
            return cat
        return cat + rng.normal(size=ab.shape) * np.hypot(np.asarray(self.sigma), self.floor)

    def __call__(self, flux: Array, sed: Array, sed_err: Array, rng: np.random.Generator
                 ) -> tuple[Array, Array]:
        """Anchored SED and 1σ (n, 574), erg s⁻¹ cm⁻² Å⁻¹, of stars with true observed SEDs
        ``flux``, from their relative ``sed`` and ``sed_err`` and simulated photometry (the
        :class:`csstflux.core.flatmc.Anchorer` of ``flat-precision --star-scale anchored``)."""
        mag = self.catalogue(flux, rng) + np.array([b.ab_offset for b in self._loaded])
        err = np.broadcast_to(np.asarray(self.sigma), mag.shape)
        res = fit_anchor(self.anchor, sed, sed_err, mag, err)
        out, out_err = self.anchor.sed_abs(sed, sed_err, res)
        bad = (res.flags & np.uint32(Flag.NO_PHOTOMETRY | Flag.PHOT_INCONSISTENT)) > 0
        return (np.where(bad[:, None], np.nan, out.astype(float)),
                np.where(bad[:, None], np.nan, out_err.astype(float)))


def simulate(predictions: str | os.PathLike[str], out: str | os.PathLike[str], *,
             ra: float, dec: float, radius_deg: float = 1.0, n_pointings: int = 3,
             detectors: Sequence[str] = DEFAULT_DETECTORS, amplitude: float = 0.03,
             ripple: float = 0.0, exposure_time: float = 150.0,
             throughput_dir: str | os.PathLike[str] | None = None, ideal: bool = False,
             seed: int = 0, dither_arcsec: float = 20.0, pa_deg: float = 0.0,
             grid: int = 9, sky_per_pixel: float = 1.0, read_noise: float = 10.0,
             scale_range: tuple[float, float] = (10.0, 1000.0),
             correlation_length: float = 0.0, units: SimUnits = "physical",
             ebv_mean: float = EBV_MEAN, ebv_max: float = EBV_MAX,
             phot_bands: Sequence[str] = PHOT_BANDS,
             phot_sigma: float | Sequence[float] = PHOT_SIGMA,
             phot_floor: float = PHOT_FLOOR, traces: bool = True,
             instrument: SlitlessInstrument | str | os.PathLike[str] | None = None
             ) -> SimulationResult:
    """Simulate ``n_pointings`` dithered exposures of the store's stars in a cone.

    Each star's true SED is drawn around its prediction, reddened by its E(B−V) and scaled
    (module docstring, "Simulated stars"); in physical units the field's photometry is
    written beside the exposures. With ``traces`` (the default) each star's first-order
    trace is placed on its detector, extracted at the band's resolution and checked for
    contamination (module docstring, "Traces"); without, the idealised picture (every
    wavelength at the star's position, R = 200).

    Parameters
    ----------
    predictions : path
        Predictions store (:mod:`csstflux.io.predstore`).
    out : path
        Output folder (exposure groups, ``truth.npz`` and ``photometry.csv``).
    ra, dec, radius_deg : float
        Field centre and radius, degrees (stars read from the store).
    n_pointings : int
        Exposures; boresights dithered uniformly within ±``dither_arcsec``.
    detectors : names
        Slitless detectors to simulate (``"GV-02"``...).
    amplitude, ripple : float
        Large-scale flat amplitude (0.01–0.05) and rms of the small-scale ripple.
    exposure_time : float
        Seconds.
    throughput_dir : path, optional
        CESS throughput curves; None: top-hat with a warning (module docstring).
    ideal : bool
        Truth SEDs equal to the predictions, noise-free counts and photometry.
    grid : int
        Points per axis of the truth cube's coarse detector grid.
    sky_per_pixel, read_noise : float
        e⁻ s⁻¹ and e⁻ per output pixel in the extraction aperture.
    scale_range : (float, float)
        Log-uniform range of the stars' ``scale``: e⁻ s⁻¹ per output pixel in the scaling
        window for unit throughput, before reddening (physical units: 10–1000 is f_λ =
        8.2e-17–8.2e-15 erg s⁻¹ cm⁻² Å⁻¹ there, AB ≈ 19.1–14.1 at 5556 Å).
    correlation_length : float
        Of the truth SED draws (:func:`csstflux.core.flatsim.draw_true_seds`), pixels.
    units : "physical" or "relative"
        Physical: counts from f_λ through :func:`csstflux.core.flatsim.counts_per_flux`, and
        photometry written. Relative: e⁻ rates ∝ the relative SED, no photometry (the
        simulation before physical units: with ``ebv_mean=0`` the counts are those of that
        version, bit for bit).
    ebv_mean, ebv_max : float
        E(B−V) of each star: exponential of mean ``ebv_mean`` truncated at ``ebv_max``
        (:func:`csstflux.core.flatsim.draw_ebv`), mag; ``ebv_mean=0``: no reddening.
    phot_bands : band names
        Bands of ``photometry.csv`` (:mod:`csstflux.photometry.bands`).
    phot_sigma : float or one per band
        1σ of the photometry, mag, written as ``{band}_err``.
    phot_floor : float
        An extra per-star, per-band scatter, mag, *not* in ``{band}_err``: the catalogue's
        calibration and variability, which ``csstflux anchor`` models by its error floor
        (default the anchor's ``floor_mag``).
    traces : bool
        Place first-order traces (module docstring, "Traces"); False: one position per star
        and an R = 200 extraction (the simulation before traces).
    instrument : SlitlessInstrument or path, optional
        The instrument model (:mod:`csstflux.core.traces`) or its TOML file; None: the
        shipped one. Only with ``traces``.

    Raises
    ------
    EmptyResultError
        No store star in the cone, or none can land on (or, with traces, put its trace on)
        any of the detectors at any dither: checked before anything is written.
    """
    if n_pointings < 1:
        raise ConfigError(f"need at least one pointing, got {n_pointings}")
    if units not in ("physical", "relative"):
        raise ConfigError(f"units must be 'physical' or 'relative', got {units!r}")
    if ebv_mean < 0 or not ebv_max > 0 or phot_floor < 0:
        raise ConfigError(f"need ebv_mean >= 0, ebv_max > 0 and phot_floor >= 0; got "
                          f"{ebv_mean}, {ebv_max}, {phot_floor}")
    try:
        dets = [SLITLESS_FOCAL_PLANE[d] for d in detectors]
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    inst = _instrument(instrument) if traces else None
    if inst is not None:
        missing = [d.name for d in dets if not inst.beams(d.name)]
        if missing:
            raise ConfigError(f"the instrument model has no grating on {', '.join(missing)}",
                              expected=", ".join(inst.detectors()), found=", ".join(missing))
    physical = units == "physical"
    phot = SimulatedPhotometry(tuple(phot_bands), tuple(np.atleast_1d(phot_sigma)),
                               phot_floor) if physical else None
    rng = np.random.default_rng(seed)
    rng_star = np.random.default_rng([seed, 1])  # reddening and photometry: own stream
    ds = open_predictions(predictions, cone=(ra, dec, radius_deg))
    obsid = np.asarray(ds["obsid"].values, np.int64)
    s_ra, s_dec = np.asarray(ds["ra"].values, float), np.asarray(ds["dec"].values, float)
    _check_field(s_ra, s_dec, ra, dec, radius_deg, pa_deg, dets, dither_arcsec, inst)
    tp_band, tp_source = band_throughputs(throughput_dir)
    pred = np.asarray(ds["sed"].values, float)
    pred_err = np.asarray(ds["sed_err"].values, float)
    truth_sed = draw_true_seds(pred, np.nan_to_num(pred_err), rng,
                               correlation_length=correlation_length, ideal=ideal)
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    scale = np.exp(rng.uniform(lo, hi, obsid.size))
    ebv = draw_ebv(rng_star, obsid.size, ebv_mean, ebv_max)
    cpf = counts_per_flux() if physical else None
    # e⁻ s⁻¹ per pixel for unit scale and throughput: the relative SED reddened (and, in
    # physical units, times the photon conversion over its window mean)
    rate_sed = truth_sed * _shape_factor(ebv, EXTINCTION_LAW, EXTINCTION_RV, cpf)
    flats = {d.name: TrueFlat.random(rng, shape=d.shape,
                                     wavelength_range=(BANDS[d.band].lo, BANDS[d.band].hi),
                                     amplitude=amplitude, ripple_amplitude=ripple)
             for d in dets}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    phys_attrs = {"units": units, "extinction_law": EXTINCTION_LAW, "rv": EXTINCTION_RV,
                  "ebv_mean": ebv_mean, "ebv_max": ebv_max,
                  "collecting_area_cm2": COLLECTING_AREA_CM2 if physical else None}
    trace_attrs: dict[str, Any] = {"traces": inst is not None}
    if inst is not None:
        trace_attrs.update(
            extraction_resolution={d.name: BAND_RESOLUTION[d.band] for d in dets},
            instrument=inst.to_attrs(tuple(d.name for d in dets)),
            instrument_source=str(instrument) if isinstance(instrument, str | os.PathLike)
            else "shipped" if instrument is None else "given")
    paths, n_src, cont_frac = [], [], []
    cosd = max(np.cos(np.radians(dec)), 1e-6)
    for i in range(n_pointings):
        off = rng.uniform(-dither_arcsec, dither_arcsec, 2) / 3600.0
        ra0, dec0 = (ra + off[0] / cosd) % 360.0, dec + off[1]
        parts: list[dict[str, Any]] = []
        for d in dets:
            x, y = sky_to_pixel(d, s_ra, s_dec, ra0, dec0, pa_deg)
            if inst is None:
                on = np.flatnonzero(d.contains(x, y))
                counts, err = simulate_observations(
                    rate_sed[on], x[on], y[on], flats[d.name], tp_band[d.band], exposure_time,
                    scale[on], sky_per_pixel, read_noise, rng, ideal=ideal)
                extra: dict[str, Any] = {}
            else:
                on, counts, err, extra = _traced_sources(
                    d, inst, x, y, rate_sed, scale, flats[d.name], tp_band[d.band],
                    exposure_time, sky_per_pixel, read_noise, rng, ideal)
            parts.append(dict(id=obsid[on], ra=s_ra[on], dec=s_dec[on],
                              detector=np.full(on.size, d.name), x=x[on], y=y[on],
                              scale=scale[on], ebv=ebv[on], counts=counts, counts_err=err,
                              **extra))
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        exp = Exposure(exposure_id=i, **cat,
                       throughput={d.name: tp_band[d.band] for d in dets},
                       pointing=(ra0, dec0, pa_deg), exposure_time=exposure_time,
                       attrs={"throughput_source": tp_source, "seed": seed, "ideal": ideal,
                              "bands": [d.band for d in dets], "amplitude": amplitude,
                              "ripple": ripple, "sky_per_pixel": sky_per_pixel,
                              "read_noise": read_noise, "predictions": str(predictions),
                              **phys_attrs, **trace_attrs},
                       counts_per_flux=cpf)
        paths.append(write_exposure(out_dir, exp))
        n_src.append(len(exp))
        recorded = np.isfinite(exp.counts)
        cont_frac.append(float(np.sum(exp.contaminated & recorded) / max(recorded.sum(), 1))
                         if exp.contaminated is not None else 0.0)
    if not any(n_src):
        raise EmptyResultError(f"no star landed on {', '.join(d.name for d in dets)} in any of "
                               f"the {n_pointings} dithered pointings; the (empty) exposures "
                               f"are in {out_dir}", found=f"{obsid.size} stars in the cone")
    cubes, waves = {}, {}
    grid_x = grid_y = np.zeros(0)
    for d in dets:
        grid_x, grid_y = coarse_grid(d, grid)
        wave = OUTPUT_GRID.wavelength[band_pixels(tp_band[d.band])]
        cubes[d.name], waves[d.name] = flats[d.name].cube(grid_x, grid_y, wave), wave
    stars: dict[str, Any] = {"obsid": obsid, "ebv": ebv, "scale": scale}
    phot_path = None
    if cpf is not None and phot is not None:
        flux = scale / window_mean(cpf)  # intrinsic f_λ in the scaling window, erg/s/cm²/Å
        stars["flux"] = flux
        observed = flux[:, None] * truth_sed * _shape_factor(ebv, EXTINCTION_LAW,
                                                             EXTINCTION_RV, None)
        mag = phot.catalogue(observed, rng_star, ideal=ideal)
        phot_path = write_photometry(out_dir, obsid, list(phot.bands), mag,
                                     np.broadcast_to(phot.sigma, mag.shape))
    truth = write_truth(out_dir, cubes, waves, grid_x, grid_y,
                        {"seed": seed, "amplitude": amplitude, "ripple": ripple,
                         "ideal": ideal, "throughput_source": tp_source, **phys_attrs,
                         "phot_bands": list(phot.bands) if phot is not None else [],
                         "phot_sigma": list(phot.sigma) if phot is not None else [],
                         "phot_floor": phot_floor},
                        stars=stars)
    return SimulationResult(paths, truth, int(obsid.size), n_src, [d.name for d in dets],
                            phot_path, cont_frac)


def _instrument(instrument: SlitlessInstrument | str | os.PathLike[str] | None
                ) -> SlitlessInstrument:
    """The instrument model itself, or loaded from its TOML file (None: the shipped one)."""
    if isinstance(instrument, SlitlessInstrument):
        return instrument
    return load_instrument(None if instrument is None else Path(instrument))


def _check_field(ra: Array, dec: Array, ra0: float, dec0: float, radius_deg: float,
                 pa_deg: float, dets: Sequence[Detector], dither_arcsec: float,
                 inst: SlitlessInstrument | None) -> None:
    """Refuse a field in which no star can land on any detector (before anything is written).

    A star can only land on a detector (or, with traces, put light on it) if, seen from the
    undithered boresight, it lies within the dither (√2 × ``dither_arcsec``), the trace reach
    and a pixel of the detector's edges; none does: :class:`EmptyResultError`.
    """
    names = ", ".join(d.name for d in dets)
    if not ra.size:
        raise EmptyResultError(f"no star of the predictions store within {radius_deg}° of "
                               f"({ra0}, {dec0}): nothing to simulate on {names}")
    for d in dets:
        x, y = sky_to_pixel(d, ra, dec, ra0, dec0, pa_deg)
        m = (np.sqrt(2.0) * abs(dither_arcsec) / PIXEL_SCALE_ARCSEC + 1.0
             + (inst.reach(d.name) if inst is not None else 0.0))
        if np.any((x > -0.5 - m) & (x < d.n_x - 0.5 + m) & (y > -0.5 - m)
                  & (y < d.n_y - 0.5 + m)):
            return
    raise EmptyResultError(f"none of the {ra.size} stars within {radius_deg}° of ({ra0}, "
                           f"{dec0}) can land on {names} (position angle {pa_deg}°, dithers "
                           f"up to {dither_arcsec}″): no exposure would hold a spectrum")


def _traced_sources(det: Detector, inst: SlitlessInstrument, x: Array, y: Array,
                    rate_sed: Array, scale: Array, flat: TrueFlat, throughput: Array,
                    exposure_time: float, sky_per_pixel: float, read_noise: float,
                    rng: np.random.Generator, ideal: bool
                    ) -> tuple[NDArray[np.int64], Array, Array, dict[str, Any]]:
    """One detector of one exposure with traces (module docstring, "Traces").

    ``x, y`` are every field star's reference position on ``det``; ``rate_sed`` (n, 574)
    their e⁻ s⁻¹ per pixel per unit ``scale`` at R = 200. Returns the rows of the sources (a
    zeroth order or a trace point on the detector), their counts and errors, and the
    (source, wavelength) arrays of :class:`csstflux.io.exposures.Exposure`.
    """
    wave = OUTPUT_GRID.wavelength
    inband = band_pixels(throughput)
    reach = inst.reach(det.name)
    near = np.flatnonzero((x > -0.5 - reach) & (x < det.n_x - 0.5 + reach)
                          & (y > -0.5 - reach) & (y < det.n_y - 0.5 + reach))
    geo, span = inst.on_output_grid(det.name, x[near], y[near], inband, det.shape)
    on_band = geo.on_detector & inband[span][None, :]
    keep = det.contains(x[near], y[near]) | on_band.any(axis=1)
    rows, geo = near[keep], _take(geo, keep)
    full = (rows.size, OUTPUT_GRID.n)
    xs, ys = (on_grid(v, span, inband) for v in (geo.x, geo.y))  # uncut: the spectrum exists
    live = np.zeros(full, dtype=bool)
    live[:, span] = on_band[keep]
    # the flat applied at R = 200, then the spectrum taken to the band's resolution
    own = np.full(full, np.nan)
    own[:, inband] = (rate_sed[rows][:, inband] * scale[rows, None] * throughput[inband]
                      * flat.value(xs[:, inband], ys[:, inband], wave[inband]) * exposure_time)
    own = np.where(live, to_band_resolution(own, det.band, inband), np.nan)
    cont = np.full(full, np.nan)
    cont[:, span] = contamination(geo, own[:, span])
    total = own + cont
    sky = np.full(OUTPUT_GRID.n, sky_per_pixel * exposure_time)
    counts, err = add_noise(total, sky, read_noise, rng, band=inband, ideal=ideal)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, cont / total, np.where(np.isfinite(total), 0.0, np.nan))
    extra = {"x_trace": np.where(live, xs, np.nan).astype(np.float32),
             "y_trace": np.where(live, ys, np.nan).astype(np.float32),
             "contamination": frac.astype(np.float32),
             "contaminated": np.nan_to_num(frac) > inst.contamination_limit}
    return rows, counts, err, extra


def _take(geo: TraceGeometry, keep: NDArray[np.bool_]) -> TraceGeometry:
    """The rows ``keep`` of a :class:`TraceGeometry`."""
    return TraceGeometry(*(getattr(geo, f.name)[keep] for f in fields(TraceGeometry)))


def _shape_factor(ebv: Array, law: str, rv: float, cpf: Array | None) -> Array:
    """(n, 574) ``10^(−0.4 ebv k(λ)) · c(λ)/c̄``: from a relative SED to an e⁻ rate per unit
    ``scale`` (``c/c̄`` = 1 without ``cpf``; no k evaluated when every ebv is 0)."""
    e = np.asarray(ebv, dtype=float)
    fac = np.ones((e.size, OUTPUT_GRID.n))
    if np.any(e != 0):
        fac = redden(fac, e, extinction_k(OUTPUT_GRID.wavelength, law, rv))
    if cpf is not None:
        fac = fac * (cpf / window_mean(cpf))[None, :]
    return fac


def known_rate(exp: Exposure, rows: NDArray[np.int64], sed: Array, sed_err: Array
               ) -> tuple[Array, Array]:
    """Expected e⁻ s⁻¹ per pixel (unit throughput and flat) of sources ``rows`` of ``exp``
    from their relative SEDs and errors (n, 574), with the recorded ``scale`` and ``ebv``
    (:mod:`csstflux.io.exposures`: the recorded law and photon conversion)."""
    fac = exp.scale[rows][:, None] * _shape_factor(
        exp.ebv[rows], str(exp.attrs.get("extinction_law", EXTINCTION_LAW)),
        float(exp.attrs.get("rv", EXTINCTION_RV)), exp.counts_per_flux)
    return sed * fac, sed_err * fac


@dataclass(frozen=True)
class ExposureEquations:
    """Per-detector normal equations of one or more exposures, and match counts."""

    equations: dict[str, NormalEquations]
    band: dict[str, tuple[int, ...]]
    """Detector → OUTPUT_GRID pixel indices of its band (the equations' leading axis)."""
    matches: dict[str, int] = field(default_factory=dict)
    """Source counts per :class:`MatchStatus` name, plus ``total``."""
    n_used: int = 0
    """Matched sources that entered the fits."""
    n_exposures: int = 1
    weighted_variance: dict[str, Array] = field(default_factory=dict)
    """Detector → ``Σ w σ_r²`` over the ratios in the fit, per band pixel: the expected χ²
    of a correct model plus the number of terms (``n`` when every star is seen once; less
    with repeated stars, whose weights use ``σ_w > σ_r``)."""
    n_changed: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    """Detector → ratios whose clipped status changed since the previous pass, per band
    pixel (empty without clipping)."""
    unanchored: dict[str, int] = field(default_factory=dict)
    """``star_scale="anchored"``: matched sources left out, by reason
    (:data:`UNANCHORED_KEYS`, the first that applies); empty otherwise."""
    n_contaminated: dict[str, int] = field(default_factory=dict)
    """Detector → in-band pixels of matched sources left out as CONTAMINATED
    (:func:`extracted_spectra`)."""
    n_traced: int = 0
    """Exposures whose positions are traces (the others: one position per source)."""


def merge(a: ExposureEquations, b: ExposureEquations) -> ExposureEquations:
    """Sum two :class:`ExposureEquations` (the tree reduction's step)."""
    eq = dict(a.equations)
    band = dict(a.band)
    for k, v in b.equations.items():
        if k in band and band[k] != b.band[k]:
            raise ConfigError(f"exposures disagree on the band pixels of detector {k}")
        eq[k] = eq[k] + v if k in eq else v
        band[k] = b.band[k]
    keys = set(a.matches) | set(b.matches)
    return ExposureEquations(eq, band, {k: a.matches.get(k, 0) + b.matches.get(k, 0)
                                        for k in sorted(keys)},
                             a.n_used + b.n_used, a.n_exposures + b.n_exposures,
                             _add_arrays(a.weighted_variance, b.weighted_variance),
                             _add_arrays(a.n_changed, b.n_changed),
                             {k: a.unanchored.get(k, 0) + b.unanchored.get(k, 0)
                              for k in sorted(set(a.unanchored) | set(b.unanchored))},
                             _add_arrays(a.n_contaminated, b.n_contaminated),
                             a.n_traced + b.n_traced)


def _add_arrays(a: Mapping[str, _A], b: Mapping[str, _A]) -> dict[str, _A]:
    """Key-wise sum of two dicts of arrays (a key in one only is copied)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


@dataclass(frozen=True)
class _Matched:
    """Cross-match of one exposure's sources: counts, matched rows and their store stars."""

    matches: dict[str, int]
    sel: NDArray[np.int64]
    """Exposure rows that matched, ascending."""
    star: NDArray[np.int64]
    """Row of each matched source in ``ds`` (the cone selection of the store)."""
    ds: Any


def _match_exposure(exp: Exposure, predictions: str | os.PathLike[str],
                    radius_arcsec: float) -> _Matched:
    """Cross-match an exposure's sources to the store stars around its pointing."""
    matches = dict.fromkeys(MATCH_KEYS, 0)
    matches["total"] = len(exp)
    empty = np.zeros(0, dtype=np.int64)
    if not len(exp):
        return _Matched(matches, empty, empty, None)
    ra0, dec0, _ = exp.pointing
    sep = angular_separation(exp.ra, exp.dec, ra0, dec0)
    radius_deg = (float(np.nanmax(sep)) + 2 * radius_arcsec) / 3600.0
    ds = open_predictions(predictions, cone=(ra0, dec0, radius_deg), dask=False)
    m = match_nearest(exp.ra, exp.dec, np.asarray(ds["ra"].values),
                      np.asarray(ds["dec"].values), radius_arcsec)
    sel = np.flatnonzero(m.matched).astype(np.int64)
    return _Matched({**m.counts()}, sel, np.asarray(m.index[sel], dtype=np.int64), ds)


def exposure_census(path: str | os.PathLike[str], predictions: str | os.PathLike[str], *,
                    radius_arcsec: float = 1.0) -> StarRepeats:
    """One census task: detector → store ids of the stars this exposure matched there."""
    exp = read_exposure(path, spectra=False)
    mt = _match_exposure(exp, predictions, radius_arcsec)
    obsid = (np.asarray(mt.ds["obsid"].values, dtype=np.int64)[mt.star]
             if mt.ds is not None else np.zeros(0, dtype=np.int64))
    det = exp.detector[mt.sel]
    return StarRepeats.from_ids({name: obsid[det == name] for name in exp.throughput})


def _unanchored_reason(flags: NDArray[np.uint32], sed_abs: Array) -> NDArray[np.int64]:
    """Per star: index into :data:`UNANCHORED_KEYS` of why it cannot be used, −1 if it can."""
    reason = np.full(flags.shape, -1, dtype=np.int64)
    checks = ((flags & np.uint32(Flag.NO_PHOTOMETRY)) > 0,
              (flags & np.uint32(Flag.PHOT_INCONSISTENT)) > 0,
              ~np.isfinite(sed_abs).any(axis=1))
    for i, hit in reversed(list(enumerate(checks))):  # the first reason wins
        reason[hit] = i
    return reason


def exposure_equations(path: str | os.PathLike[str], predictions: str | os.PathLike[str], *,
                       order: int = DEFAULT_ORDER, radius_arcsec: float = 1.0,
                       star_scale: StarScaleMode = "median",
                       clip: dict[str, Array] | None = None, nsigma: float = 3.0,
                       repeats: StarRepeats | None = None,
                       previous_clip: dict[str, Array] | None = None) -> ExposureEquations:
    """One task: read an exposure, cross-match it, form its per-detector normal equations.

    ``clip``: detector → un-normalised coefficients (n_band, n_terms) of the previous pass;
    ratios more than ``nsigma`` marginal σ from that model are dropped. ``previous_clip``: the
    model of the pass before it (None: no clipping then), only to count the ratios whose
    status changed (``n_changed``). ``repeats``: the census of :func:`exposure_census`
    summed over all exposures (None: every star counted once). ``star_scale`` chooses the
    predicted spectrum (module docstring): the relative ``sed`` (``"median"``), ``sed`` with
    the recorded scale and reddening (``"known"``, :func:`known_rate`), or the anchored
    ``sed_abs`` times the exposure's ``counts_per_flux`` (``"anchored"``); its error enters
    the weights as the star's SED term in every case.
    """
    if star_scale not in STAR_SCALES:
        raise ConfigError(f"star_scale must be one of {STAR_SCALES}, got {star_scale!r}")
    anchored = star_scale == "anchored"
    exp = read_exposure(path)
    if anchored and exp.counts_per_flux is None:
        raise ConfigError("star_scale 'anchored' needs exposures in physical units (with "
                          "counts_per_flux); this one has relative units", path=path)
    mt = _match_exposure(exp, predictions, radius_arcsec)
    sel, star = mt.sel, mt.star
    eqs: dict[str, NormalEquations] = {}
    wvar: dict[str, Array] = {}
    changed: dict[str, NDArray[np.int64]] = {}
    band = {k: tuple(int(i) for i in np.flatnonzero(band_pixels(tp)))
            for k, tp in exp.throughput.items()}
    n_used = 0
    unanchored = dict.fromkeys(UNANCHORED_KEYS, 0) if anchored else {}
    uniq = np.unique(star)
    if uniq.size:
        names = ("sed_abs", "sed_abs_err") if anchored else ("sed", "sed_err")
        pred_all, err_all = (np.asarray(mt.ds[v].isel(star=uniq).values, float)
                             for v in names)
        row = np.searchsorted(uniq, star)
        if anchored:
            why = _unanchored_reason(
                np.asarray(mt.ds["flags"].isel(star=uniq).values, np.uint32), pred_all)[row]
            for i, key in enumerate(UNANCHORED_KEYS):
                unanchored[key] = int(np.sum(why == i))
            sel, star, row = sel[why < 0], star[why < 0], row[why < 0]
            cpf = np.asarray(exp.counts_per_flux)
            pred_all, err_all = pred_all * cpf, err_all * cpf  # e⁻ s⁻¹ per pixel
        obsid = np.asarray(mt.ds["obsid"].values, dtype=np.int64)[star]
        pred, perr = pred_all[row], err_all[row]
    else:
        pred = perr = np.zeros((0, OUTPUT_GRID.n))
        obsid = np.zeros(0, dtype=np.int64)
    n_cont: dict[str, int] = {}
    for name, tp in exp.throughput.items():
        det = SLITLESS_FOCAL_PLANE[name]
        keep = exp.detector[sel] == name
        on, p, pe = sel[keep], pred[keep], np.nan_to_num(perr[keep])
        if star_scale == "known":
            p, pe = known_rate(exp, on, p, pe)
        inband = band_pixels(tp)
        counts, counts_err, n_cont[name] = extracted_spectra(exp, on, name, inband)
        r, var_n, var_s = flux_ratio_variances(counts, counts_err, p, pe, tp,
                                               exposure_time=exp.exposure_time,
                                               star_scale="median" if star_scale == "median"
                                               else None)
        k = (repeats.of(name, obsid[keep]) if repeats is not None
             else np.ones(on.size, dtype=np.int64))
        var_w = var_n + k[:, None] * var_s
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(np.isfinite(var_w) & (var_w > 0), 1.0 / var_w, 0.0)
        err = np.sqrt(var_n + var_s)  # the marginal scatter of one ratio
        xs, ys = exp.positions(on)
        if xs.ndim == 2:  # traces: the position of each band pixel's light
            xs, ys = xs[:, inband], ys[:, inband]
        if clip is not None and name in clip:
            args = (xs, ys, r, err, order)
            out = outliers(clip[name], *args, shape=det.shape, nsigma=nsigma)
            was = (outliers(previous_clip[name], *args, shape=det.shape, nsigma=nsigma)
                   if previous_clip is not None and name in previous_clip
                   else np.zeros_like(out))
            changed[name] = np.sum((w > 0) & (out != was), axis=0).astype(np.int64)
            w = np.where(out, 0.0, w)
        eqs[name] = normal_equations(xs, ys, r, w, order, shape=det.shape)
        wvar[name] = np.sum(np.where(w > 0, w * err**2, 0.0), axis=0)
        n_used += int(on.size)
    return ExposureEquations(eqs, band, mt.matches, n_used, weighted_variance=wvar,
                             n_changed=changed, unanchored=unanchored, n_contaminated=n_cont,
                             n_traced=int(exp.traced))


def extracted_spectra(exp: Exposure, rows: NDArray[np.int64], detector: str,
                      inband: NDArray[np.bool_]) -> tuple[Array, Array, int]:
    """The spectra of sources ``rows`` on ``detector`` as the flat fit uses them.

    Brought to the standards' R = 200 (:func:`match_extracted`, from the exposure's recorded
    extraction resolution; nothing to do for groups without one), and with CONTAMINATED pixels
    (the exposure's ``contaminated`` mask, spread by the matching kernel's reach, since the
    matching mixes a contaminated pixel into its neighbours) set to NaN: they are left out.

    Returns
    -------
    counts, counts_err : ndarray, shape (n, 574), float64
    n_contaminated : int
        In-band pixels with a usable spectrum left out for contamination.
    """
    res = exp.extraction_resolution(detector)
    band = SLITLESS_FOCAL_PLANE[detector].band
    counts, err = match_extracted(exp.counts[rows], exp.counts_err[rows], band, inband, res)
    if exp.contaminated is None or not rows.size:
        return counts, err, 0
    bad = spread(np.asarray(exp.contaminated[rows], dtype=bool),
                 kernel_reach(res) if res is not None else 0) & inband[None, :]
    bad &= np.isfinite(counts)
    return np.where(bad, np.nan, counts), np.where(bad, np.nan, err), int(bad.sum())


def tree_reduce(client: Client, futures: list[Any], name: str = "flat-reduce",
                combine: Callable[[Any, Any], Any] = merge) -> Any:
    """Pairwise reduction of futures with ``combine`` on the workers; returns a future.

    Tasks are named ``{name}-L{level}-{i}-{token}`` (Dask's dashboard groups them by prefix).
    """
    if not futures:
        raise ConfigError("no exposures to reduce")
    level = list(futures)
    depth = 0
    token = uuid.uuid4().hex[:8]
    while len(level) > 1:
        depth += 1
        nxt = [client.submit(combine, level[i], level[i + 1], pure=False,
                             key=f"{name}-L{depth}-{i // 2:05d}-{token}")
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@dataclass(frozen=True)
class FlatBuild:
    """Result of :func:`build_flat`."""

    solutions: dict[str, FlatSolution]
    wavelength: dict[str, Array]
    grid_x: Array
    grid_y: Array
    equations: ExposureEquations
    """The summed equations of the last pass (its clip model in ``clip``)."""
    clip: dict[str, Array] | None
    """Detector → un-normalised coefficients (n_band, n_terms) of the model the last pass
    clipped against; None without clipping."""
    n_passes: int
    """Equation passes run: 1 + clipping passes (the census pass not counted)."""
    provenance: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary: counts, passes and per-detector fit statistics."""
        dets = {}
        for k, s in self.solutions.items():
            dets[k] = {"n_wavelengths": int(s.flat.shape[0]),
                       "median_stars_per_wavelength": float(np.median(s.fit.n)),
                       "median_reduced_chi2": float(np.nanmedian(s.reduced_chi2))
                       if np.isfinite(s.reduced_chi2).any() else None,
                       "median_sigma": float(np.nanmedian(s.sigma))
                       if np.isfinite(s.sigma).any() else None}
        out = {"matches": dict(self.equations.matches), "n_used": self.equations.n_used,
               "n_exposures": self.equations.n_exposures, "n_passes": self.n_passes,
               "clip_converged": self.provenance.get("clip_converged"),
               "max_repeats": self.provenance.get("max_repeats"),
               "n_exposures_traced": self.provenance.get("n_exposures_traced"),
               "contaminated_excluded": self.provenance.get("contaminated_excluded"),
               "detectors": dets}
        if "unanchored" in self.provenance:
            out["unanchored"] = dict(self.provenance["unanchored"])
        return out


def exposure_paths(exposures: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                   required: bool = False) -> list[str]:
    """Exposure groups named by ``exposures``: one folder, or a list of folders and groups.

    ``required``: none found is an :class:`EmptyResultError` (build-flat checks this before
    it starts a cluster)."""
    items = [exposures] if isinstance(exposures, (str, os.PathLike)) else list(exposures)
    out: list[str] = []
    for item in items:
        p = Path(item)
        out.extend(str(q) for q in ([p] if p.name.endswith(".zarr") else list_exposures(p)))
    if required and not out:
        raise EmptyResultError(f"no exposure-*.zarr in {exposures}: nothing to fit")
    return out


def build_flat(exposures: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
               predictions: str | os.PathLike[str],
               client: Client, *, order: int = DEFAULT_ORDER, grid: int = 9,
               radius_arcsec: float = 1.0, star_scale: StarScaleMode = "median",
               nsigma: float = 3.0, max_iter: int = 6) -> FlatBuild:
    """Fit the 3D flat of every detector from a folder of exposures (module docstring).

    Parameters
    ----------
    exposures : path or sequence of paths
        Folder of ``exposure-*.zarr`` groups, or several folders and groups
        (:func:`exposure_paths`).
    predictions : path
        The predictions store to cross-match against.
    client : distributed.Client
    order : int
        Total order of the 2D polynomial per wavelength.
    grid : int
        Points per axis of the output coarse detector grid.
    radius_arcsec : float
        Cross-match radius.
    star_scale : "median", "known" or "anchored"
        Module docstring. ``"anchored"`` needs a store anchored by ``csstflux anchor`` and
        exposures in physical units; both are checked before any task runs.
    nsigma, max_iter : float, int
        Sigma clipping threshold and maximum number of clipping passes (0: none).

    Notes
    -----
    Tasks (dashboard prefixes): ``flat-census-*`` and ``flat-census-reduce-*`` (the census of
    repeated stars), then per pass ``k`` ``flat-equations-p{k}-*`` and ``flat-reduce-p{k}-*``.

    Interrupted runs: the build is a pure reduction over the exposures: it writes nothing and
    keeps no state between runs (task keys carry a fresh token, so a rerun never picks up
    futures of an earlier one), and :func:`write_outputs` replaces each file atomically. A rerun
    after an interruption therefore recomputes everything from the exposures, losing and
    duplicating nothing; no done markers are needed. A worker lost mid-run is handled by Dask,
    which recomputes its tasks from their (path, settings) arguments.
    """
    if star_scale not in STAR_SCALES:
        raise ConfigError(f"star_scale must be one of {STAR_SCALES}, got {star_scale!r}")
    if not radius_arcsec > 0 or order < 0 or max_iter < 0:
        raise ConfigError("radius_arcsec must be > 0, order and max_iter >= 0")
    paths = exposure_paths(exposures, required=True)
    store_attrs = read_attrs(predictions)  # validates the store before any compute
    anchor = check_anchored(predictions, paths) if star_scale == "anchored" else None

    token = uuid.uuid4().hex[:8]
    census = tree_reduce(
        client, [client.submit(exposure_census, p, str(predictions),
                               radius_arcsec=radius_arcsec, pure=False,
                               key=f"flat-census-{i:05d}-{token}")
                 for i, p in enumerate(paths)],
        name="flat-census-reduce", combine=operator.add)  # stays on the workers

    def one_pass(clip: dict[str, Array] | None, previous: dict[str, Array] | None,
                 k: int) -> ExposureEquations:
        futs = [client.submit(exposure_equations, p, str(predictions), order=order,
                              radius_arcsec=radius_arcsec, star_scale=star_scale, clip=clip,
                              nsigma=nsigma, repeats=census, previous_clip=previous,
                              pure=False,
                              key=f"flat-equations-p{k}-{i:05d}-{token}")
                for i, p in enumerate(paths)]
        result: ExposureEquations = tree_reduce(client, futs, name=f"flat-reduce-p{k}").result()
        return result

    total = one_pass(None, None, 0)
    if total.n_used == 0:
        raise EmptyResultError("no exposure source matched a star of the predictions store; "
                               "a flat needs hundreds of matched stars per detector",
                               path=predictions, found=dict(total.matches))
    max_repeats = int(client.submit(operator.attrgetter("max_repeats"), census, pure=False,
                                    key=f"flat-census-max-{token}").result())
    n_passes, converged = 1, None  # stays None without clipping
    clip: dict[str, Array] | None = None
    for _ in range(max_iter):
        previous, clip = clip, {k: solve(v).coeffs for k, v in total.equations.items()}
        total = one_pass(clip, previous, n_passes)
        n_passes += 1
        converged = not any(np.any(v) for v in total.n_changed.values())
        if converged:  # same masks as the pass before: a fixed point
            break
    sols, waves = {}, {}
    grid_x = grid_y = np.zeros(0)
    for k, neq in total.equations.items():
        grid_x, grid_y = coarse_grid(SLITLESS_FOCAL_PLANE[k], grid)
        sol = solve_flat(neq, grid_x, grid_y)
        # χ² over its expectation for a correct model (repeated stars: not χ²/dof)
        dof = total.weighted_variance[k] - n_terms(order)
        with np.errstate(divide="ignore", invalid="ignore"):
            red = np.where(dof > 0, sol.fit.chi2 / dof, np.nan)
        sols[k] = replace(sol, reduced_chi2=np.where(sol.fit.ok, red, np.nan))
        waves[k] = OUTPUT_GRID.wavelength[list(total.band[k])]
    model = store_attrs.get("model")
    prov = {"csstflux_version": __version__,
            "model_id": model.get("id") if isinstance(model, dict) else None,
            "store": str(Path(predictions).resolve()), "n_exposures": total.n_exposures,
            "n_stars": total.n_used, "order": order, "star_scale": star_scale,
            "radius_arcsec": radius_arcsec, "nsigma": nsigma, "n_passes": n_passes,
            "clip_converged": converged, "max_repeats": max_repeats,
            "clip_changed_last": int(sum(int(v.sum()) for v in total.n_changed.values())),
            "matches": dict(total.matches), "n_exposures_traced": total.n_traced,
            "contaminated_excluded": dict(sorted(total.n_contaminated.items()))}
    if anchor is not None:
        prov["unanchored"] = dict(total.unanchored)
        prov["anchor"] = {k: anchor.get(k) for k in ("fingerprint", "photometry", "bands",
                                                      "law", "rv", "completed")}
    return FlatBuild(sols, waves, grid_x, grid_y, total, clip, n_passes, prov)


def check_anchored(predictions: str | os.PathLike[str], paths: Sequence[str]
                   ) -> dict[str, Any]:
    """What ``star_scale="anchored"`` needs, checked before any task: the store's finished
    anchoring (its ``attrs["anchor"]``, returned) and exposures in physical units."""
    meta = anchor_attrs(predictions)
    if meta is None:
        raise ConfigError(f"star_scale 'anchored' needs absolute SEDs, but the predictions "
                          f"store {predictions} was never anchored: run `csstflux anchor "
                          f"{predictions} --photometry FILE` first", path=predictions)
    if not meta.get("completed"):
        raise ConfigError(f"the anchoring of the predictions store {predictions} has not "
                          f"finished: rerun `csstflux anchor {predictions}` (it resumes)",
                          path=predictions)
    for p in paths:
        if read_exposure_attrs(p)["units"] != "physical":
            raise ConfigError("star_scale 'anchored' needs exposures in physical units "
                              "(with counts_per_flux); this one has relative units", path=p)
    return meta


def write_outputs(result: FlatBuild, prefix: str | os.PathLike[str]) -> dict[str, str]:
    """``PREFIX.fits``, ``PREFIX_sigma.fits`` and ``PREFIX.zarr`` (:mod:`csstflux.io.flatcube`)."""
    from csstflux.io.flatcube import write_flat_fits, write_flat_zarr

    pre = str(prefix)
    Path(pre).parent.mkdir(parents=True, exist_ok=True)
    flats = {k: s.flat for k, s in result.solutions.items()}
    sigmas = {k: s.sigma for k, s in result.solutions.items()}
    fits_prov = {k: v for k, v in result.provenance.items() if k != "matches"}
    f = write_flat_fits(pre + ".fits", flats, result.wavelength, result.grid_x, result.grid_y,
                        fits_prov)
    fs = write_flat_fits(pre + "_sigma.fits", sigmas, result.wavelength, result.grid_x,
                         result.grid_y, fits_prov)
    extra = {k: {"reduced_chi2": s.reduced_chi2, "n_stars": np.asarray(s.fit.n)}
             for k, s in result.solutions.items()}
    z = write_flat_zarr(pre + ".zarr", flats, sigmas, result.wavelength, result.grid_x,
                        result.grid_y, extra, result.provenance)
    return {"fits": str(f), "sigma_fits": str(fs), "zarr": str(z)}

