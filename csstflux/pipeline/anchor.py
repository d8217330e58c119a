"""``csstflux anchor``: absolute, reddened standards from photometry, on Dask, in place.

Order of work: validate the options (bands, extinction law, R_V, hold-outs, the store and its
SEDs, the photometry source) before any task runs; create the anchor arrays
(:mod:`csstflux.io.stores.anchors`) or check that the existing ones were made with the same
options (then resume: only chunks without a done marker run; different options need
``overwrite``); with ``--photometry FILE`` the driver reads the table once, aligns it to the
store's obsids and writes ``phot_mag``/``phot_mag_err``/``ebv_prior*`` chunk by chunk (so the
tasks read paths, never data); with ``--photometry header`` each task takes the store's
``header_mag`` (recorded by ``predict-catalog`` from the LAMOST headers). One task per store
chunk (``anchor-chunk-<i>``) fits every star of its chunk
(:func:`csstflux.photometry.anchor.fit_anchor`) in blocks of :data:`BLOCK` stars, writes its
region and then its marker. The summary (JSON
with ``--json``) has the hold-out statistics computed from the store's arrays.

Hold-outs. ``holdout=("u", "z")`` keeps every selected band whose name is ``u`` or ends in
``_u`` (and the same for ``z``) out of the fit; for each such band the summary gives, over the
anchored stars (fitted, no ``PHOT_INCONSISTENT``, a finite held-out magnitude), the median and
the robust σ (1.4826 × median absolute deviation) of observed − predicted AB magnitude.
Stars flagged OUT_OF_DISTRIBUTION, OUTSIDE_DOMAIN, BAD_INPUT, NOT_STAR or NONFINITE_OUTPUT
are anchored like the others but left out of these statistics (``n_anchored`` counts the
stars that enter them).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from distributed import as_completed

from csstflux._version import __version__
from csstflux.errors import ConfigError, StoreError
from csstflux.flags import Flag
from csstflux.io.formats.photometry_table import (
    PhotometryColumns,
    clean_magnitudes,
    read_photometry_table,
    read_table,
)
from csstflux.io.lock import store_lock
from csstflux.io.stores.anchors import (
    anchor_attrs,
    create_anchor_arrays,
    done_anchor_chunks,
    open_store,
    store_array,
    write_anchor_block,
    write_anchor_marker,
)
from csstflux.io.stores.predictions import finalize
from csstflux.logs import fmt_path, track
from csstflux.photometry.anchor import Anchor, AnchorConfig, fit_anchor
from csstflux.photometry.bands import KNOWN_BANDS, load_bands, parse_band_list
from csstflux.photometry.extinction import LAWS, extinction_k
from csstflux.photometry.synth import SyntheticPhotometry
from csstflux.pipeline.cluster import ClusterHandle

logger = logging.getLogger(__name__)

#: Stars fitted together inside a task (memory: BLOCK × bands × ~600 pixels × 8 bytes × 3).
BLOCK = 512
#: Bands used with ``--photometry header`` when ``--bands`` is not given.
HEADER_DEFAULT_BANDS = ("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z",
                        "ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y")
#: A prior column without ``<column>_err``: σ = max(PRIOR_MIN_ERR, PRIOR_REL_ERR × value).
PRIOR_REL_ERR, PRIOR_MIN_ERR = 0.16, 0.02
#: Flags that exclude a star from the hold-out and fit statistics: no usable anchor, or a
#: prediction that is not to be trusted (a star outside the training domain says nothing
#: about the SEDs of the stars inside it).
_BAD = np.uint32(Flag.NO_PHOTOMETRY | Flag.PHOT_INCONSISTENT | Flag.NONFINITE_OUTPUT
                 | Flag.OUT_OF_DISTRIBUTION | Flag.OUTSIDE_DOMAIN | Flag.BAD_INPUT
                 | Flag.NOT_STAR)


@dataclass(frozen=True)
class AnchorOptions:
    """One ``csstflux anchor`` run."""

    store: str
    """Predictions store, modified in place."""
    photometry: str = "header"
    """``"header"`` (the store's ``header_mag``) or a table file (module docstring)."""
    bands: tuple[str, ...] = ()
    """Band registry names; default: the header's bands, or every registry band the table has."""
    holdout: tuple[str, ...] = ()
    """Bands (registry names or short suffixes such as ``u``) kept out of the fit."""
    law: str = "F99"
    """Extinction law (:data:`csstflux.photometry.extinction.LAWS`)."""
    rv: float = 3.1
    """R_V of the law."""
    ebv_prior: str | None = None
    """Table column holding a prior E(B−V) (FILE only)."""
    csst_filters: str | None = None
    """Folder of the CSST imaging curves (bands ``csst_*``)."""
    fit: AnchorConfig = field(default_factory=AnchorConfig)
    overwrite: bool = False
    """Redo every chunk, also when the store was anchored with other options."""

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise ConfigError(f"unknown extinction law {self.law!r}; choose from {LAWS}")
        if not 1.0 < self.rv < 7.0:
            raise ConfigError(f"R_V must lie in 1..7, got {self.rv}")
        if self.photometry != "header" and not os.path.isfile(self.photometry):
            raise ConfigError(f"--photometry must be 'header' or a table file; "
                              f"{self.photometry!r} is neither")
        if self.ebv_prior is not None and self.photometry == "header":
            raise ConfigError("--ebv-prior needs --photometry FILE (the column is read there)")


def resolve_bands(opts: AnchorOptions, table_columns: Sequence[str] | None
                  ) -> tuple[tuple[str, ...], np.ndarray]:
    """Selected bands and the (nb,) mask of those in the fit (hold-outs False)."""
    if opts.bands:
        bands = parse_band_list(",".join(opts.bands))
    elif table_columns is None:
        bands = HEADER_DEFAULT_BANDS
    else:
        lower = {c.lower() for c in table_columns}
        bands = tuple(b for b in KNOWN_BANDS if b.lower() in lower)
        if not bands:
            raise ConfigError("the photometry table has no column named after a known band "
                              f"(e.g. {', '.join(list(KNOWN_BANDS)[:4])})")
    fit = np.ones(len(bands), bool)
    for h in opts.holdout:
        hit = [i for i, b in enumerate(bands) if b == h or b.endswith(f"_{h}")]
        if not hit:
            raise ConfigError(f"--holdout {h!r} matches none of the bands {list(bands)}")
        fit[hit] = False
    if fit.sum() < 1:
        raise ConfigError("every band is held out: nothing left to fit")
    return bands, fit


def fingerprint(opts: AnchorOptions, bands: Sequence[str], fit_mask: np.ndarray,
                table_sha: str | None) -> str:
    doc = {"photometry": "header" if opts.photometry == "header" else table_sha,
           "bands": list(bands), "fit": fit_mask.tolist(), "law": opts.law, "rv": opts.rv,
           "ebv_prior": opts.ebv_prior, "config": asdict(opts.fit)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_anchor(opts: AnchorOptions, bands: Sequence[str]) -> tuple[Anchor, np.ndarray]:
    """The fit's fixed ingredients and each band's AB offset (nb,): built once per process
    and options (every chunk task of a worker reuses them; filter curves are files)."""
    return _anchor(tuple(bands), opts.csst_filters, opts.law, opts.rv, opts.fit)


@functools.lru_cache(maxsize=8)
def _anchor(bands: tuple[str, ...], csst_filters: str | None, law: str, rv: float,
            fit: AnchorConfig) -> tuple[Anchor, np.ndarray]:
    phot = load_bands(bands, csst_dir=csst_filters)
    synth = SyntheticPhotometry.from_bands(phot)
    k = extinction_k(synth.wavelength, law, rv)
    return (Anchor(synth=synth, k=np.asarray(k, float), config=fit),
            np.array([b.ab_offset for b in phot]))


def anchor_chunk(store: str, index: int, start: int, stop: int, opts: AnchorOptions,
                 bands: tuple[str, ...], fit_mask: np.ndarray) -> dict[str, Any]:
    """Fit and write stars ``start:stop`` of ``store``, then the chunk's marker."""
    g = open_store(store)
    anchor, offsets = build_anchor(opts, bands)
    sed = np.asarray(g["sed"][start:stop], float)  # type: ignore[index]
    sed_err = np.asarray(g["sed_err"][start:stop], float)  # type: ignore[index]
    if opts.photometry == "header":
        mag, mag_err = header_columns(g, bands, start, stop)
        prior = prior_err = np.full(stop - start, np.nan)
    else:   # written by the driver (write_table_photometry), catalogue system
        mag = np.asarray(g["phot_mag_in"][start:stop], float)  # type: ignore[index]
        mag_err = np.asarray(g["phot_mag_err_in"][start:stop], float)  # type: ignore[index]
        prior = np.asarray(g["ebv_prior"][start:stop], float)  # type: ignore[index]
        prior_err = np.asarray(g["ebv_prior_err"][start:stop], float)  # type: ignore[index]
    out = fit_block(anchor, sed, sed_err, mag + offsets, mag_err, fit_mask, prior, prior_err)
    bits = out.pop("_flags")
    write_anchor_block(g, start, stop, out, bits)
    summary = {"n": stop - start, "n_fitted": int(np.isfinite(out["ebv"]).sum())}
    write_anchor_marker(store, index, summary)
    return summary


def fit_block(anchor: Anchor, sed: np.ndarray, sed_err: np.ndarray, mag_ab: np.ndarray,
              mag_err: np.ndarray, fit_mask: np.ndarray, prior: np.ndarray,
              prior_err: np.ndarray) -> dict[str, np.ndarray]:
    """Every anchor array for a run of stars, fitted :data:`BLOCK` at a time."""
    n, nb = mag_ab.shape
    parts: list[dict[str, np.ndarray]] = []
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        res = fit_anchor(anchor, sed[a:b], sed_err[a:b], mag_ab[a:b], mag_err[a:b],
                         fit_bands=fit_mask, ebv_prior=prior[a:b], ebv_prior_err=prior_err[a:b])
        flux, err = anchor.sed_abs(sed[a:b], sed_err[a:b], res)
        model = anchor.synth.ab_mags(flux)
        parts.append({
            "phot_mag": mag_ab[a:b], "phot_mag_err": np.sqrt(
                np.where(np.isfinite(mag_err[a:b]), mag_err[a:b] ** 2, 0.0)
                + anchor.config.floor_mag ** 2) * np.where(np.isfinite(mag_ab[a:b]), 1, np.nan),
            "phot_mag_model": model, "phot_used": res.used, "phot_rejected": res.rejected,
            "ebv": res.ebv, "ebv_err": res.ebv_err, "ebv_prior": prior[a:b],
            "ebv_prior_err": prior_err[a:b], "scale": res.scale, "scale_err": res.scale_err,
            "phot_chi2": res.chi2, "phot_ndof": res.ndof, "sed_abs": flux,
            "sed_abs_err": err, "_flags": res.flags})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for k in out:
        if out[k].dtype.kind == "f" and k != "_flags":
            out[k] = out[k].astype(np.float32)
    out["phot_ndof"] = out["phot_ndof"].astype(np.int16)
    return out


def header_columns(g: Any, bands: Sequence[str], start: int, stop: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue-system magnitudes (n, nb) of ``bands`` from ``header_mag`` of a store's
    group or of a dataset ``g`` (NaN for bands the header never carries) and NaN errors (the
    floor is used)."""
    hdr = np.asarray(g["header_mag"][start:stop], float)
    names = [str(v) for v in np.asarray(g["header_band"][:])]
    mag = np.full((stop - start, len(bands)), np.nan)
    for j, b in enumerate(bands):
        if b in names:
            mag[:, j] = hdr[:, names.index(b)]
    return clean_magnitudes(mag), np.full_like(mag, np.nan)


def _check_store(opts: AnchorOptions) -> Any:
    g = open_store(opts.store)
    attrs = dict(g.attrs)
    if not attrs.get("completed"):
        raise StoreError("the predictions store is not complete; finish predict-catalog first",
                         path=opts.store)
    if opts.photometry == "header" and ("header_mag" not in g or "header_band" not in g):
        raise StoreError("the store has no header photometry (header_mag): it was written by "
                         "an older csstflux; rerun predict-catalog or use --photometry FILE",
                         path=opts.store)
    return g


def table_columns(opts: AnchorOptions, table: Any, bands: Sequence[str], obsid: Any
                  ) -> PhotometryColumns:
    """The table's photometry aligned to ``obsid``, the prior's default error filled in
    (max(PRIOR_MIN_ERR, PRIOR_REL_ERR × value) where the table gives none)."""
    cols = read_photometry_table(table, bands, obsid, opts.ebv_prior, path=opts.photometry)
    if opts.ebv_prior is None:
        return cols
    default = np.maximum(PRIOR_MIN_ERR, PRIOR_REL_ERR * np.abs(cols.ebv_prior))
    err = cols.ebv_prior_err
    return replace(cols, ebv_prior_err=np.where(np.isfinite(err) & (err > 0), err, default))


def write_table_photometry(opts: AnchorOptions, g: Any, bands: Sequence[str],
                           table: Any) -> int:
    """Align the table to the store and write phot_mag (catalogue system), the catalogue
    errors and the prior, chunk by chunk; returns the number of stars matched."""
    n, chunk = int(g.attrs["n_stars"]), int(g.attrs["chunk_stars"])
    cols = table_columns(opts, table, bands, np.asarray(g["obsid"][:], np.int64))
    prior_err = cols.ebv_prior_err
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        g["phot_mag_in"][a:b] = cols.mag[a:b].astype(np.float32)
        g["phot_mag_err_in"][a:b] = cols.mag_err[a:b].astype(np.float32)
        g["ebv_prior"][a:b] = cols.ebv_prior[a:b].astype(np.float32)
        g["ebv_prior_err"][a:b] = prior_err[a:b].astype(np.float32)
    return cols.n_matched


@dataclass(frozen=True)
class AnchorRun:
    """What a run did and found."""

    store: str
    n_stars: int
    n_chunks_run: int
    n_chunks_skipped: int
    summary: dict[str, Any]


def run_anchor(opts: AnchorOptions, handle: ClusterHandle | None) -> AnchorRun:
    """Anchor every star of ``opts.store`` (module docstring); ``handle`` None runs the
    chunks in this process. The store is locked for the run, as ``predict-catalog`` locks it
    (:func:`csstflux.io.lock.store_lock`). Progress is logged
    (:class:`csstflux.logs.Progress`)."""
    with store_lock(opts.store):
        return _run_anchor(opts, handle)


def _run_anchor(opts: AnchorOptions, handle: ClusterHandle | None) -> AnchorRun:
    g = _check_store(opts)
    table = table_cols = table_sha = None
    if opts.photometry != "header":
        table = read_table(opts.photometry)   # read once: columns here, values below
        table_cols = table.colnames
        table_sha = _sha256(opts.photometry)
    bands, fit_mask = resolve_bands(opts, table_cols)
    build_anchor(opts, bands)   # curves, law and R_V checked before any task
    fp = fingerprint(opts, bands, fit_mask, table_sha)
    old = anchor_attrs(opts.store)
    n, chunk = int(g.attrs["n_stars"]), int(g.attrs["chunk_stars"])
    n_chunks = -(-n // chunk)
    if old is not None and old.get("fingerprint") != fp and not opts.overwrite:
        raise ConfigError("the store was anchored with other options (bands, law, photometry "
                          "or fit settings); pass --overwrite to redo it", path=opts.store)
    fresh = old is None or old.get("fingerprint") != fp or opts.overwrite
    attrs = {"fingerprint": fp, "photometry": opts.photometry, "photometry_sha256": table_sha,
             "bands": list(bands), "holdout": [b for b, f in zip(bands, fit_mask, strict=True)
                                               if not f],
             "law": opts.law, "rv": opts.rv, "ebv_prior": opts.ebv_prior, **asdict(opts.fit),
             "csstflux_version": __version__, "completed": None,
             "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if fresh:
        create_anchor_arrays(opts.store, bands, attrs)
        if table_cols is not None:
            matched = write_table_photometry(opts, open_store(opts.store), bands, table)
            logger.info("photometry table: %d of %d stars matched", matched, n)
    done = done_anchor_chunks(opts.store)
    todo = [i for i in range(n_chunks) if i not in done]
    args = [(i, i * chunk, min((i + 1) * chunk, n)) for i in todo]
    if args:
        logger.info("anchoring %s to %s: %d of %d chunks to do", fmt_path(opts.store),
                    "the header photometry" if table is None else fmt_path(opts.photometry),
                    len(args), n_chunks)
    if handle is None:
        for i, s, e in track(args, "anchoring", unit="chunks", logger=logger):
            anchor_chunk(opts.store, i, s, e, opts, bands, fit_mask)
    elif args:
        futures = [handle.client.submit(anchor_chunk, opts.store, i, s, e, opts, bands,
                                        fit_mask, key=f"anchor-chunk-{i:06d}-{fp[:8]}",
                                        retries=2, pure=False) for i, s, e in args]
        for f in track(as_completed(futures), "anchoring", len(futures), unit="chunks",
                       logger=logger):
            f.result()
    summary = anchor_summary(opts.store)
    g = open_store(opts.store)
    final = {**dict(g.attrs["anchor"]), "summary": summary,  # type: ignore[arg-type]
             "completed": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    finalize(opts.store, {"anchor": final})
    return AnchorRun(store=opts.store, n_stars=n, n_chunks_run=len(todo),
                     n_chunks_skipped=n_chunks - len(todo), summary=summary)


def robust_stats(x: np.ndarray) -> tuple[int, float, float]:
    """(n, median, 1.4826 × MAD) of the finite values."""
    x = x[np.isfinite(x)]
    if not x.size:
        return 0, float("nan"), float("nan")
    med = float(np.median(x))
    return int(x.size), med, float(1.4826 * np.median(np.abs(x - med)))


def anchor_summary(store: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"n_anchored", "ebv_median", "holdout": {band: {"n", "median", "robust_sigma"}},
    "fit_rms", "fit": {band: ...}, "flag_counts"}`` from the store's anchor arrays."""
    g = open_store(store, mode="r")
    meta: dict[str, Any] = dict(g.attrs["anchor"])  # type: ignore[arg-type]
    bands = [str(b) for b in np.asarray(store_array(g, "phot_band")[:])]
    held = set(meta.get("holdout", []))
    flags = np.asarray(store_array(g, "flags")[:], np.uint32)
    ebv = np.asarray(store_array(g, "ebv")[:], float)
    ok = np.isfinite(ebv) & ((flags & _BAD) == 0)
    out: dict[str, Any] = {"n_stars": int(flags.size), "n_anchored": int(ok.sum()),
                           "ebv_median": float(np.median(ebv[ok])) if ok.any() else None,
                           "flag_counts": {
                               "NO_PHOTOMETRY": int(((flags & Flag.NO_PHOTOMETRY) > 0).sum()),
                               "PHOT_INCONSISTENT": int(
                                   ((flags & Flag.PHOT_INCONSISTENT) > 0).sum())},
                           "holdout": {}, "fit": {}}
    used = np.asarray(store_array(g, "phot_used")[:], bool)
    pooled: list[np.ndarray] = []
    for j, b in enumerate(bands):
        resid = (np.asarray(store_array(g, "phot_mag")[:, j], float)
                 - np.asarray(store_array(g, "phot_mag_model")[:, j], float))
        if b in held:
            nh, med, sig = robust_stats(resid[ok])
            out["holdout"][b] = {"n": nh, "median": med, "robust_sigma": sig}
        else:
            r = resid[ok & used[:, j]]
            nf, med, sig = robust_stats(r)
            out["fit"][b] = {"n": nf, "median": med, "robust_sigma": sig}
            pooled.append(r[np.isfinite(r)])
    allr = np.concatenate(pooled) if pooled else np.zeros(0)
    out["fit_rms"] = float(np.sqrt(np.mean(allr**2))) if allr.size else None
    return out
