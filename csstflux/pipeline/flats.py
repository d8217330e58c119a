"""Simulated slitless exposures of a field, and the 3D flat built from them on Dask.

:func:`simulate` observes the stars of a predictions store through a known flat per detector
(:class:`csstflux.core.flatsim.TrueFlat`) and writes one exposure file per pointing plus the
truth (:mod:`csstflux.io.exposures`). :func:`build_flat` cross-matches each exposure's
sources to the store, turns each exposure into per-detector normal equations of the flat fit
(one Dask task per exposure, :func:`exposure_equations`), sums them by a pairwise tree
reduction of futures (only the small normal equations travel, never star arrays), solves
per detector and wavelength and normalises (:func:`csstflux.core.flatfit.solve_flat`).

Sigma clipping is done in passes over the exposures: after a pass the driver solves, sends the
(small) polynomial coefficients back to the tasks, and each task drops ratios more than
``nsigma`` σ from that model before forming its equations again; it stops when no count
changes or after ``max_iter`` passes.

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

import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from distributed import Client
from numpy.typing import NDArray

import csstflux
from csstflux.core.crossmatch import MatchStatus, angular_separation, match_nearest
from csstflux.core.detectors import SLITLESS_FOCAL_PLANE, Detector, sky_to_pixel
from csstflux.core.flatfit import FlatSolution, band_pixels, flux_ratios, solve_flat
from csstflux.core.flatsim import TrueFlat, draw_true_seds, simulate_observations
from csstflux.core.polyfit2d import (
    DEFAULT_ORDER,
    NormalEquations,
    evaluate,
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
                             a.n_used + b.n_used, a.n_exposures + b.n_exposures)


def exposure_equations(path: str | os.PathLike[str], predictions: str | os.PathLike[str], *,
                       order: int = DEFAULT_ORDER, radius_arcsec: float = 1.0,
                       star_scale: StarScaleMode = "median",
                       clip: dict[str, Array] | None = None,
                       nsigma: float = 3.0) -> ExposureEquations:
    """One task: read an exposure, cross-match it, form its per-detector normal equations.

    ``clip``: detector → un-normalised coefficients (n_band, n_terms) of a previous pass;
    ratios more than ``nsigma`` σ from that model are dropped.
    """
    exp = read_exposure(path)
    matches = dict.fromkeys(MATCH_KEYS, 0)
    matches["total"] = len(exp)
    eqs: dict[str, NormalEquations] = {}
    band = {k: tuple(int(i) for i in np.flatnonzero(band_pixels(tp)))
            for k, tp in exp.throughput.items()}
    n_used = 0
    ra0, dec0, _ = exp.pointing
    if len(exp):
        sep = angular_separation(exp.ra, exp.dec, ra0, dec0)
        radius_deg = (float(np.nanmax(sep)) + 2 * radius_arcsec) / 3600.0
        ds = open_predictions(predictions, cone=(ra0, dec0, radius_deg))
        m = match_nearest(exp.ra, exp.dec, np.asarray(ds["ra"].values),
                          np.asarray(ds["dec"].values), radius_arcsec)
        matches = {**m.counts()}
        sel = np.flatnonzero(m.matched)
        idx = m.index[sel]
        pred_all = np.asarray(ds["sed"].isel(star=np.sort(np.unique(idx))).values, float) \
            if idx.size else np.zeros((0, OUTPUT_GRID.n))
        err_all = np.asarray(ds["sed_err"].isel(star=np.sort(np.unique(idx))).values, float) \
            if idx.size else np.zeros((0, OUTPUT_GRID.n))
        row = np.searchsorted(np.sort(np.unique(idx)), idx)
        pred, perr = pred_all[row], err_all[row]
    for name, tp in exp.throughput.items():
        det = SLITLESS_FOCAL_PLANE[name]
        if not len(exp):
            on = np.zeros(0, dtype=np.int64)
            p, pe = np.zeros((0, OUTPUT_GRID.n)), np.zeros((0, OUTPUT_GRID.n))
        else:
            keep = exp.detector[sel] == name
            on, p, pe = sel[keep], pred[keep], perr[keep]
        sc: Any = "median" if star_scale == "median" else exp.scale[on]
        r, err = flux_ratios(exp.counts[on], exp.counts_err[on], p, np.nan_to_num(pe), tp,
                             exposure_time=exp.exposure_time, star_scale=sc)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
        if clip is not None and name in clip and on.size:
            model = evaluate(clip[name], exp.x[on], exp.y[on], order, shape=det.shape)
            with np.errstate(invalid="ignore"):
                out = ~(np.abs(r - model) <= nsigma * err)
            w = np.where(out & np.isfinite(model), 0.0, w)
        eqs[name] = normal_equations(exp.x[on], exp.y[on], r, w, order, shape=det.shape)
        n_used += int(on.size)
    return ExposureEquations(eqs, band, matches, n_used)


def tree_reduce(client: Client, futures: list[Any], name: str = "flat-reduce") -> Any:
    """Pairwise reduction of futures with :func:`merge` on the workers; returns a future.

    Tasks are named ``{name}-L{level}-{i}-{token}`` (Dask's dashboard groups them by prefix).
    """
    if not futures:
        raise ConfigError("no exposures to reduce")
    level = list(futures)
    depth = 0
    token = uuid.uuid4().hex[:8]
    while len(level) > 1:
        depth += 1
        nxt = [client.submit(merge, level[i], level[i + 1], pure=False,
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
    n_passes: int
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
                "detectors": dets}


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
               nsigma: float = 3.0, max_iter: int = 3) -> FlatBuild:
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

    def one_pass(clip: dict[str, Array] | None, k: int) -> ExposureEquations:
        futs = [client.submit(exposure_equations, p, str(predictions), order=order,
                              radius_arcsec=radius_arcsec, star_scale=star_scale, clip=clip,
                              nsigma=nsigma, pure=False,
                              key=f"flat-equations-p{k}-{i:05d}-{token}")
                for i, p in enumerate(paths)]
        total = tree_reduce(client, futs, name=f"flat-reduce-p{k}")
        return total.result()  # type: ignore[no-any-return]

    clip: dict[str, Array] | None = None
    total = one_pass(None, 0)
    if total.n_used == 0:
        raise CsstFluxError("no exposure source matched a star of the predictions store; "
                            "a flat needs hundreds of matched stars per detector",
                            path=predictions, found=dict(total.matches))
    n_passes = 1
    for _ in range(max_iter):
        fits_ = {k: solve(v).coeffs for k, v in total.equations.items()}
        nxt = one_pass(fits_, n_passes)
        n_passes += 1
        same = all(np.array_equal(nxt.equations[k].n, total.equations[k].n)
                   for k in total.equations)
        clip, total = fits_, nxt
        if same:
            break
    sols, waves = {}, {}
    grid_x = grid_y = np.zeros(0)
    for k, neq in total.equations.items():
        grid_x, grid_y = coarse_grid(SLITLESS_FOCAL_PLANE[k], grid)
        sols[k] = solve_flat(neq, grid_x, grid_y)
        waves[k] = OUTPUT_GRID.wavelength[list(total.band[k])]
    model = store_attrs.get("model")
    prov = {"csstflux_version": csstflux.__version__,
            "model_id": model.get("id") if isinstance(model, dict) else None,
            "store": str(Path(predictions).resolve()), "n_exposures": total.n_exposures,
            "n_stars": total.n_used, "order": order, "star_scale": star_scale,
            "radius_arcsec": radius_arcsec, "nsigma": nsigma, "n_passes": n_passes,
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

