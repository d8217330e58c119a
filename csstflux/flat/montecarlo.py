"""Monte Carlo precision of the 3D flat fit (paper §5): simulate, fit, compare, repeat.

Each trial draws, per band, a true flat (:meth:`csstflux.flat.simulate.TrueFlat.random`, an
exact order-2 polynomial with chromatic coefficients), ``n_stars`` stars uniform over one
detector with blackbody-like SEDs (4500–9000 K, scaled to 1 in the scaling window) and
per-star absolute fluxes (G ≈ 14–17), one 150 s exposure, and fits the flat with
:func:`csstflux.flat.fit.exposure_normal_equations` / :func:`~csstflux.flat.fit.solve_flat`
(order 2, absolute fluxes known, a 9 × 9 coarse grid).

Conditions
----------
``"ideal"`` (the paper's): the true SEDs equal the predictions (no ``sed_err``); the counts
carry only photon (Poisson source + sky) and read noise — without any noise the fit is exact.
``"realistic"``: in addition the true SEDs are drawn around the predictions with the
predicted ``sed_err`` (10–1.2 %, larger in the UV; correlated along λ with length 10 pixels,
:func:`csstflux.flat.simulate.draw_true_seds`), and the fit weights include ``sed_err``.
The flat amplitude (1–5 %) is a parameter of both.

Star scale
----------
Known (no ``anchorer``, the paper's): each star's absolute flux is known exactly and the
SEDs are relative, e⁻ rates ∝ f_λ. Anchored (an :class:`Anchorer` given, ``csstflux
flat-precision --star-scale anchored``): the stars are observed in physical units
(f_λ through :func:`csstflux.flat.simulate.counts_per_flux`) and reddened (E(B−V) exponential
of mean :data:`EBV_MEAN`, truncated at :data:`EBV_MAX`, law of the anchorer); an
:class:`Anchorer` (:class:`csstflux.flat.stars.SimulatedPhotometry`: simulated catalogue
photometry and ``csstflux anchor``'s fit) gives each star's absolute reddened SED and its
error, which replace the known flux in the fit. The same counts are also fitted with the
true scale and E(B−V) (``known_same``), so the cost of anchoring is measured on one
simulation. Measured (400 stars, 10 trials, top-hat, seed 0, no traces), rms per band GU,
GV, GI:

=========================  =======================  =======================
                           ideal                    realistic
=========================  =======================  =======================
known (the paper's trial)  1.7e-3, 1.2e-3, 1.3e-3   9.8e-3, 2.9e-3, 2.6e-3
anchored                   8.0e-3, 2.9e-3, 2.8e-3   1.4e-2, 4.1e-3, 3.9e-3
known_same                 5.1e-3, 1.6e-3, 9.6e-4   1.3e-2, 3.2e-3, 2.3e-3
=========================  =======================  =======================

(physical units and reddening cost photons in GU: compare ``known_same`` with the paper's
trial; anchoring then adds the photometric scale and E(B−V) errors of each star).

Traces
------
With an ``instrument`` (:mod:`csstflux.flat.traces`; ``csstflux flat-precision``, whose
default is ``--traces``) the light of each star at λ is recorded at its first-order trace
point ``(x(λ), y(λ))`` on the band's first detector, where the flat is applied; points off the
detector are cut. The fit uses those positions, and the same counts are also fitted at the
stars' reference positions, as if there were no traces (``ignoring_traces``; their
difference: ``ignoring_shift``). The random draws are those of the trial without traces. The
stars stay isolated (no contamination) and extracted at R = 200: the band's resolution and its
matching belong to ``simulate-exposures`` and ``build-flat``
(:mod:`csstflux.flat.resolution`).
Measured (400 stars, 10 trials, top-hat, seed 0, the shipped instrument), rms per band GU,
GV, GI:

=========================  =======================  =======================
                           ideal                    realistic
=========================  =======================  =======================
no traces (paper's trial)  1.7e-3, 1.2e-3, 1.3e-3   9.8e-3, 2.9e-3, 2.6e-3
traces used                1.9e-3, 1.5e-3, 1.5e-3   1.1e-2, 3.3e-3, 3.0e-3
traces ignored             2.6e-3, 2.7e-3, 2.0e-3   1.0e-2, 3.8e-3, 3.1e-3
ignored − used             2.0e-3, 2.5e-3, 1.6e-3   2.5e-3, 2.5e-3, 1.7e-3
=========================  =======================  =======================

(with the CESS throughput curves, ideal: used 3.3e-3, 1.3e-3, 1.7e-3; ignored 3.5e-3,
2.7e-3, 2.1e-3; the paper's, ideal: 5e-3, 3e-4, 5e-4). Using the traces costs a little: the
shipped traces run 390–800 pixels towards each detector's centre column, so no first-order
light falls in the outer strips and the grid's edges are extrapolated. Ignoring them adds an
error of 1.6–2.5e-3 (the flat's gradient over the star-to-light offset), which dominates the
photon noise; in realistic GU the SED errors hide it, and the reference positions' wider lever
arm even lowers the RMS there, which is why ``ignoring_shift`` is reported.

Averaging
---------
Per trial and band the error is the RMS of (recovered − true) over the 9 × 9 grid points and
all the band's output-grid wavelengths; the reported precision is the **median over trials**
of that RMS. ``band_averaged`` is the same for the flats first averaged over the band's
wavelengths (the error of a broad-band flat, smaller because wavelengths are independent).
``rms_vs_wavelength`` is the RMS over grid points and all trials at each wavelength.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from csstflux.flat import fit as ff
from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE
from csstflux.flat.simulate import (
    TrueFlat,
    counts_per_flux,
    draw_ebv,
    draw_true_seds,
    simulate_observations,
    uniform_positions,
    window_mean,
)
from csstflux.flat.traces import SlitlessInstrument, on_grid
from csstflux.grids import BANDS, OUTPUT_GRID, SCALING_WINDOW

Array = NDArray[np.float64]
Conditions = Literal["ideal", "realistic"]

SLITLESS = ("GU", "GV", "GI")
#: Detector shape (ny, nx), from the focal-plane description (all slitless chips are alike).
SHAPE = SLITLESS_FOCAL_PLANE.band("GV")[0].shape
"""Detector (n_y, n_x), pixels."""
EXPOSURE, SKY, READ_NOISE = 150.0, 7.0, 30.0
"""s; e⁻/s and e⁻ per output pixel in the extraction aperture."""
N_GRID = 9
ORDER = 2
CORRELATION_LENGTH = 10.0
"""Correlation length of the SED errors along λ, output-grid pixels."""
TOP_HAT = 0.3
"""Throughput inside each band when no real curves are given."""
EBV_MEAN, EBV_MAX = 0.1, 0.5
"""E(B−V) of the stars with ``star_scale="anchored"``: exponential mean and truncation, mag."""


class Anchorer(Protocol):
    """Absolute SEDs of stars from their photometry (the anchored trials)."""

    @property
    def k(self) -> Array:
        """(574,) A(λ)/E(B−V) on OUTPUT_GRID: the extinction law the stars are reddened with."""
        ...

    def __call__(self, flux: Array, sed: Array, sed_err: Array, rng: np.random.Generator
                 ) -> tuple[Array, Array]:
        """From true observed SEDs ``flux`` (n, 574, erg s⁻¹ cm⁻² Å⁻¹), the relative ``sed``
        and ``sed_err`` (n, 574): the anchored SEDs and 1σ (n, 574), same unit (NaN rows:
        not anchored)."""
        ...


def band_throughputs(curves: Mapping[str, tuple[Array, Array]] | None = None
                     ) -> dict[str, Array]:
    """Throughput of each slitless band on the output grid, zero outside the band.

    ``curves`` maps band → (wavelength Å, sensitivity), e.g.
    :func:`csstflux.io.formats.csst_throughput.load_band_throughputs`; None gives a 30 % top-hat.
    """
    from csstflux.io.formats.csst_throughput import throughput_on_grid

    wave = OUTPUT_GRID.wavelength
    out = {}
    for band in SLITLESS:
        mask = BANDS[band].mask(wave)
        tp = throughput_on_grid(*curves[band]) if curves is not None else TOP_HAT
        out[band] = np.where(mask, tp, 0.0)
    return out


def star_seds(rng: np.random.Generator, n: int) -> tuple[Array, Array]:
    """Blackbody SEDs (4500–9000 K) scaled to 1 in the scaling window, and their sed_err."""
    wave = OUTPUT_GRID.wavelength
    teff = rng.uniform(4500.0, 9000.0, n)[:, None]
    lam_um = wave[None, :] * 1e-4
    sed = lam_um**-4 / np.expm1(14388.0 / (lam_um * teff))
    win = (wave >= SCALING_WINDOW[0]) & (wave <= SCALING_WINDOW[1])
    sed /= sed[:, win].mean(axis=1, keepdims=True)
    rel = np.interp(wave, [2500, 4000, 5000, 7000, 10500], [0.10, 0.03, 0.013, 0.012, 0.02])
    return sed, sed * rel[None, :]


def star_scales(rng: np.random.Generator, n: int) -> Array:
    """e⁻/s per output pixel at the scaling window: G ≈ 14–17 on CSST's 2 m aperture."""
    return 1000.0 * 10 ** (-0.4 * rng.uniform(0.0, 3.0, n))


@dataclass(frozen=True)
class BandTrial:
    """One band of one trial: wavelengths, true and recovered flat (n_band, n_gy, n_gx)."""

    wavelength: Array
    truth: Array
    recovered: Array
    recovered_known: Array | None = None
    """With an anchorer: the same counts fitted with the true scale and E(B−V)."""
    recovered_ignoring: Array | None = None
    """With traces: the same counts fitted as if every wavelength had been recorded at the
    star's reference position (the traces ignored)."""


def one_trial(band: str, n_stars: int, conditions: Conditions, amplitude: float,
              throughput: Array, rng: np.random.Generator,
              anchorer: Anchorer | None = None,
              instrument: SlitlessInstrument | None = None) -> BandTrial:
    """Simulate one exposure of ``n_stars`` through a random flat and fit it back.

    With an ``anchorer`` the stars are physical and reddened and the fit uses the anchored
    SEDs (module docstring, "Star scale"); without, the paper's known-flux trial. With an
    ``instrument`` the light is recorded along first-order traces (module docstring,
    "Traces"); the random draws are the same either way.
    """
    if conditions not in ("ideal", "realistic"):
        raise ValueError(f"conditions must be 'ideal' or 'realistic', got {conditions!r}")
    realistic = conditions == "realistic"
    wave = OUTPUT_GRID.wavelength
    b = BANDS[band]
    flat = TrueFlat.random(rng, shape=SHAPE, wavelength_range=(b.lo, b.hi), order=ORDER,
                           amplitude=amplitude)
    x, y = uniform_positions(n_stars, SHAPE, rng)
    pred, err = star_seds(rng, n_stars)
    scale = star_scales(rng, n_stars)
    truth_sed = draw_true_seds(pred, err, rng, correlation_length=CORRELATION_LENGTH,
                               ideal=not realistic)
    used_err = err if realistic else np.zeros_like(err)
    # e⁻ s⁻¹ per pixel per unit scale: relative SED (times reddening and photon conversion)
    shape = np.ones((n_stars, wave.size))
    if anchorer is not None:
        cpf = counts_per_flux()
        ebv = draw_ebv(rng, n_stars, EBV_MEAN, EBV_MAX)
        red = 10.0 ** (-0.4 * ebv[:, None] * np.asarray(anchorer.k)[None, :])
        shape = red * (cpf / window_mean(cpf))[None, :]
    xt, yt = x, y
    if instrument is not None:
        inband = ff.band_pixels(throughput)
        geo, span = instrument.on_output_grid(SLITLESS_FOCAL_PLANE.band(band)[0].name, x, y,
                                              inband, SHAPE)
        xt, yt = (on_grid(v, span, inband) for v in geo.cut())
    counts, cerr = simulate_observations(truth_sed * shape, xt, yt, flat, throughput,
                                         EXPOSURE, scale, SKY, READ_NOISE, rng)
    gx = np.linspace(0, SHAPE[1] - 1, N_GRID)
    gy = np.linspace(0, SHAPE[0] - 1, N_GRID)

    def fit(rate: Array, rate_err: Array, px: Array = xt, py: Array = yt) -> Array:
        neq = ff.exposure_normal_equations(px, py, counts, cerr, rate, rate_err, throughput,
                                           ORDER, shape=SHAPE, exposure_time=EXPOSURE)
        return ff.solve_flat(neq, gx, gy).flat

    s = scale[:, None] * shape
    known = fit(pred * s, used_err * s)
    bw = wave[ff.band_pixels(throughput)]
    truth = flat.cube(gx, gy, bw)
    if anchorer is None:
        ignoring = fit(pred * s, used_err * s, x, y) if instrument is not None else None
        return BandTrial(bw, truth, known, recovered_ignoring=ignoring)
    flux = (scale / window_mean(cpf))[:, None] * truth_sed * red  # observed f_λ
    sed_abs, sed_abs_err = anchorer(flux, pred, used_err, rng)
    rate, rate_err = sed_abs * cpf, np.nan_to_num(sed_abs_err * cpf)
    anchored = fit(rate, rate_err)
    ignoring = fit(rate, rate_err, x, y) if instrument is not None else None
    return BandTrial(bw, truth, anchored, known, ignoring)


@dataclass(frozen=True)
class PrecisionResult:
    """Precision of the recovered flat per band (see the module docstring for averaging)."""

    n_stars: int
    conditions: str
    n_trials: int
    amplitude: float
    rms: dict[str, float]
    """Median over trials of the RMS over grid points and band wavelengths."""
    band_averaged: dict[str, float]
    """Same for the flats averaged over the band's wavelengths."""
    wavelength: dict[str, Array] = field(repr=False)
    rms_vs_wavelength: dict[str, Array] = field(repr=False)
    """RMS over grid points and trials at each band wavelength."""
    example: dict[str, BandTrial] = field(repr=False)
    """The first trial of each band (for maps)."""
    star_scale: str = "known"
    known_same: dict[str, float] | None = None
    """With an anchorer (``star_scale="anchored"``): ``rms`` of the same counts fitted with
    the true fluxes."""
    traces: bool = False
    """The light was recorded along first-order traces (an instrument model was given)."""
    ignoring_traces: dict[str, float] | None = None
    """With traces: ``rms`` of the same counts fitted at the stars' reference positions, as
    if there were no traces (the cost of ignoring them)."""
    ignoring_shift: dict[str, float] | None = None
    """With traces: median over trials of the RMS of (traces ignored − traces used), the two
    fits of the same counts: the error ignoring the traces adds, free of the noise both
    share."""

    def to_dict(self) -> dict[str, object]:
        """``{"GU", "GV", "GI", "n_stars", "conditions", ...}`` (JSON-ready)."""
        out: dict[str, object] = {
            **{b: float(v) for b, v in self.rms.items()}, "n_stars": self.n_stars,
            "conditions": self.conditions, "n_trials": self.n_trials,
            "amplitude": self.amplitude, "star_scale": self.star_scale,
            "traces": self.traces,
            "band_averaged": {b: float(v) for b, v in self.band_averaged.items()}}
        if self.known_same is not None:
            out["known_same"] = {b: float(v) for b, v in self.known_same.items()}
        if self.ignoring_traces is not None:
            out["ignoring_traces"] = {b: float(v) for b, v in self.ignoring_traces.items()}
        if self.ignoring_shift is not None:
            out["ignoring_shift"] = {b: float(v) for b, v in self.ignoring_shift.items()}
        return out


def run_precision(n_stars: int = 400, n_trials: int = 10, conditions: Conditions = "ideal",
                  amplitude: float = 0.03, seed: int = 0,
                  throughputs: Mapping[str, Array] | None = None,
                  bands: Sequence[str] = SLITLESS, *,
                  anchorer: Anchorer | None = None,
                  instrument: SlitlessInstrument | None = None) -> PrecisionResult:
    """Repeat simulation and fit ``n_trials`` times per band; RMS of recovered − true flat.

    Parameters
    ----------
    throughputs : mapping band → (n_wave,) on the output grid, optional
        :func:`band_throughputs`; default the 30 % top-hat.
    seed : int
        Each (band, trial) uses its own stream spawned from ``seed``, so results for a band
        do not depend on which other bands are run.
    anchorer : Anchorer, optional
        Anchored trials (module docstring, "Star scale"); None: known fluxes.
    instrument : SlitlessInstrument, optional
        Record the light along first-order traces and report the fit that ignores them
        too (module docstring, "Traces"); None: every wavelength at the star's position.
    """
    if n_stars < 10 or n_trials < 1:
        raise ValueError(f"need n_stars >= 10 and n_trials >= 1, got {n_stars}, {n_trials}")
    tps = dict(throughputs) if throughputs is not None else band_throughputs()
    rms, band_avg, waves, rms_wave, example = {}, {}, {}, {}, {}
    known_same: dict[str, float] = {}
    ignoring: dict[str, float] = {}
    shift: dict[str, float] = {}
    for band in bands:
        bidx = SLITLESS.index(band) if band in SLITLESS else len(SLITLESS)
        per_trial, per_avg, sq, per_known, per_ign, per_shift = [], [], [], [], [], []
        for t in range(n_trials):
            rng = np.random.default_rng([seed, bidx, t])
            tr = one_trial(band, n_stars, conditions, amplitude, tps[band], rng, anchorer,
                           instrument)
            d = tr.recovered - tr.truth
            per_trial.append(np.sqrt(np.nanmean(d**2)))
            if tr.recovered_known is not None:
                per_known.append(np.sqrt(np.nanmean((tr.recovered_known - tr.truth) ** 2)))
            if tr.recovered_ignoring is not None:
                per_ign.append(np.sqrt(np.nanmean((tr.recovered_ignoring - tr.truth) ** 2)))
                per_shift.append(np.sqrt(np.nanmean((tr.recovered_ignoring
                                                     - tr.recovered) ** 2)))
            davg = np.nanmean(tr.recovered, axis=0) - np.nanmean(tr.truth, axis=0)
            per_avg.append(np.sqrt(np.nanmean(davg**2)))
            sq.append(np.nanmean(d**2, axis=(1, 2)))
            if t == 0:
                example[band] = tr
                waves[band] = tr.wavelength
        rms[band] = float(np.median(per_trial))
        if per_known:
            known_same[band] = float(np.median(per_known))
        if per_ign:
            ignoring[band] = float(np.median(per_ign))
            shift[band] = float(np.median(per_shift))
        band_avg[band] = float(np.median(per_avg))
        rms_wave[band] = np.sqrt(np.nanmean(np.array(sq), axis=0))
    return PrecisionResult(n_stars, conditions, n_trials, float(amplitude), rms, band_avg,
                           waves, rms_wave, example,
                           "known" if anchorer is None else "anchored",
                           known_same if anchorer is not None else None,
                           instrument is not None, ignoring if instrument is not None else None,
                           shift if instrument is not None else None)


def precision_vs_stars(n_stars: Sequence[int] = (100, 200, 400, 800), n_trials: int = 10,
                       conditions: Conditions = "ideal", amplitude: float = 0.03,
                       seed: int = 0, throughputs: Mapping[str, Array] | None = None,
                       bands: Sequence[str] = SLITLESS, *,
                       anchorer: Anchorer | None = None,
                       instrument: SlitlessInstrument | None = None) -> list[PrecisionResult]:
    """:func:`run_precision` at each number of stars (expect ∝ 1/√N)."""
    return [run_precision(n, n_trials, conditions, amplitude, seed, throughputs, bands,
                          anchorer=anchorer, instrument=instrument)
            for n in n_stars]
