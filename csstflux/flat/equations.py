"""The flat fit's work on one exposure: cross-match, census of repeated stars, normal equations.

Each exposure is one task (:func:`csstflux.pipeline.flats.build_flat` runs them on Dask and sums
the results): :func:`exposure_census` counts, per detector, the store stars the exposure's
sources matched (:class:`csstflux.flat.fit.StarRepeats`: ids, never spectra), and
:func:`exposure_equations` turns the exposure into per-detector normal equations of the flat
fit (:class:`ExposureEquations`, summed by :func:`merge`).

Repeated stars. A star observed in ``k`` exposures on a detector carries the same SED error in
all of them; the weights account for it (:mod:`csstflux.flat.fit`, "Repeated observations"),
with ``k`` looked up in the census summed over all exposures.

Sigma clipping. Given the previous pass's model, a task drops the ratios more than ``nsigma``
marginal σ from it (a ratio clipped against an early, outlier-pulled model comes back once the
model moves away from it) and counts, per band pixel, the ratios whose kept/clipped status
differs from the pass before (it gets that pass's model too: no state is kept between passes).

Positions and resolution. The positions are each exposure's traces per source and wavelength
(one position per source for exposures without); each extracted spectrum is brought to the
standards' R = 200 before ratios are formed (:func:`csstflux.flat.resolution.match_extracted`;
pixels within the kernel's reach of a cut are left out), and CONTAMINATED pixels and those the
matching kernel mixes them into are left out (:func:`extracted_spectra`), counted per detector.
Noise-free traced simulations recover an order-2 flat to 4e-8 (float32 counts).

Star scale (``FlatSettings.star_scale``): the predicted spectrum each ratio divides by.

- ``"known"``: the relative SED times the source's recorded ``scale``, reddening and photon
  conversion (:func:`csstflux.flat.stars.known_rate`; simulations only): the whole flat is
  recovered.
- ``"anchored"``: the store's ``sed_abs`` (``csstflux anchor``: the SED tied to photometry,
  observed frame, erg s⁻¹ cm⁻² Å⁻¹) times the exposure's recorded ``counts_per_flux``; its
  ``sed_abs_err`` (relative SED, scale and E(B−V) errors) is the star's SED error, common to
  all its exposures. Stars flagged ``NO_PHOTOMETRY`` or ``PHOT_INCONSISTENT`` or without a
  finite ``sed_abs`` are left out and counted (``unanchored``, sources per reason). The whole
  flat is recovered without any truth. A store never anchored, or exposures in relative
  units, are refused before any task runs (:func:`check_anchored`).
- ``"median"``: each star's ratios divided by their band median: only the chromatic part of
  the flat is recovered (see :mod:`csstflux.flat.fit`). It ignores reddening: a reddened
  star's own 10^(−0.4 E k) tilt across the band is unmodelled scatter (simulations with
  E(B−V) exponential of mean 0.1 moved two nights' median flats apart by up to 0.18, against
  < 0.05 unreddened), so simulate with ``ebv_mean=0`` for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import ConfigError, EmptyResultError
from csstflux.flags import Flag
from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE
from csstflux.flat.fit import StarRepeats, band_pixels, flux_ratio_variances, outliers
from csstflux.flat.polyfit2d import NormalEquations, normal_equations
from csstflux.flat.resolution import kernel_reach, match_extracted, spread
from csstflux.flat.settings import FlatSettings
from csstflux.flat.stars import known_rate
from csstflux.grids import OUTPUT_GRID
from csstflux.io.stores.anchors import anchor_attrs
from csstflux.io.stores.exposures import (
    Exposure,
    list_exposures,
    read_exposure,
    read_exposure_attrs,
)
from csstflux.io.stores.predictions import open_predictions
from csstflux.sky.crossmatch import MatchStatus, angular_separation, match_nearest

Array = NDArray[np.float64]
_A = TypeVar("_A", NDArray[np.float64], NDArray[np.int64], int)
#: Why a matched source is left out of an anchored build (keys of ``unanchored``).
UNANCHORED_KEYS = ("no_photometry", "phot_inconsistent", "no_sed_abs")
#: Source counts per cross-match outcome (keys of ``matches``, beside ``total``).
MATCH_KEYS = tuple(s.name.lower() for s in MatchStatus)


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


def exposure_equations(path: str | os.PathLike[str], predictions: str | os.PathLike[str],
                       settings: FlatSettings | None = None, *,
                       clip: dict[str, Array] | None = None,
                       repeats: StarRepeats | None = None,
                       previous_clip: dict[str, Array] | None = None) -> ExposureEquations:
    """One task: read an exposure, cross-match it, form its per-detector normal equations.

    ``settings``: the polynomial order, match radius, star scale and clipping threshold
    (None: the defaults).
    ``clip``: detector → un-normalised coefficients (n_band, n_terms) of the previous pass;
    ratios more than ``settings.nsigma`` marginal σ from that model are dropped.
    ``previous_clip``: the model of the pass before it (None: no clipping then), only to count
    the ratios whose status changed (``n_changed``). ``repeats``: the census of
    :func:`exposure_census` summed over all exposures (None: every star counted once).
    ``settings.star_scale`` chooses the predicted spectrum (module docstring): the relative
    ``sed`` (``"median"``), ``sed`` with the recorded scale and reddening (``"known"``,
    :func:`csstflux.flat.stars.known_rate`), or the anchored ``sed_abs`` times the exposure's
    ``counts_per_flux`` (``"anchored"``); its error enters the weights as the star's SED term
    in every case.
    """
    settings = settings or FlatSettings()
    order, nsigma, star_scale = settings.order, settings.nsigma, settings.star_scale
    anchored = star_scale == "anchored"
    exp = read_exposure(path)
    if anchored and exp.counts_per_flux is None:
        raise ConfigError("star_scale 'anchored' needs exposures in physical units (with "
                          "counts_per_flux); this one has relative units", path=path)
    mt = _match_exposure(exp, predictions, settings.radius_arcsec)
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


def exposure_paths(exposures: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                   required: bool = False) -> list[str]:
    """Exposure groups named by ``exposures``: one folder, or a list of folders and groups.

    ``required``: none found is an :class:`~csstflux.errors.EmptyResultError` (build-flat
    checks this before it starts a cluster)."""
    items = [exposures] if isinstance(exposures, (str, os.PathLike)) else list(exposures)
    out: list[str] = []
    for item in items:
        p = Path(item)
        out.extend(str(q) for q in ([p] if p.name.endswith(".zarr") else list_exposures(p)))
    if required and not out:
        raise EmptyResultError(f"no exposure-*.zarr in {exposures}: nothing to fit")
    return out


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
