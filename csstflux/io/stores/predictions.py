"""The predictions store: predicted SEDs of a whole catalogue in one Zarr v3 group.

Layout (n = number of stars, sorted by ``healpix``; every per-star array chunked by
``chunk_stars`` along ``star``; every array carries Zarr v3 ``dimension_names``, so
:func:`xarray.open_zarr` sees the dimensions)::

    sed, sed_err  (star, wavelength) float32  scaled SED and its 1σ on grids.OUTPUT_GRID
                                              (fill NaN: not predicted, or no prediction)
    sed_err_ref   (wavelength,) float32       the model's reference term ρ (relative), when
                                              its card has one: hypot(sed_err/|sed|, ρ) is the
                                              relative 1σ against an independent library
    wavelength    (wavelength,)  float64      OUTPUT_GRID centres, vacuum Å
    obsid         (star,) int64               LAMOST observation id
    ra, dec       (star,) float64             ICRS, deg (NaN: no valid position, see below)
    snr_g, teff, logg, feh, rv (star,) float32  catalogue values (K, dex, dex, km/s; NaN unknown)
    class         (star,) str                 LASP class
    healpix       (star,) int64               nested HEALPix index at order HEALPIX_ORDER
                                              (-1: no valid position)
    source_file   (star,) str                 spectrum file (see "File names" below)
    flags         (star,) uint32              csstflux.flags.Flag bits (fill 0: no flag, or
                                              not written yet; done markers tell which)
    n_masked_sed  (star,) int16               SED pixels set to NaN because the model gave
                                              a value <= 0 there (flag NEGATIVE_SED when one
                                              lies inside GU, GV or GI)
    teff_est, logg_est, feh_est and their *_err, novelty_chi2, color_z (star,) float32
                                              what the spectrum says of itself
                                              (csstflux.library.domain; NaN: not predicted)
    header_mag    (star, header_band) float32
                                              the input catalogue's magnitudes from the
                                              LAMOST header, each in its catalogue's own
                                              system (csstflux.io.formats.lamost_photometry; NaN:
                                              none, file unreadable, or not written yet)
    header_band   (header_band,) str          its band names (lamost_photometry.HEADER_BANDS:
                                              sdss_u..sdss_z, ps1_g..ps1_y), a coordinate
    chunk_healpix_min, chunk_healpix_max (chunk,) int64
                                              first/last healpix of each star chunk (-1: the
                                              chunk holds no star with a position)
    failures/     file, error (failure,) str  files that could not be processed, and
                                              catalogue rows dropped as duplicate obsids

Older stores. Format 2 stores (before ``header_mag``/``header_band``) open and query as
before (:func:`open_predictions` shows the arrays a store has); they cannot be resumed by this
version (the job refuses a store of another format version).

Stars without a sky position. A catalogue row whose RA is not in [0, 360) or Dec not in
[-90, 90] (blank, NaN, LASP's -9999, RA 400, Dec -95) is kept and predicted like any other
(flag ``BAD_COORDS``), with ``ra`` and ``dec`` NaN and ``healpix`` -1; these stars follow
all the indexed ones (``attrs["healpix"]["n_indexed"]`` is where they start), so the table
stays sorted for sky queries, which never return them. Select them with
``ds.isel(star=ds.healpix.values < 0)`` or by their flag.

File names. Zarr v3 text arrays hold valid Unicode only. A file name that is not valid UTF-8
(read with ``surrogateescape``, as :func:`os.fsdecode` does) is stored with each undecodable
byte written as ``\\xNN`` (:func:`printable`).

Why order 12 (nside 4096, pixels ≈ 0.86′ across). Stars are sorted by their nested index at
this order; in the nested scheme the index at a coarser order k is ``healpix >> 2(12 − k)``, so
the stars of any pixel at any order ≤ 12 form one contiguous run of the sorted table and a sky
query is a handful of index ranges. The order is fine enough that a cone of a few arcmin maps
to a few pixels and so to one or two chunks (only nearby stars are read), and coarse enough
that the index fits int64 with room to spare and a cone of a few degrees needs only a few
hundred coarse pixels (queries drop to a coarser order for large cones, see
:func:`query_indices`).

Concurrent writing. :func:`create_store` writes every per-star column and the metadata; the
SEDs and flags are then filled by :func:`write_block` over star regions. Zarr writes whole
chunks, so two writers that touch the same chunk can lose each other's data: every region must
start on a chunk boundary and end on one (or at the last star), which :func:`write_block`
checks. Call :func:`finalize` last: it consolidates the metadata so that xarray opens the
store with one read.

Write failures. Every write (store creation, a star region, the failures table, the final
attributes) turns an ``OSError`` (disk full, permission, quota, read-only file system) into a
:class:`~csstflux.errors.StoreError` naming the file and the system's reason; Zarr replaces
each chunk file atomically, so a failed write leaves the chunk's previous contents.
:func:`check_output_location` finds an unusable output folder before any work is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from numpy.typing import ArrayLike, NDArray

from csstflux.containers import text_array
from csstflux.errors import StoreError
from csstflux.flags import Flag
from csstflux.grids import OUTPUT_GRID, all_grids_attrs
from csstflux.io.atomic import replace_dir, temporary_dir
from csstflux.io.formats.lamost_photometry import HEADER_BANDS
from csstflux.io.validate import has_sky_position
from csstflux.sky.geometry import healpix_index
from csstflux.sky.query import select

if TYPE_CHECKING:
    import xarray

#: Nested HEALPix order of the ``healpix`` column (nside 4096); see the module docstring.
HEALPIX_ORDER = 12
DEFAULT_CHUNK_STARS = 4096
FORMAT = "csstflux-predictions"
#: 2: ``n_masked_sed`` and stars without a position (healpix -1) at the end.
#: 3: ``header_mag`` (star, header_band) and its ``header_band`` names.
FORMAT_VERSION = 3
STAR, WAVELENGTH, CHUNK, FAILURE = "star", "wavelength", "chunk", "failure"
HEADER_BAND = "header_band"
HEADER_MAG_ATTRS = {
    "units": "mag",
    "long_name": "input-catalogue magnitudes from the LAMOST header, in each catalogue's own "
                 "system (csstflux.io.formats.lamost_photometry)"}
#: Attributes of ``sed_err_ref``.
REFERENCE_SIGMA_ATTRS: dict[str, str] = {
    "units": "1",
    "long_name": "reference term rho of the model: relative 1 sigma against an independent "
                 "library is hypot(sed_err / |sed|, sed_err_ref)",
    "description": "sed_err is the 1 sigma on the training library's flux scale (what a "
                   "flat field, built from ratios of the same stars, needs); sed_err_ref adds, "
                   "in quadrature and relative to sed, the disagreement of an independent "
                   "spectrophotometric library with it (csstflux calibrate-reference)"}
_RESERVED_ATTRS = ("format", "format_version", "n_stars", "chunk_stars", "healpix", "flags",
                   *all_grids_attrs())
_COLUMN_ATTRS: dict[str, dict[str, str]] = {
    "obsid": {"long_name": "LAMOST observation id"}, "ra": {"units": "deg"},
    "dec": {"units": "deg"}, "snr_g": {"long_name": "g-band signal-to-noise ratio"},
    "teff": {"units": "K"}, "logg": {"units": "dex"}, "feh": {"units": "dex"},
    "rv": {"units": "km/s"}, "class": {"long_name": "LASP class"},
    "healpix": {"long_name": f"nested HEALPix index at order {HEALPIX_ORDER}"},
    "source_file": {"long_name": "spectrum file",
                    "comment": "bytes of a name that are not UTF-8 are written \\xNN"}}
#: Per-star estimates from the input spectrum alone (csstflux.library.domain): name → attrs.
ESTIMATE_COLUMNS: dict[str, dict[str, str]] = {
    "teff_est": {"units": "K", "long_name": "Teff estimated from the input spectrum"},
    "teff_est_err": {"units": "K", "long_name": "1 sigma of teff_est"},
    "logg_est": {"units": "dex", "long_name": "log g estimated from the input spectrum"},
    "logg_est_err": {"units": "dex", "long_name": "1 sigma of logg_est"},
    "feh_est": {"units": "dex", "long_name": "[Fe/H] estimated from the input spectrum"},
    "feh_est_err": {"units": "dex", "long_name": "1 sigma of feh_est"},
    "input_snr": {"units": "1", "long_name": "median |flux|/error of the normalised input (the "
                  "S/N at which the novelty_chi2 threshold is looked up)"},
    "novelty_chi2": {"units": "1", "long_name": "reduced chi2 of the input against the "
                     "domain model (OUT_OF_DISTRIBUTION above the S/N-dependent threshold "
                     "in attrs['domain_model'])"},
    "color_z": {"units": "1", "long_name": "continuum colour minus the domain model's at the "
                "estimated parameters, in units of its scatter (> threshold: bluer than any "
                "training star could be; dust only makes it negative)"},
}


def printable(text: str) -> str:
    """``text`` as valid Unicode: the undecodable bytes of a name read with
    ``surrogateescape`` become ``\\xNN``, any other lone surrogate ``\\udNNN``; valid
    text is returned unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class StarTable:
    """Per-star columns of a store, each (n,), sorted by ``healpix`` (non-decreasing), the
    stars without a position (``healpix`` -1) last.

    ``ra``, ``dec`` in degrees (ICRS; NaN without a valid position); ``teff`` K, ``logg`` and
    ``feh`` dex, ``rv`` km/s, ``snr_g`` the g-band S/N (NaN where unknown); ``class_`` the
    LASP class (stored as ``class``); ``healpix`` the nested index at :data:`HEALPIX_ORDER`.
    """

    obsid: NDArray[np.int64]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    snr_g: NDArray[np.float32]
    teff: NDArray[np.float32]
    logg: NDArray[np.float32]
    feh: NDArray[np.float32]
    rv: NDArray[np.float32]
    class_: NDArray[np.str_]
    healpix: NDArray[np.int64]
    source_file: NDArray[np.str_]

    def __post_init__(self) -> None:
        n = np.shape(self.obsid)
        for f in fields(self):
            if np.ndim(getattr(self, f.name)) != 1 or np.shape(getattr(self, f.name)) != n:
                raise ValueError(f"column {f.name} has shape {np.shape(getattr(self, f.name))}, "
                                 f"obsid has {n}")
        hp = np.asarray(self.healpix, dtype=np.int64)
        indexed = hp >= 0
        if np.any(np.diff(hp[indexed]) < 0) or np.any(np.diff(indexed.astype(np.int8)) > 0):
            raise ValueError("stars must be sorted by healpix, those without a position last "
                             "(use StarTable.build)")

    @property
    def n_indexed(self) -> int:
        """Stars with a sky position (the first ones)."""
        return int(np.count_nonzero(np.asarray(self.healpix) >= 0))

    def __len__(self) -> int:
        return int(np.shape(self.obsid)[0])

    @classmethod
    def build(cls, *, obsid: ArrayLike, ra: ArrayLike, dec: ArrayLike, snr_g: ArrayLike,
              teff: ArrayLike, logg: ArrayLike, feh: ArrayLike, rv: ArrayLike,
              class_: ArrayLike, source_file: ArrayLike
              ) -> tuple[StarTable, NDArray[np.int64]]:
        """Compute ``healpix`` and sort; returns the table and the permutation applied.

        Stars are sorted by (healpix, obsid), so the order does not depend on the input
        order; stars without a valid position (:func:`has_sky_position`) get ``ra``, ``dec``
        NaN and ``healpix`` -1 and come last, by obsid. ``table.obsid ==
        np.asarray(obsid)[perm]``, and likewise for every column but those.
        """
        ra_a, dec_a = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
        ok = has_sky_position(ra_a, dec_a)
        ra_a, dec_a = np.where(ok, ra_a, np.nan), np.where(ok, dec_a, np.nan)
        hp = np.full(ra_a.shape, -1, np.int64)
        hp[ok] = healpix_index(ra_a[ok], dec_a[ok], HEALPIX_ORDER)
        obs = np.asarray(obsid, np.int64)
        perm = np.lexsort((obs, hp, ~ok)).astype(np.int64)
        f4 = {k: np.asarray(v, np.float32)[perm] for k, v in
              dict(snr_g=snr_g, teff=teff, logg=logg, feh=feh, rv=rv).items()}
        table = cls(obsid=obs[perm], ra=ra_a[perm], dec=dec_a[perm], **f4,
                    class_=np.asarray(class_, dtype=str)[perm], healpix=hp[perm],
                    source_file=text_array(source_file)[perm])
        return table, perm


def _chunk_ranges(healpix: NDArray[np.int64], chunk: int) -> tuple[NDArray[np.int64], ...]:
    """First and last healpix of the stars with a position in each chunk (-1, -1: none)."""
    starts = np.arange(0, healpix.size, chunk)
    n_indexed = int(np.count_nonzero(healpix >= 0))
    ends = np.minimum(np.minimum(starts + chunk, healpix.size), n_indexed) - 1
    some = starts < n_indexed
    lo = np.where(some, healpix[np.minimum(starts, max(n_indexed - 1, 0))], -1)
    hi = np.where(some, healpix[np.maximum(ends, 0)], -1)
    return lo.astype(np.int64), hi.astype(np.int64)


@contextlib.contextmanager
def _writing(what: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """An ``OSError`` inside becomes a :class:`StoreError` naming the file and the reason."""
    try:
        yield
    except OSError as exc:
        raise StoreError.from_os_error(exc, what, path) from exc


def create_store(path: str | os.PathLike[str], stars: StarTable,
                 chunk_stars: int = DEFAULT_CHUNK_STARS, attrs: dict[str, Any] | None = None,
                 *, overwrite: bool = False, reference_sigma: ArrayLike | None = None) -> Path:
    """Create a predictions store with its star columns; SEDs NaN and flags 0 until written.

    Parameters
    ----------
    path
        New store directory.
    stars
        Per-star columns, sorted by healpix.
    chunk_stars
        Stars per chunk (> 0): the unit of parallel writing.
    attrs
        Provenance to record (model card id and sha256, csstflux version, config, input-list
        hash, creation time, ...), JSON-serialisable. Must not use the reserved keys (grids,
        ``flags``, ``healpix``, ``chunk_stars``, ``n_stars``, ``format``...).
    reference_sigma
        The model's reference term ``ρ`` (574,) in relative units
        (``ModelCard.reference_sigma``), stored as ``sed_err_ref``; None: no such array.

    Returns
    -------
    Path
        ``path`` (built beside it under a temporary name and put in its place when
        complete, :func:`csstflux.io.atomic.replace_dir`: an existing store is replaced only
        then).

    Raises
    ------
    StoreError
        ``path`` exists and ``overwrite`` is False, or the store cannot be written.
    """
    if chunk_stars <= 0:
        raise ValueError(f"chunk_stars must be positive, got {chunk_stars}")
    user = dict(attrs or {})
    clash = sorted(set(user) & set(_RESERVED_ATTRS))
    if clash:
        raise ValueError(f"attrs use reserved keys {clash}")
    try:
        json.dumps(user)
    except TypeError as exc:
        raise ValueError(f"attrs must be JSON-serialisable ({exc})") from exc
    p = Path(path)
    if p.exists() and not overwrite:
        raise StoreError("predictions store exists; pass overwrite=True to replace it", path=p)
    n = len(stars)
    tmp: Path | None = None
    try:
        tmp = temporary_dir(p)
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in ("sed", "sed_err"):
            g.create_array(name, shape=(n, OUTPUT_GRID.n), chunks=(chunk_stars, OUTPUT_GRID.n),
                           dtype="float32", fill_value=np.nan, dimension_names=(STAR, WAVELENGTH))
        _arr(g, "sed").attrs.update(units="1",
                                    long_name="SED scaled to mean 1 in the scaling window")
        _arr(g, "sed_err").attrs.update(units="1", long_name="1 sigma of sed")
        g.create_array("flags", shape=(n,), chunks=(chunk_stars,), dtype="uint32", fill_value=0,
                       dimension_names=(STAR,)).attrs.update(
            long_name="csstflux.flags.Flag bits", flag_meanings=Flag.describe())
        g.create_array("n_masked_sed", shape=(n,), chunks=(chunk_stars,), dtype="int16",
                       fill_value=0, dimension_names=(STAR,)).attrs.update(
            long_name="SED pixels set to NaN because the model gave a value <= 0",
            description="per star; flag NEGATIVE_SED when one lies inside GU, GV or GI")
        for name, col_attrs in ESTIMATE_COLUMNS.items():
            g.create_array(name, shape=(n,), chunks=(chunk_stars,), dtype="float32",
                           fill_value=np.nan, dimension_names=(STAR,)).attrs.update(col_attrs)
        g.create_array("header_mag", shape=(n, len(HEADER_BANDS)),
                       chunks=(chunk_stars, len(HEADER_BANDS)), dtype="float32",
                       fill_value=np.nan, dimension_names=(STAR, HEADER_BAND)).attrs.update(
            HEADER_MAG_ATTRS)
        if reference_sigma is not None:
            rho = np.asarray(reference_sigma, dtype=np.float32)
            if rho.shape != (OUTPUT_GRID.n,) or not np.all(np.isfinite(rho) & (rho >= 0)):
                raise ValueError(f"reference_sigma must be {OUTPUT_GRID.n} non-negative "
                                 "finite numbers")
            g.create_array("sed_err_ref", data=rho, dimension_names=(WAVELENGTH,)).attrs.update(
                REFERENCE_SIGMA_ATTRS)
        wave = g.create_array("wavelength", data=OUTPUT_GRID.wavelength,
                              dimension_names=(WAVELENGTH,))
        wave.attrs.update(units="Angstrom", medium="vacuum", grid=OUTPUT_GRID.name)
        bands = g.create_array(HEADER_BAND, shape=(len(HEADER_BANDS),), dtype=str,
                               dimension_names=(HEADER_BAND,))
        bands[:] = np.array(HEADER_BANDS, dtype=str)
        bands.attrs.update(long_name="band of header_mag "
                                     "(csstflux.io.formats.lamost_photometry.HEADER_BANDS)")
        for f in fields(stars):
            name = "class" if f.name == "class_" else f.name
            values = np.asarray(getattr(stars, f.name))
            dtype: Any = str if values.dtype.kind in "UST" else values.dtype
            arr = g.create_array(name, shape=(n,), chunks=(chunk_stars,), dtype=dtype,
                                 dimension_names=(STAR,))
            for s in range(0, n, chunk_stars):     # text one chunk at a time (a release's paths)
                part = values[s:s + chunk_stars]
                arr[s:s + part.size] = (np.array([printable(str(v)) for v in part.tolist()],
                                                 dtype=str) if dtype is str else part)
            arr.attrs.update(_COLUMN_ATTRS.get(name, {}))
        lo, hi = _chunk_ranges(np.asarray(stars.healpix, np.int64), chunk_stars)
        g.create_array("chunk_healpix_min", data=lo, dimension_names=(CHUNK,))
        g.create_array("chunk_healpix_max", data=hi, dimension_names=(CHUNK,))
        g.attrs.update({**user, **all_grids_attrs(), "format": FORMAT,
                        "format_version": FORMAT_VERSION, "n_stars": n,
                        "chunk_stars": int(chunk_stars), "flags": Flag.describe(),
                        "healpix": {"order": HEALPIX_ORDER, "nest": True, "column": "healpix",
                                    "sorted": True, "n_indexed": stars.n_indexed,
                                    "unindexed": "stars from n_indexed on have no valid "
                                                 "position (healpix -1, ra/dec NaN, flag "
                                                 "BAD_COORDS)"}})
        replace_dir(tmp, p)
        tmp = None
    except OSError as exc:
        raise StoreError.from_os_error(exc, "the predictions store", p) from exc
    finally:
        if tmp is not None:   # something failed: drop what was built
            shutil.rmtree(tmp, ignore_errors=True)
    return p


def check_output_location(path: str | os.PathLike[str]) -> None:
    """Check, before any work, that a store can be written at ``path``.

    The folder that will hold the store must exist and take a new file (a test file is
    created and removed there, which also catches read-only file systems and quotas that
    permission bits do not show); an existing ``path`` must be a folder that takes new files.

    Raises
    ------
    StoreError
        The folder is missing, is not a folder, or refuses a new file (the system's reason).
    """
    p = Path(path)
    parent = p.absolute().parent
    if not parent.exists():
        raise StoreError("the folder of the output store does not exist; create it first",
                         path=parent)
    if not parent.is_dir():
        raise StoreError("the output store would lie under something that is not a folder",
                         path=parent)
    if p.exists() and not p.is_dir():
        raise StoreError("output exists and is not a folder (a store is one)", path=p)
    target = p if p.is_dir() else parent
    try:
        with tempfile.TemporaryFile(dir=target, prefix=".csstflux-write-test-"):
            pass
    except OSError as exc:
        raise StoreError.from_os_error(exc, "a test file in the output folder", target) \
            from exc


def _arr(g: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of ``g`` (a StoreError when missing or a group)."""
    node = g.get(name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"predictions store lacks array {name!r}", path=str(g.store_path))
    return node


def _path(g: zarr.Group, store: str | os.PathLike[str] | zarr.Group) -> str:
    """The store's location, for messages."""
    return str(g.store_path) if isinstance(store, zarr.Group) else os.fspath(store)


def _size(g: zarr.Group) -> tuple[int, int]:
    """(number of stars, stars per chunk) from the store's attributes."""
    return int(g.attrs["n_stars"]), int(g.attrs["chunk_stars"])  # type: ignore[arg-type]


def open_group(store: str | os.PathLike[str] | zarr.Group, mode: str = "r+", *,
               use_consolidated: bool | None = None) -> zarr.Group:
    """The store's root group; :class:`StoreError` unless ``store`` is a predictions store.
    ``use_consolidated=False`` reads the arrays' own metadata (for a writer that adds arrays
    after the consolidated metadata was written, as ``csstflux anchor`` does)."""
    if isinstance(store, zarr.Group):
        return store
    p = Path(store)
    if not p.is_dir():
        raise StoreError("no predictions store here", path=p)
    try:
        g = zarr.open_group(str(p), mode=mode, zarr_format=3,  # type: ignore[arg-type]
                            use_consolidated=use_consolidated)
    except Exception as exc:  # zarr raises several types for a non-store
        raise StoreError(f"not a Zarr v3 store ({exc})", path=p) from exc
    if g.attrs.get("format") != FORMAT:
        raise StoreError("not a csstflux predictions store", path=p, expected=FORMAT,
                         found=g.attrs.get("format"))
    return g


def write_block(store: str | os.PathLike[str] | zarr.Group, start: int, stop: int,
                sed: ArrayLike, sed_err: ArrayLike, flags: ArrayLike,
                n_masked_sed: ArrayLike | None = None,
                estimates: Mapping[str, ArrayLike] | None = None,
                header_mag: ArrayLike | None = None) -> None:
    """Write the SEDs, errors, flags, masked-pixel counts, estimates and header magnitudes of
    stars ``start:stop``.

    ``start`` must be a multiple of ``chunk_stars`` and ``stop`` one too or the number of
    stars, so that concurrent writers of disjoint regions never share a chunk.

    Parameters
    ----------
    store
        Store path, or its group opened for writing.
    start, stop
        Star region, ``0 <= start < stop <= n``.
    sed, sed_err : (stop - start, 574) float
        Scaled SED and 1σ on OUTPUT_GRID (NaN where there is none); stored as float32.
    flags : (stop - start,) int
        :class:`~csstflux.flags.Flag` bits.
    n_masked_sed : (stop - start,) int, optional
        SED pixels set to NaN per star (default 0).
    estimates : dict, optional
        Columns of :data:`ESTIMATE_COLUMNS`, each (stop - start,) float (missing: left NaN).
    header_mag : (stop - start, len(HEADER_BANDS)) float, optional
        The input catalogue's magnitudes from each star's header (None: left as they are).
    """
    g = open_group(store)
    n, chunk = _size(g)
    if not (0 <= start < stop <= n):
        raise ValueError(f"region {start}:{stop} outside the store's {n} stars")
    if start % chunk or (stop % chunk and stop != n):
        raise ValueError(f"region {start}:{stop} is not aligned to chunks of {chunk} stars; "
                         "concurrent writers would share a chunk")
    m = stop - start
    s = np.asarray(sed, dtype=np.float32)
    e = np.asarray(sed_err, dtype=np.float32)
    fl = np.asarray(flags)
    nm = np.zeros(m, np.int16) if n_masked_sed is None else np.asarray(n_masked_sed)
    if (s.shape != (m, OUTPUT_GRID.n) or e.shape != (m, OUTPUT_GRID.n) or fl.shape != (m,)
            or nm.shape != (m,)):
        raise ValueError(f"expected sed and sed_err ({m}, {OUTPUT_GRID.n}), flags and "
                         f"n_masked_sed ({m},), got {s.shape}, {e.shape}, {fl.shape}, "
                         f"{nm.shape}")
    if nm.size and (np.any(nm < 0) or np.any(nm > OUTPUT_GRID.n)):
        raise ValueError(f"n_masked_sed must lie in 0..{OUTPUT_GRID.n}")
    if fl.size and (np.any(fl < 0) or np.any(fl > np.iinfo(np.uint32).max)):
        raise ValueError("flags must fit uint32")
    est = {k: np.asarray(v, np.float32) for k, v in (estimates or {}).items()}
    unknown = sorted(set(est) - set(ESTIMATE_COLUMNS))
    if unknown or any(v.shape != (m,) for v in est.values()):
        raise ValueError(f"estimates must be ({m},) arrays named from {list(ESTIMATE_COLUMNS)}"
                         + (f"; unknown {unknown}" if unknown else ""))
    mags = None if header_mag is None else np.asarray(header_mag, np.float32)
    if mags is not None and mags.shape != (m, len(HEADER_BANDS)):
        raise ValueError(f"header_mag must be ({m}, {len(HEADER_BANDS)}), got {mags.shape}")
    with _writing(f"stars {start}:{stop} of the predictions store", _path(g, store)):
        _arr(g, "sed")[start:stop] = s
        _arr(g, "sed_err")[start:stop] = e
        _arr(g, "flags")[start:stop] = fl.astype(np.uint32)
        _arr(g, "n_masked_sed")[start:stop] = nm.astype(np.int16)
        for name, values in est.items():
            _arr(g, name)[start:stop] = values
        if mags is not None:
            _arr(g, "header_mag")[start:stop] = mags


def _consolidate(path: Path) -> None:
    with warnings.catch_warnings():  # "not part of the v3 specification": understood, wanted
        warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(str(path))


def write_failures(path: str | os.PathLike[str], files: Sequence[str],
                   errors: Sequence[str]) -> None:
    """Replace the ``failures`` subgroup with ``file`` and ``error`` string arrays (text
    through :func:`printable`)."""
    if len(files) != len(errors):
        raise ValueError(f"{len(files)} files but {len(errors)} errors")
    p = Path(path)
    g = open_group(p)
    with _writing("the failures table of the predictions store", p):
        if "failures" in g:
            del g["failures"]
        sub = g.create_group("failures")
        for name, values in (("file", files), ("error", errors)):
            arr = sub.create_array(name, shape=(len(values),), dtype=str,
                                   dimension_names=(FAILURE,))
            if len(values):
                arr[:] = np.array([printable(str(v)) for v in values], dtype=str)
        if g.metadata.consolidated_metadata is not None:
            _consolidate(p)


def read_failures(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """``(files, errors)`` recorded by :func:`write_failures` (empty lists when none)."""
    sub = open_group(path, mode="r").get("failures")
    if not isinstance(sub, zarr.Group):
        return [], []
    return ([str(v) for v in np.asarray(_arr(sub, "file")[:])],
            [str(v) for v in np.asarray(_arr(sub, "error")[:])])


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The attributes of a predictions store; :class:`StoreError` if ``path`` is not one."""
    p = Path(path)
    try:
        attrs = dict(zarr.open_group(str(p), mode="r").attrs)
    except Exception as exc:  # zarr raises several types for a non-store
        raise StoreError(f"not a Zarr store ({exc})", path=p) from exc
    if attrs.get("format") != FORMAT:
        raise StoreError("not a csstflux predictions store", path=p, expected=FORMAT,
                         found=attrs.get("format"))
    return attrs


def finalize(path: str | os.PathLike[str], attrs_update: dict[str, Any] | None = None) -> None:
    """Update the store's attributes (completion time, counts...) and consolidate metadata."""
    p = Path(path)
    g = open_group(p)
    if attrs_update:
        clash = sorted(set(attrs_update) & set(_RESERVED_ATTRS))
        if clash:
            raise ValueError(f"attrs_update uses reserved keys {clash}")
    with _writing("the attributes of the predictions store", p):
        if attrs_update:
            g.attrs.update(attrs_update)
        _consolidate(p)


def query_indices(path: str | os.PathLike[str] | zarr.Group, *,
                  cone: tuple[float, float, float] | None = None,
                  pixels: ArrayLike | None = None, order: int | None = None
                  ) -> NDArray[np.int64]:
    """Sorted star indices selected by a cone or by HEALPix pixels, reading only the chunks
    whose healpix range meets the query.

    Parameters
    ----------
    cone
        ``(ra, dec, radius)`` in degrees: stars whose great-circle separation from the centre
        is ≤ radius. Candidate pixels come from :func:`csstflux.sky.geometry.cone_pixels` at the
        finest
        order ≤ :data:`HEALPIX_ORDER` whose pixel is at least radius/8 across
        (:func:`csstflux.sky.query.search_order`).
    pixels, order
        Nested pixels at ``order`` (0 ≤ order ≤ HEALPIX_ORDER): stars with
        ``healpix >> 2 * (HEALPIX_ORDER - order)`` in ``pixels``.
    """
    g = open_group(path, mode="r")
    n, chunk = _size(g)

    def read(name: str, start: int, stop: int) -> NDArray[np.generic]:
        return np.asarray(_arr(g, name)[start:stop])

    return select(np.asarray(_arr(g, "chunk_healpix_min")[:], np.int64),
                  np.asarray(_arr(g, "chunk_healpix_max")[:], np.int64), n, chunk, read,
                  HEALPIX_ORDER, cone=cone, pixels=pixels, order=order)


def _object_strings(ds: Any) -> Any:
    """Variable-width string variables (numpy's ``StringDType``, as Zarr v3 gives them) as
    object arrays: xarray cannot promote ``StringDType`` with a float fill value, so
    ``ds.where(cond, drop=True)`` and alignment with missing values would fail on them."""
    strings = [n for n, v in ds.variables.items() if isinstance(v.dtype, np.dtypes.StringDType)]
    return ds.assign({n: ds[n].astype(object) for n in strings if n in ds.data_vars}
                     ).assign_coords({n: ds[n].astype(object) for n in strings
                                      if n in ds.coords})


def open_predictions(path: str | os.PathLike[str], *,
                     cone: tuple[float, float, float] | None = None,
                     pixels: ArrayLike | None = None, order: int | None = None,
                     dask: bool = True) -> xarray.Dataset:
    """Open a predictions store as a lazy :class:`xarray.Dataset`, whole or a sky selection.

    Parameters
    ----------
    path
        Store written by :func:`create_store`.
    cone, pixels, order
        Optional selection, as in :func:`query_indices`; at most one of ``cone`` and
        ``pixels``.

    Returns
    -------
    xarray.Dataset
        Dimensions ``star`` (with ``obsid`` as a coordinate: ``ds.swap_dims(star="obsid")
        .sel(obsid=...)`` selects stars by id), ``wavelength`` (coordinate, vacuum Å),
        ``header_band`` (coordinate: band names; format 3 on) and ``failure``
        (``failure_file``, ``failure_error``: the store's failures table, whole whatever the
        selection); variables as in the module docstring (without the per-chunk healpix
        index), those of an older store as it has them. Data are dask
        arrays (with ``dask=False``: xarray's lazy arrays, read by this process on access,
        for use inside a Dask task), read on access; a selection holds only the selected
        stars, in store order.
    """
    import xarray as xr

    g = open_group(path, mode="r")
    kwargs: dict[str, Any] = {} if dask else {"chunks": None}
    ds = xr.open_zarr(str(path), consolidated=g.metadata.consolidated_metadata is not None,
                      drop_variables=["chunk_healpix_min", "chunk_healpix_max"], **kwargs)
    ds = _object_strings(ds.set_coords("obsid"))
    files, errors = read_failures(path)
    ds = ds.assign(failure_file=(FAILURE, np.asarray(files, dtype=str)),
                   failure_error=(FAILURE, np.asarray(errors, dtype=str)))
    if cone is None and pixels is None and order is None:
        return ds
    return ds.isel({STAR: query_indices(g, cone=cone, pixels=pixels, order=order)})
