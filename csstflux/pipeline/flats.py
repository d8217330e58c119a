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
:data:`csstflux.grids.OUTPUT_GRID`; without one, a top-hat of :data:`TOPHAT_THROUGHPUT` over
each band of :data:`csstflux.grids.BANDS` (with a warning). The curve used is written into
each exposure file, and :func:`build_flat` uses that recorded curve.

Star scale (``star_scale``): ``"known"`` uses each source's recorded absolute flux ``scale``
(simulations, or fluxes tied to photometry): the whole flat is recovered. ``"median"`` divides
each star's ratios by their band median: only the chromatic part of the flat is recovered
(see :mod:`csstflux.core.flatfit`).
"""

from __future__ import annotations

import operator
import os
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from distributed import Client
from numpy.typing import NDArray

import csstflux
from csstflux.core.crossmatch import MatchStatus, angular_separation, match_nearest
from csstflux.core.detectors import SLITLESS_FOCAL_PLANE, Detector, sky_to_pixel
from csstflux.core.flatfit import (
    FlatSolution,
    StarRepeats,
    band_pixels,
    flux_ratio_variances,
    outliers,
    solve_flat,
)
from csstflux.core.flatsim import TrueFlat, draw_true_seds, simulate_observations
from csstflux.core.polyfit2d import (
    DEFAULT_ORDER,
    NormalEquations,
    n_terms,
    normal_equations,
    solve,
)
from csstflux.errors import ConfigError, CsstFluxError
from csstflux.grids import BANDS, OUTPUT_GRID
from csstflux.io.csst_throughput import load_band_throughputs, throughput_on_grid
from csstflux.io.exposures import (
    Exposure,
    list_exposures,
    read_exposure,
    write_exposure,
    write_truth,
)
from csstflux.io.predstore import open_predictions, read_attrs

Array = NDArray[np.float64]
_A = TypeVar("_A", NDArray[np.float64], NDArray[np.int64])
StarScaleMode = Literal["median", "known"]
#: Top-hat first-order throughput used when no curves are given (dimensionless).
TOPHAT_THROUGHPUT = 0.3
#: One detector of each band: the default of :func:`simulate`.
DEFAULT_DETECTORS: tuple[str, ...] = tuple(SLITLESS_FOCAL_PLANE.band(b)[0].name
                                           for b in ("GU", "GV", "GI"))
MATCH_KEYS = tuple(s.name.lower() for s in MatchStatus)


def band_throughputs(directory: str | os.PathLike[str] | None
                     ) -> tuple[dict[str, Array], str]:
    """Band → throughput on OUTPUT_GRID (574,), and a description of the source."""
    if directory is None:
        warnings.warn(f"no throughput curves given: using a top-hat of {TOPHAT_THROUGHPUT} "
                      "over each band", stacklevel=2)
        wave = OUTPUT_GRID.wavelength
        return ({b: np.where(BANDS[b].mask(wave), TOPHAT_THROUGHPUT, 0.0) for b in BANDS},
                f"tophat {TOPHAT_THROUGHPUT}")
    curves = load_band_throughputs(directory)
    return {b: throughput_on_grid(w, s) for b, (w, s) in curves.items()}, str(directory)


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


def simulate(predictions: str | os.PathLike[str], out: str | os.PathLike[str], *,
             ra: float, dec: float, radius_deg: float = 1.0, n_pointings: int = 3,
             detectors: Sequence[str] = DEFAULT_DETECTORS, amplitude: float = 0.03,
             ripple: float = 0.0, exposure_time: float = 150.0,
             throughput_dir: str | os.PathLike[str] | None = None, ideal: bool = False,
             seed: int = 0, dither_arcsec: float = 20.0, pa_deg: float = 0.0,
             grid: int = 9, sky_per_pixel: float = 1.0, read_noise: float = 10.0,
             scale_range: tuple[float, float] = (10.0, 1000.0),
             correlation_length: float = 0.0) -> SimulationResult:
    """Simulate ``n_pointings`` dithered exposures of the store's stars in a cone.

    Parameters
    ----------
    predictions : path
        Predictions store (:mod:`csstflux.io.predstore`).
    out : path
        Output folder (exposure groups and ``truth.npz``).
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
        Truth SEDs equal to the predictions and noise-free counts.
    grid : int
        Points per axis of the truth cube's coarse detector grid.
    sky_per_pixel, read_noise : float
        e⁻ s⁻¹ and e⁻ per output pixel in the extraction aperture.
    scale_range : (float, float)
        Log-uniform range of the stars' absolute fluxes, e⁻ s⁻¹ per output pixel.
    correlation_length : float
        Of the truth SED draws (:func:`csstflux.core.flatsim.draw_true_seds`), pixels.
    """
    if n_pointings < 1:
        raise ConfigError(f"need at least one pointing, got {n_pointings}")
    try:
        dets = [SLITLESS_FOCAL_PLANE[d] for d in detectors]
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    rng = np.random.default_rng(seed)
    tp_band, tp_source = band_throughputs(throughput_dir)
    ds = open_predictions(predictions, cone=(ra, dec, radius_deg))
    obsid = np.asarray(ds["obsid"].values, np.int64)
    s_ra, s_dec = np.asarray(ds["ra"].values, float), np.asarray(ds["dec"].values, float)
    pred = np.asarray(ds["sed"].values, float)
    pred_err = np.asarray(ds["sed_err"].values, float)
    truth_sed = draw_true_seds(pred, np.nan_to_num(pred_err), rng,
                               correlation_length=correlation_length, ideal=ideal)
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    scale = np.exp(rng.uniform(lo, hi, obsid.size))
    flats = {d.name: TrueFlat.random(rng, shape=d.shape,
                                     wavelength_range=(BANDS[d.band].lo, BANDS[d.band].hi),
                                     amplitude=amplitude, ripple_amplitude=ripple)
             for d in dets}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, n_src = [], []
    cosd = max(np.cos(np.radians(dec)), 1e-6)
    for i in range(n_pointings):
        off = rng.uniform(-dither_arcsec, dither_arcsec, 2) / 3600.0
        ra0, dec0 = (ra + off[0] / cosd) % 360.0, dec + off[1]
        parts: list[dict[str, Any]] = []
        for d in dets:
            x, y = sky_to_pixel(d, s_ra, s_dec, ra0, dec0, pa_deg)
            on = np.flatnonzero(d.contains(x, y))
            counts, err = simulate_observations(
                truth_sed[on], x[on], y[on], flats[d.name], tp_band[d.band], exposure_time,
                scale[on], sky_per_pixel, read_noise, rng, ideal=ideal)
            parts.append(dict(id=obsid[on], ra=s_ra[on], dec=s_dec[on],
                              detector=np.full(on.size, d.name), x=x[on], y=y[on],
                              scale=scale[on], counts=counts, counts_err=err))
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        exp = Exposure(exposure_id=i, **cat,
                       throughput={d.name: tp_band[d.band] for d in dets},
                       pointing=(ra0, dec0, pa_deg), exposure_time=exposure_time,
                       attrs={"throughput_source": tp_source, "seed": seed, "ideal": ideal,
                              "bands": [d.band for d in dets], "amplitude": amplitude,
                              "ripple": ripple, "sky_per_pixel": sky_per_pixel,
                              "read_noise": read_noise, "predictions": str(predictions)})
        paths.append(write_exposure(out_dir, exp))
        n_src.append(len(exp))
    cubes, waves = {}, {}
    grid_x = grid_y = np.zeros(0)
    for d in dets:
        grid_x, grid_y = coarse_grid(d, grid)
        wave = OUTPUT_GRID.wavelength[band_pixels(tp_band[d.band])]
        cubes[d.name], waves[d.name] = flats[d.name].cube(grid_x, grid_y, wave), wave
    truth = write_truth(out_dir, cubes, waves, grid_x, grid_y,
                        {"seed": seed, "amplitude": amplitude, "ripple": ripple,
                         "ideal": ideal, "throughput_source": tp_source})
    return SimulationResult(paths, truth, int(obsid.size), n_src, [d.name for d in dets])


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
                             _add_arrays(a.n_changed, b.n_changed))


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
    summed over all exposures (None: every star counted once).
    """
    exp = read_exposure(path)
    mt = _match_exposure(exp, predictions, radius_arcsec)
    sel, star = mt.sel, mt.star
    eqs: dict[str, NormalEquations] = {}
    wvar: dict[str, Array] = {}
    changed: dict[str, NDArray[np.int64]] = {}
    band = {k: tuple(int(i) for i in np.flatnonzero(band_pixels(tp)))
            for k, tp in exp.throughput.items()}
    n_used = 0
    uniq = np.unique(star)
    if uniq.size:
        pred_all = np.asarray(mt.ds["sed"].isel(star=uniq).values, float)
        err_all = np.asarray(mt.ds["sed_err"].isel(star=uniq).values, float)
        obsid = np.asarray(mt.ds["obsid"].values, dtype=np.int64)[star]
        row = np.searchsorted(uniq, star)
        pred, perr = pred_all[row], err_all[row]
    else:
        pred = perr = np.zeros((0, OUTPUT_GRID.n))
        obsid = np.zeros(0, dtype=np.int64)
    for name, tp in exp.throughput.items():
        det = SLITLESS_FOCAL_PLANE[name]
        keep = exp.detector[sel] == name
        on, p, pe = sel[keep], pred[keep], perr[keep]
        sc: Any = "median" if star_scale == "median" else exp.scale[on]
        r, var_n, var_s = flux_ratio_variances(exp.counts[on], exp.counts_err[on], p,
                                               np.nan_to_num(pe), tp,
                                               exposure_time=exp.exposure_time,
                                               star_scale=sc)
        k = (repeats.of(name, obsid[keep]) if repeats is not None
             else np.ones(on.size, dtype=np.int64))
        var_w = var_n + k[:, None] * var_s
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(np.isfinite(var_w) & (var_w > 0), 1.0 / var_w, 0.0)
        err = np.sqrt(var_n + var_s)  # the marginal scatter of one ratio
        if clip is not None and name in clip:
            args = (exp.x[on], exp.y[on], r, err, order)
            out = outliers(clip[name], *args, shape=det.shape, nsigma=nsigma)
            was = (outliers(previous_clip[name], *args, shape=det.shape, nsigma=nsigma)
                   if previous_clip is not None and name in previous_clip
                   else np.zeros_like(out))
            changed[name] = np.sum((w > 0) & (out != was), axis=0).astype(np.int64)
            w = np.where(out, 0.0, w)
        eqs[name] = normal_equations(exp.x[on], exp.y[on], r, w, order, shape=det.shape)
        wvar[name] = np.sum(np.where(w > 0, w * err**2, 0.0), axis=0)
        n_used += int(on.size)
    return ExposureEquations(eqs, band, mt.matches, n_used, weighted_variance=wvar,
                             n_changed=changed)


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
        return {"matches": dict(self.equations.matches), "n_used": self.equations.n_used,
                "n_exposures": self.equations.n_exposures, "n_passes": self.n_passes,
                "clip_converged": self.provenance.get("clip_converged"),
                "max_repeats": self.provenance.get("max_repeats"), "detectors": dets}


def exposure_paths(exposures: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
                   ) -> list[str]:
    """Exposure groups named by ``exposures``: one folder, or a list of folders and groups."""
    items = [exposures] if isinstance(exposures, (str, os.PathLike)) else list(exposures)
    out: list[str] = []
    for item in items:
        p = Path(item)
        out.extend(str(q) for q in ([p] if p.name.endswith(".zarr") else list_exposures(p)))
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
    star_scale : "median" or "known"
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
    if star_scale not in ("median", "known"):
        raise ConfigError(f"star_scale must be 'median' or 'known', got {star_scale!r}")
    if not radius_arcsec > 0 or order < 0 or max_iter < 0:
        raise ConfigError("radius_arcsec must be > 0, order and max_iter >= 0")
    paths = exposure_paths(exposures)
    if not paths:
        raise ConfigError(f"no exposure-*.zarr in {exposures}")
    store_attrs = read_attrs(predictions)  # validates the store before any compute

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
        raise CsstFluxError("no exposure source matched a star of the predictions store; "
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
    prov = {"csstflux_version": csstflux.__version__,
            "model_id": model.get("id") if isinstance(model, dict) else None,
            "store": str(Path(predictions).resolve()), "n_exposures": total.n_exposures,
            "n_stars": total.n_used, "order": order, "star_scale": star_scale,
            "radius_arcsec": radius_arcsec, "nsigma": nsigma, "n_passes": n_passes,
            "clip_converged": converged, "max_repeats": max_repeats,
            "clip_changed_last": int(sum(int(v.sum()) for v in total.n_changed.values())),
            "matches": dict(total.matches)}
    return FlatBuild(sols, waves, grid_x, grid_y, total, clip, n_passes, prov)


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

