"""Simulated slitless exposures: one Zarr v3 group per exposure, plus the truth archive.

Layout of ``exposure-{id:04d}.zarr`` (n = sources detected on the exposure's detectors)::

    id          (source,) int64            source id (the predictions store's ``obsid`` in
                                           simulations)
    ra, dec     (source,) float64          ICRS, deg
    detector    (source,) str              detector name (``"GV-02"``)
    x, y        (source,) float64          0-based detector pixels
    scale       (source,) float64          absolute flux, e⁻ s⁻¹ per output pixel in the
                                           scaling window for unit relative SED and
                                           throughput, before reddening (known in
                                           simulations; used by ``star_scale="known"``)
    ebv         (source,) float64          E(B−V) of the source, mag (known in simulations;
                                           absent in older groups: read as 0)
    counts, counts_err (source, wavelength) float32
                                           extracted 1D spectrum and 1σ on grids.OUTPUT_GRID,
                                           e⁻ per pixel, NaN outside the detector's band
    throughput  (detector_index, wavelength) float64
                                           first-order throughput of each detector's band on
                                           OUTPUT_GRID, rows in ``attrs["detectors"]`` order
    counts_per_flux (wavelength,) float64  e⁻ s⁻¹ per output pixel per erg s⁻¹ cm⁻² Å⁻¹ for
                                           unit throughput
                                           (:func:`csstflux.flat.simulate.counts_per_flux`);
                                           only in groups simulated in physical units
    x_trace, y_trace (source, wavelength) float32
                                           detector position of each output pixel's light:
                                           the source's first-order trace
                                           (:mod:`csstflux.flat.traces`), NaN outside its band
                                           or off the detector (cut); only in groups simulated
                                           with traces
    contamination (source, wavelength) float32
                                           fraction of the pixel's counts that come from
                                           neighbours' traces (the simulation's estimate,
                                           :mod:`csstflux.flat.contamination`); with traces
    contaminated (source, wavelength) bool  the CONTAMINATED mask: contamination above the
                                           instrument model's ``contamination_limit``; with
                                           traces

Positions. With traces, the light of wavelength λ was recorded at ``x_trace, y_trace`` and
``x, y`` is the source's reference position (where its undispersed image would be); without
(groups written before traces, or simulated with ``traces=False``) every wavelength was
recorded at ``x, y`` (:meth:`Exposure.positions` gives either).

Resolution. ``attrs["extraction_resolution"]`` (detector → R) is the resolving power of the
extracted spectra, :data:`csstflux.grids.BAND_RESOLUTION` of the detector's band in
simulations with traces; absent (older groups and ``traces=False``): the standards' R =
``OUTPUT_GRID.resolution`` (200), nothing to match.

Attributes: ``format``, ``exposure_id``, ``pointing`` ({ra0, dec0, pa} deg),
``exposure_time`` s, ``detectors`` (names), ``bands``, ``throughput_source``, ``seed``,
``units`` (``"physical"``: fluxes tied to f_λ through ``counts_per_flux``; ``"relative"``:
no photon conversion, as groups written before it), ``extinction_law`` and ``rv`` (of
``ebv``), ``collecting_area_cm2``, ``traces`` (bool), ``extraction_resolution`` and
``instrument`` (the instrument model of :mod:`csstflux.flat.traces` with its fingerprint;
with traces), ``csstflux_version`` and the grid attributes.

A scale and E(B−V) together give a source's expected rate for unit throughput and flat,
``scale · sed(λ) · 10^(−0.4 ebv k(λ)) · c(λ) / c̄`` e⁻ s⁻¹ per pixel, with ``sed`` the
relative SED, ``c = counts_per_flux`` and ``c̄`` its mean over the scaling window (``c/c̄``
is 1 in relative units): :func:`csstflux.flat.stars.known_rate`.

Completion record. :func:`write_exposure` writes the group attributes last, once every array is
stored, and with them ``complete`` (true) and ``stored_arrays``: each array's ``shape`` and the
number of its ``chunks`` the writer stored (:func:`stored_arrays`). Zarr does not store a chunk
that is entirely fill value, so ``counts`` and ``counts_err`` of a realistic field (NaN outside
each detector's band) have fewer stored chunks than ``nchunks`` (the trace arrays are written
with every chunk); the record says how many there
must be, so that a copy still in progress (chunks missing, which Zarr would read as NaN or 0)
is told from a whole exposure (:func:`csstflux.io.stores.nights.check_exposure`).

The truth (the flat of each detector on a coarse grid) is written by :func:`write_truth` as a
:func:`csstflux.io.stores.arrays.save_arrays` archive ``truth.npz``: ``flat/{detector}`` (n_band,
n_gy, n_gx), ``wavelength/{detector}`` (n_band,), ``grid_x``/``grid_y``, and per field star
``star/{column}`` (n_star,) (:func:`read_truth_stars`; simulations in physical units write
``obsid``, ``ebv`` (mag), ``scale`` (e⁻ s⁻¹ per pixel, as the exposures') and ``flux``
(intrinsic f_λ in the scaling window, erg s⁻¹ cm⁻² Å⁻¹)).

The field's photometry (:func:`write_photometry`) is ``photometry.csv`` in the format of
:mod:`csstflux.io.formats.photometry_table`: ``obsid``, one column per band in its catalogue system
and ``{band}_err``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import ArrayLike, NDArray

from csstflux._version import __version__
from csstflux.errors import InputFormatError
from csstflux.grids import OUTPUT_GRID, all_grids_attrs
from csstflux.io.atomic import atomic_dir, write_text
from csstflux.io.stores.arrays import load_arrays, save_arrays

FORMAT = "csstflux-exposure"
#: Group attributes of the completion record (module docstring), written last.
COMPLETE, STORED_ARRAYS = "complete", "stored_arrays"
TRUTH_FILE = "truth.npz"
#: The simulated field's photometry catalogue (:func:`write_photometry`).
PHOTOMETRY_FILE = "photometry.csv"
_NAME = re.compile(r"^exposure-(\d{4,})\.zarr$")
SOURCE, WAVELENGTH, DETECTOR = "source", "wavelength", "detector_index"
#: Optional (source, wavelength) arrays of groups simulated with traces: name → dtype.
TRACE_ARRAYS: dict[str, str] = {"x_trace": "float32", "y_trace": "float32",
                                "contamination": "float32", "contaminated": "bool"}


@dataclass(frozen=True)
class Exposure:
    """One exposure's sources and extracted spectra (shapes in the module docstring)."""

    exposure_id: int
    id: NDArray[np.int64]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    detector: NDArray[np.str_]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    scale: NDArray[np.float64]
    counts: NDArray[np.float32]
    counts_err: NDArray[np.float32]
    throughput: dict[str, NDArray[np.float64]]
    """Detector name → throughput on OUTPUT_GRID (574,)."""
    pointing: tuple[float, float, float]
    """(ra0, dec0, pa), degrees."""
    exposure_time: float
    """Seconds."""
    attrs: dict[str, Any]
    ebv: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """E(B−V) per source, mag; empty (the default, older groups): 0 for every source."""
    counts_per_flux: NDArray[np.float64] | None = None
    """(574,) e⁻ s⁻¹ per pixel per erg s⁻¹ cm⁻² Å⁻¹; None: relative units (no conversion)."""
    x_trace: NDArray[np.float32] | None = None
    """(n, 574) x of each wavelength's light (the trace), NaN outside the band or off the
    detector; None: recorded at ``x`` (no traces)."""
    y_trace: NDArray[np.float32] | None = None
    """(n, 574) y likewise; given together with ``x_trace``."""
    contamination: NDArray[np.float32] | None = None
    """(n, 574) fraction of each pixel's counts from neighbours' traces; None: not known."""
    contaminated: NDArray[np.bool_] | None = None
    """(n, 574) the CONTAMINATED mask; None: nothing flagged."""

    def __post_init__(self) -> None:
        n = np.shape(self.id)
        if np.size(self.ebv) == 0:
            object.__setattr__(self, "ebv", np.zeros(n))
        if self.counts_per_flux is not None and np.shape(self.counts_per_flux) != (
                OUTPUT_GRID.n,):
            raise ValueError(f"counts_per_flux must be ({OUTPUT_GRID.n},)")
        for name in ("ra", "dec", "detector", "x", "y", "scale", "ebv"):
            if np.shape(getattr(self, name)) != n:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, id {n}")
        for name in ("counts", "counts_err", *TRACE_ARRAYS):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (*n, OUTPUT_GRID.n):
                raise ValueError(f"{name} must be ({n[0]}, {OUTPUT_GRID.n})")
        if (self.x_trace is None) != (self.y_trace is None):
            raise ValueError("x_trace and y_trace go together")

    def __len__(self) -> int:
        return int(np.shape(self.id)[0])

    @property
    def traced(self) -> bool:
        """True when per-wavelength positions (traces) are recorded."""
        return self.x_trace is not None

    def positions(self, rows: ArrayLike | None = None
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Where the light of sources ``rows`` (default all) was recorded: the traces,
        (n, 574) float64, or the single ``x, y`` (n,) of groups without traces."""
        sel = slice(None) if rows is None else np.asarray(rows)
        if self.x_trace is None or self.y_trace is None:
            return (np.asarray(self.x[sel], dtype=float), np.asarray(self.y[sel], dtype=float))
        return (np.asarray(self.x_trace[sel], dtype=float),
                np.asarray(self.y_trace[sel], dtype=float))

    def extraction_resolution(self, detector: str) -> float | None:
        """Resolving power of the extracted spectra on ``detector``; None: the standards'
        (the group records none: older groups, simulations without traces)."""
        res = self.attrs.get("extraction_resolution")
        if not isinstance(res, dict) or detector not in res:
            return None
        return float(res[detector])


def exposure_path(folder: str | os.PathLike[str], exposure_id: int) -> Path:
    """``folder / exposure-{id:04d}.zarr``."""
    return Path(folder) / f"exposure-{int(exposure_id):04d}.zarr"


def stored_arrays(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """Name → ``{"shape": [...], "chunks": n}`` of the group's arrays as stored now: the shape,
    and how many chunks exist in the store (listed, not read)."""
    arrays = dict(group.arrays())
    return {name: {"shape": [int(k) for k in arrays[name].shape],
                   "chunks": int(arrays[name].nchunks_initialized)}
            for name in sorted(arrays)}


def write_exposure(folder: str | os.PathLike[str], exp: Exposure, *,
                   overwrite: bool = True) -> Path:
    """Write one exposure (built beside its place under a temporary ``….partial`` name and
    put there when complete, :func:`csstflux.io.atomic.atomic_dir`).

    The group attributes, with the completion record (module docstring), are the last thing
    written before the rename.
    """
    p = exposure_path(folder, exp.exposure_id)
    if p.exists() and not overwrite:
        raise FileExistsError(p)
    with atomic_dir(p) as tmp:
        _fill_exposure(zarr.open_group(str(tmp), mode="w", zarr_format=3), exp)
    return p


def _fill_exposure(g: zarr.Group, exp: Exposure) -> None:
    """Write ``exp`` into the empty group ``g``, the completion record last."""
    n = len(exp)
    cols: dict[str, tuple[ArrayLike, Any]] = {
        "id": (exp.id, np.int64), "ra": (exp.ra, np.float64), "dec": (exp.dec, np.float64),
        "x": (exp.x, np.float64), "y": (exp.y, np.float64), "scale": (exp.scale, np.float64),
        "ebv": (exp.ebv, np.float64)}
    for name, (values, dtype) in cols.items():
        # fill NaN: an all-zero column (ebv of an unreddened field) is still stored
        arr = g.create_array(name, shape=(n,), dtype=dtype, dimension_names=(SOURCE,),
                             fill_value=np.nan if name == "ebv" else None)
        if n:
            arr[:] = np.asarray(values, dtype=dtype)
    det = g.create_array("detector", shape=(n,), dtype=str, dimension_names=(SOURCE,))
    if n:
        det[:] = np.asarray(exp.detector, dtype=str)
    for name in ("counts", "counts_err"):
        arr = g.create_array(name, shape=(n, OUTPUT_GRID.n), dtype="float32",
                             fill_value=np.nan, dimension_names=(SOURCE, WAVELENGTH))
        if n:
            arr[:] = np.asarray(getattr(exp, name), dtype=np.float32)
        arr.attrs.update(units="electron")
    for name, dtype in TRACE_ARRAYS.items():
        value = getattr(exp, name)
        if value is None:
            continue
        # every chunk stored, all-NaN or all-False ones too: a trace array is whole or
        # absent, and the chunks a writer may leave unstored stay those of counts and
        # counts_err (csstflux.io.stores.nights.check_exposure accepts either)
        arr = g.create_array(name, shape=(n, OUTPUT_GRID.n), dtype=dtype,
                             fill_value=False if dtype == "bool" else np.nan,
                             dimension_names=(SOURCE, WAVELENGTH),
                             config={"write_empty_chunks": True})
        if n:
            arr[:] = np.asarray(value, dtype=dtype)
        if name.endswith("_trace"):
            arr.attrs.update(units="pixel")
    names = list(exp.throughput)
    g.create_array("throughput", data=np.stack([exp.throughput[k] for k in names]).astype(float)
                   if names else np.zeros((0, OUTPUT_GRID.n)),
                   dimension_names=(DETECTOR, WAVELENGTH))
    if exp.counts_per_flux is not None:
        cpf = g.create_array("counts_per_flux", data=np.asarray(exp.counts_per_flux, float),
                             dimension_names=(WAVELENGTH,))
        cpf.attrs.update(units="electron s-1 pixel-1 / (erg s-1 cm-2 Angstrom-1)")
    g.attrs.update({**exp.attrs, **all_grids_attrs(), "format": FORMAT,
                    "units": "relative" if exp.counts_per_flux is None else "physical",
                    "exposure_id": int(exp.exposure_id),
                    "pointing": dict(zip(("ra0", "dec0", "pa"), map(float, exp.pointing),
                                         strict=True)),
                    "exposure_time": float(exp.exposure_time), "detectors": names,
                    "csstflux_version": __version__,
                    COMPLETE: True, STORED_ARRAYS: stored_arrays(g)})


def read_exposure(path: str | os.PathLike[str], *, spectra: bool = True) -> Exposure:
    """Read what :func:`write_exposure` wrote; :class:`InputFormatError` for anything else.

    ``spectra=False`` reads the sources only (ids, positions, detectors, throughput): ``counts``
    and ``counts_err`` are then read-only zeros that cost no memory and the (source,
    wavelength) trace arrays are not read (None), for passes that only cross-match (the flat
    fit's census). Groups without trace arrays read with None there (:meth:`Exposure.positions`
    then gives ``x, y``).
    """
    p = Path(path)
    try:
        g = zarr.open_group(str(p), mode="r", zarr_format=3)
    except Exception as exc:  # zarr raises several types for a non-store
        raise InputFormatError(f"not a Zarr v3 group ({exc})", path=p) from exc
    attrs: dict[str, Any] = dict(g.attrs)  # JSON values, checked below
    if attrs.get("format") != FORMAT:
        raise InputFormatError("not a csstflux exposure", path=p, expected=FORMAT,
                               found=attrs.get("format"))

    def col(name: str) -> NDArray[Any]:
        arr = g.get(name)
        if not isinstance(arr, zarr.Array):
            raise InputFormatError(f"no array {name!r}", path=p)
        return np.asarray(arr[...])

    try:
        names = [str(v) for v in attrs["detectors"]]
        pt = attrs["pointing"]
        pointing = (float(pt["ra0"]), float(pt["dec0"]), float(pt["pa"]))
        exposure_id, exposure_time = int(attrs["exposure_id"]), float(attrs["exposure_time"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFormatError(f"bad exposure attributes ({exc!r})", path=p) from exc
    tp = col("throughput")
    ids = col("id").astype(np.int64)
    trace: dict[str, Any] = dict.fromkeys(TRACE_ARRAYS)
    if spectra:
        counts, counts_err = col("counts"), col("counts_err")
        trace.update({k: col(k) for k in TRACE_ARRAYS if k in g})
    else:
        counts = counts_err = np.broadcast_to(np.zeros(OUTPUT_GRID.n, np.float32),
                                              (ids.size, OUTPUT_GRID.n))
    return Exposure(
        exposure_id=exposure_id,
        id=ids, ra=col("ra"), dec=col("dec"),
        detector=np.array([str(v) for v in col("detector")], dtype=str),  # StringDType
        x=col("x"), y=col("y"), scale=col("scale"),
        counts=counts, counts_err=counts_err,
        throughput={k: tp[i] for i, k in enumerate(names)},
        pointing=pointing, exposure_time=exposure_time, attrs=attrs,
        ebv=col("ebv").astype(float) if "ebv" in g else np.zeros(0),  # older: none
        counts_per_flux=col("counts_per_flux").astype(float) if "counts_per_flux" in g
        else None, **trace)


def read_exposure_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The group attributes of an exposure (no array read); :class:`InputFormatError` for
    anything but an exposure. ``units`` is filled in (``"relative"``) for older groups."""
    p = Path(path)
    try:
        attrs = dict(zarr.open_group(str(p), mode="r", zarr_format=3).attrs)
    except Exception as exc:  # zarr raises several types for a non-store
        raise InputFormatError(f"not a Zarr v3 group ({exc})", path=p) from exc
    if attrs.get("format") != FORMAT:
        raise InputFormatError("not a csstflux exposure", path=p, expected=FORMAT,
                               found=attrs.get("format"))
    attrs.setdefault("units", "relative")
    return attrs


def list_exposures(folder: str | os.PathLike[str]) -> list[Path]:
    """Exposure groups in ``folder``, sorted by id (unfinished ``.partial`` ones skipped)."""
    d = Path(folder)
    if not d.is_dir():
        raise InputFormatError("no exposure folder here", path=d)
    found = [(int(m.group(1)), q) for q in d.iterdir() if (m := _NAME.match(q.name))]
    return [q for _, q in sorted(found)]


def write_truth(folder: str | os.PathLike[str], flats: dict[str, NDArray[np.float64]],
                wavelengths: dict[str, NDArray[np.float64]], grid_x: ArrayLike,
                grid_y: ArrayLike, meta: dict[str, Any] | None = None,
                stars: dict[str, ArrayLike] | None = None) -> Path:
    """Write the true flat cubes (detector → (n_band, n_gy, n_gx)) to ``folder/truth.npz``,
    and optionally per-star truth columns (name → (n_star,))."""
    arrays: dict[str, Any] = {"grid_x": np.asarray(grid_x), "grid_y": np.asarray(grid_y)}
    for k, v in flats.items():
        arrays[f"flat/{k}"] = np.asarray(v)
        arrays[f"wavelength/{k}"] = np.asarray(wavelengths[k])
    for k, col in (stars or {}).items():
        arrays[f"star/{k}"] = np.asarray(col)
    return save_arrays(Path(folder) / TRUTH_FILE, arrays,
                       {**(meta or {}), "detectors": list(flats), "stars": list(stars or {}),
                        "csstflux_version": __version__})


def read_truth_stars(path: str | os.PathLike[str]) -> dict[str, NDArray[Any]]:
    """The per-star truth columns of :func:`write_truth` (empty when none were written)."""
    p = Path(path)
    arrays, meta = load_arrays(p / TRUTH_FILE if p.is_dir() else p)
    return {k: arrays[f"star/{k}"] for k in meta.get("stars", [])}


def write_photometry(folder: str | os.PathLike[str], obsid: ArrayLike, bands: list[str],
                     mag: ArrayLike, mag_err: ArrayLike) -> Path:
    """Write ``folder/photometry.csv`` (module docstring) atomically.

    Parameters
    ----------
    obsid : (n,) int
    bands : list of str
        Band registry names (:mod:`csstflux.photometry.bands`), the column names.
    mag, mag_err : (n, nb) float
        Catalogue-system magnitudes and 1σ, mag; NaN is written as an empty field.
    """
    ids = np.asarray(obsid, dtype=np.int64)
    m, e = np.asarray(mag, float), np.asarray(mag_err, float)
    if m.shape != (ids.size, len(bands)) or e.shape != m.shape:
        raise ValueError(f"mag {m.shape} and mag_err {e.shape} must be ({ids.size}, "
                         f"{len(bands)})")
    cols = [c for b in bands for c in (b, f"{b}_err")]
    lines = [",".join(["obsid", *cols])]
    for i in range(ids.size):
        vals = [v for j in range(len(bands)) for v in (m[i, j], e[i, j])]
        lines.append(",".join([str(int(ids[i])),
                               *(f"{v:.5f}" if np.isfinite(v) else "" for v in vals)]))
    out = Path(folder) / PHOTOMETRY_FILE
    write_text(out, "\n".join(lines) + "\n")
    return out


def read_truth(path: str | os.PathLike[str]) -> tuple[dict[str, NDArray[np.float64]],
                                                       dict[str, NDArray[np.float64]],
                                                       NDArray[np.float64],
                                                       NDArray[np.float64], dict[str, Any]]:
    """``(flats, wavelengths, grid_x, grid_y, meta)`` from :func:`write_truth`'s archive."""
    p = Path(path)
    arrays, meta = load_arrays(p / TRUTH_FILE if p.is_dir() else p)
    names = meta.get("detectors", [])
    return ({k: arrays[f"flat/{k}"] for k in names},
            {k: arrays[f"wavelength/{k}"] for k in names},
            arrays["grid_x"], arrays["grid_y"], meta)
