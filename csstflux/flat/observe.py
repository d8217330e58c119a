"""Simulated slitless exposures of a field, observed from the stars of a predictions store.

:func:`simulate` observes the stars of a predictions store in a cone through a known flat per
detector (:class:`csstflux.flat.simulate.TrueFlat`) and writes one exposure group per dithered
pointing, the truth and, in physical units, the field's photometry
(:mod:`csstflux.io.stores.exposures`). :func:`csstflux.pipeline.flats.build_flat` fits the
flat back from them.

Throughputs. A directory of CESS ``{GU,GV,GI}.Throughput.1st.fits`` curves, averaged onto
:data:`csstflux.grids.OUTPUT_GRID`; without one, the documented fallback, a top-hat of
:data:`TOPHAT_THROUGHPUT` over each band of :data:`csstflux.grids.BANDS`, named in a warning
and in each exposure's ``throughput_source`` (:func:`band_throughputs`). The curve used is
written into each exposure file, and the flat fit uses that recorded curve.

Simulated stars. Each store star in the cone gets a true relative SED drawn around its
prediction (:func:`csstflux.flat.simulate.draw_true_seds`), a ``scale`` log-uniform in
``scale_range`` and an E(B−V) (exponential, mean ``ebv_mean``, truncated at ``ebv_max``; 0 by
default); its counts and photometry follow :mod:`csstflux.flat.stars`. ``units="relative"`` is
the simulation before physical units (rates ∝ the relative SED, no photometry). The reddening
and the photometry draw from their own random stream: with relative units and E(B−V) = 0 the
exposures are those of that version, bit for bit, and physical units only multiply the
expected counts by ``counts_per_flux / c̄``. Each exposure records ``scale``, ``ebv``, the law
and ``counts_per_flux``.

Traces (``simulate(traces=True)``, the default). Each star's reference position (where its
undispersed image falls) is placed by the pointing's WCS; the instrument model
(:mod:`csstflux.flat.traces`, the shipped ``slitless_instrument.toml`` or ``instrument``)
chooses its grating and puts the light of each output pixel's wavelength at ``x(λ), y(λ)``
on its first-order trace. Sources are the stars with their reference position on the
detector or a trace point on it; trace points off the detector are cut (NaN counts and
positions there). For each source, with ``r(λ)`` its R = 200 e⁻ s⁻¹ per pixel (SED, scale,
reddening, photon conversion, throughput):

1. the flat is applied at the trace, ``r(λ) f(x(λ), y(λ), λ) t``;
2. the spectrum is taken to the band's resolution, :data:`csstflux.grids.BAND_RESOLUTION`
   (:func:`csstflux.flat.resolution.to_band_resolution`). The predicted SEDs and their truth
   are R = 200 spectra and nothing finer exists to convolve; the flat fit's matching then
   returns step 1's spectrum exactly. Applying the flat before the change of resolution
   rather than after leaves out the smoothing of the flat's own chromatic variation by the
   R = 200 kernel (< 1e-6 inside a band; up to ~1e-4 in the two pixels at each band edge,
   where the kernel is one-sided): an effect of any R = 200 comparison, not simulated;
3. the neighbours' light in its aperture is added (:func:`csstflux.flat.contamination
   .contamination`, from the other sources' expected counts; off-detector sources whose
   zeroth order falls in a gap are included, zeroth orders are not), recorded per pixel as
   ``contamination`` (fraction of the counts) and flagged ``contaminated`` above the model's
   ``contamination_limit`` (1e-4; 2.0 % of the pixels at 100 stars per detector, 3.6 % at
   400, 9.0 % at 1000);
4. sky and detector noise (:func:`csstflux.flat.simulate.add_noise`).

The exposure records the traces (``x_trace``, ``y_trace``), the contamination and its mask,
the extraction's resolution and the instrument model with its fingerprint. With
``traces=False`` every wavelength is recorded at the star's position at R = 200, as before
traces (bit for bit).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import ConfigError, EmptyResultError
from csstflux.flat.contamination import contamination
from csstflux.flat.detectors import (
    PIXEL_SCALE_ARCSEC,
    SLITLESS_FOCAL_PLANE,
    Detector,
    sky_to_pixel,
)
from csstflux.flat.fit import band_pixels
from csstflux.flat.resolution import to_band_resolution
from csstflux.flat.settings import coarse_grid
from csstflux.flat.simulate import (
    COLLECTING_AREA_CM2,
    TrueFlat,
    add_noise,
    counts_per_flux,
    draw_ebv,
    draw_true_seds,
    simulate_observations,
    window_mean,
)
from csstflux.flat.stars import (
    EBV_MAX,
    EBV_MEAN,
    EXTINCTION_LAW,
    EXTINCTION_RV,
    PHOT_BANDS,
    PHOT_FLOOR,
    PHOT_SIGMA,
    SimulatedPhotometry,
    shape_factor,
)
from csstflux.flat.traces import SlitlessInstrument, TraceGeometry, load_instrument, on_grid
from csstflux.grids import BAND_RESOLUTION, BANDS, OUTPUT_GRID
from csstflux.io.formats.csst_throughput import load_band_throughputs, throughput_on_grid
from csstflux.io.stores.exposures import Exposure, write_exposure, write_photometry, write_truth
from csstflux.io.stores.predictions import open_predictions

Array = NDArray[np.float64]
SimUnits = Literal["physical", "relative"]
#: Top-hat first-order throughput used when no curves are given (dimensionless).
TOPHAT_THROUGHPUT = 0.3
#: One detector of each band: the default of :func:`simulate`.
DEFAULT_DETECTORS: tuple[str, ...] = tuple(SLITLESS_FOCAL_PLANE.band(b)[0].name
                                           for b in ("GU", "GV", "GI"))


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
        Predictions store (:mod:`csstflux.io.stores.predictions`).
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
        Of the truth SED draws (:func:`csstflux.flat.simulate.draw_true_seds`), pixels.
    units : "physical" or "relative"
        Physical: counts from f_λ through :func:`csstflux.flat.simulate.counts_per_flux`, and
        photometry written. Relative: e⁻ rates ∝ the relative SED, no photometry (the
        simulation before physical units: with ``ebv_mean=0`` the counts are those of that
        version, bit for bit).
    ebv_mean, ebv_max : float
        E(B−V) of each star: exponential of mean ``ebv_mean`` truncated at ``ebv_max``
        (:func:`csstflux.flat.simulate.draw_ebv`), mag; ``ebv_mean=0``: no reddening.
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
        The instrument model (:mod:`csstflux.flat.traces`) or its TOML file; None: the
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
    rate_sed = truth_sed * shape_factor(ebv, EXTINCTION_LAW, EXTINCTION_RV, cpf)
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
        observed = flux[:, None] * truth_sed * shape_factor(ebv, EXTINCTION_LAW,
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
    (source, wavelength) arrays of :class:`csstflux.io.stores.exposures.Exposure`.
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
