"""The anchored variables of a predictions store (``csstflux anchor``).

``csstflux anchor`` adds, in place, these arrays to a predictions store
(:mod:`csstflux.io.stores.predictions`; same star order and chunks, Zarr v3 ``dimension_names`` so
that
:func:`xarray.open_zarr` shows them beside ``sed``)::

    phot_band      (phot_band,) str            bands, in the order of every phot_* array
    phot_mag       (star, phot_band) float32   catalogue magnitude converted to AB (mag; NaN:
                                               missing)
    phot_mag_err   (star, phot_band) float32   1σ used in the fit: catalogue error and the
                                               floor in quadrature (mag)
    phot_mag_in, phot_mag_err_in (star, phot_band) float32  magnitudes and 1σ as read from
                                               a photometry table, catalogue system (NaN:
                                               missing; not used with header photometry)
    phot_mag_model (star, phot_band) float32   AB magnitude of sed_abs in the band (mag), for
                                               fitted and held-out bands alike
    phot_used, phot_rejected (star, phot_band) bool  in the final fit / dropped by the
                                               rejection rule
    ebv, ebv_err   (star,) float32             E(B−V) and 1σ (mag)
    ebv_prior, ebv_prior_err (star,) float32   the prior given (NaN: none)
    scale, scale_err (star,) float32           intrinsic f_λ in the scaling window
                                               (erg s⁻¹ cm⁻² Å⁻¹): sed_abs = scale · sed ·
                                               10^(−0.4 ebv k(λ))
    phot_chi2      (star,) float32, phot_ndof (star,) int16
    sed_abs, sed_abs_err (star, wavelength) float32  observed-frame SED and 1σ,
                                               erg s⁻¹ cm⁻² Å⁻¹

and sets or clears the ``NO_PHOTOMETRY`` and ``PHOT_INCONSISTENT`` bits of ``flags``. The
options and their fingerprint are in ``attrs["anchor"]``; a chunk's done marker is a file in
``_csstflux_anchor_done/`` written after its region.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import ArrayLike

from csstflux.errors import StoreError
from csstflux.flags import Flag
from csstflux.grids import OUTPUT_GRID
from csstflux.io.atomic import write_text
from csstflux.io.stores.predictions import STAR, WAVELENGTH, open_group

PHOT_BAND = "phot_band"
MARKERS = "_csstflux_anchor_done"
_FLUX = "erg s-1 cm-2 Angstrom-1"
#: name → (dims after star, dtype, fill, attrs)
ARRAYS: dict[str, tuple[tuple[str, ...], str, Any, dict[str, str]]] = {
    "phot_mag_in": ((PHOT_BAND,), "float32", np.nan,
                    {"units": "mag", "long_name": "catalogue magnitude as read (own system)"}),
    "phot_mag_err_in": ((PHOT_BAND,), "float32", np.nan,
                        {"units": "mag", "long_name": "catalogue 1 sigma as read (NaN: none)"}),
    "phot_mag": ((PHOT_BAND,), "float32", np.nan,
                 {"units": "mag", "long_name": "catalogue magnitude converted to AB"}),
    "phot_mag_err": ((PHOT_BAND,), "float32", np.nan,
                     {"units": "mag", "long_name": "1 sigma used in the fit (with the floor)"}),
    "phot_mag_model": ((PHOT_BAND,), "float32", np.nan,
                       {"units": "mag", "long_name": "AB magnitude of sed_abs"}),
    "phot_used": ((PHOT_BAND,), "bool", False, {"long_name": "band in the final fit"}),
    "phot_rejected": ((PHOT_BAND,), "bool", False,
                      {"long_name": "band dropped by the rejection rule"}),
    "ebv": ((), "float32", np.nan, {"units": "mag", "long_name": "E(B-V)"}),
    "ebv_err": ((), "float32", np.nan, {"units": "mag", "long_name": "1 sigma of ebv"}),
    "ebv_prior": ((), "float32", np.nan, {"units": "mag", "long_name": "E(B-V) prior"}),
    "ebv_prior_err": ((), "float32", np.nan, {"units": "mag",
                                               "long_name": "1 sigma of ebv_prior"}),
    "scale": ((), "float32", np.nan,
              {"units": _FLUX, "long_name": "intrinsic f_lambda in the scaling window"}),
    "scale_err": ((), "float32", np.nan, {"units": _FLUX, "long_name": "1 sigma of scale"}),
    "phot_chi2": ((), "float32", np.nan, {"units": "1", "long_name": "chi2 of the anchor fit"}),
    "phot_ndof": ((), "int16", 0, {"units": "1", "long_name": "degrees of freedom of the fit"}),
    "sed_abs": ((WAVELENGTH,), "float32", np.nan,
                {"units": _FLUX, "long_name": "observed-frame (reddened, absolute) SED"}),
    "sed_abs_err": ((WAVELENGTH,), "float32", np.nan,
                    {"units": _FLUX, "long_name": "1 sigma of sed_abs"}),
}
ANCHOR_BITS = np.uint32(Flag.NO_PHOTOMETRY | Flag.PHOT_INCONSISTENT)


def open_store(path: str | os.PathLike[str], mode: str = "r+") -> zarr.Group:
    """The store's root group, read past its consolidated metadata (the anchor arrays are
    added after it was written)."""
    return open_group(path, mode, use_consolidated=False)


def store_array(g: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of the store (KeyError when missing, StoreError when it is a group)."""
    node = g[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{name!r} of the store is a group, not an array",
                         path=str(g.store_path))
    return node


def anchor_attrs(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``attrs["anchor"]`` of the store (None when it was never anchored)."""
    value = open_store(path, mode="r").attrs.get("anchor")
    return dict(value) if isinstance(value, Mapping) else None


def create_anchor_arrays(path: str | os.PathLike[str], bands: Sequence[str],
                         attrs: Mapping[str, Any]) -> None:
    """(Re)create every anchor array, empty, clear the markers and the flag bits, and record
    ``attrs`` as ``attrs["anchor"]``."""
    g = open_store(path)
    n, chunk = int(g.attrs["n_stars"]), int(g.attrs["chunk_stars"])  # type: ignore[arg-type]
    nb = len(bands)
    try:
        for name in (*ARRAYS, PHOT_BAND):
            if name in g:
                del g[name]
        names = g.create_array(PHOT_BAND, shape=(nb,), dtype=str, dimension_names=(PHOT_BAND,))
        names[:] = np.asarray(bands, dtype=str)
        for name, (dims, dtype, fill, a) in ARRAYS.items():
            extra = tuple(nb if d == PHOT_BAND else OUTPUT_GRID.n for d in dims)
            arr = g.create_array(name, shape=(n, *extra), chunks=(chunk, *extra), dtype=dtype,
                                 fill_value=fill, dimension_names=(STAR, *dims))
            arr.attrs.update(a)
        clear_markers(path)
        flags = store_array(g, "flags")
        for start in range(0, n, chunk):
            block = np.asarray(flags[start:start + chunk])
            flags[start:start + chunk] = block & ~ANCHOR_BITS
        g.attrs["anchor"] = dict(attrs)
    except OSError as exc:
        raise StoreError.from_os_error(exc, "the anchor arrays", Path(path)) from exc


def write_anchor_block(path: str | os.PathLike[str] | zarr.Group, start: int, stop: int,
                       values: Mapping[str, ArrayLike], flag_bits: ArrayLike) -> None:
    """Write stars ``start:stop`` (chunk-aligned) of the anchor arrays in ``values`` and set
    their anchor flag bits to ``flag_bits`` (other bits kept)."""
    g = path if isinstance(path, zarr.Group) else open_store(path)
    n, chunk = int(g.attrs["n_stars"]), int(g.attrs["chunk_stars"])  # type: ignore[arg-type]
    if start % chunk or (stop % chunk and stop != n) or not 0 <= start < stop <= n:
        raise ValueError(f"region {start}:{stop} is not chunk-aligned in {n} stars")
    unknown = sorted(set(values) - set(ARRAYS))
    if unknown:
        raise ValueError(f"unknown anchor arrays {unknown}")
    try:
        for name, v in values.items():
            g[name][start:stop] = np.asarray(v)  # type: ignore[index]
        flags = np.asarray(g["flags"][start:stop])  # type: ignore[index]
        bits = np.asarray(flag_bits, np.uint32) & ANCHOR_BITS
        g["flags"][start:stop] = (flags & ~ANCHOR_BITS) | bits  # type: ignore[index]
    except OSError as exc:
        raise StoreError.from_os_error(exc, f"stars {start}:{stop} of the anchor arrays",
                                       Path(str(g.store_path))) from exc


def marker_path(path: str | os.PathLike[str], index: int) -> Path:
    return Path(path) / MARKERS / f"{index:07d}.json"


def write_anchor_marker(path: str | os.PathLike[str], index: int,
                        summary: Mapping[str, Any]) -> None:
    """Chunk ``index``'s done marker, written atomically after its region."""
    final = marker_path(path, index)
    try:
        final.parent.mkdir(exist_ok=True)
        write_text(final, json.dumps(dict(summary)))
    except OSError as exc:
        raise StoreError.from_os_error(exc, "an anchor done marker", final) from exc


def done_anchor_chunks(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Summaries of the chunks whose anchor marker reads back."""
    out: dict[int, dict[str, Any]] = {}
    d = Path(path) / MARKERS
    if d.is_dir():
        for p in d.glob("*.json"):
            try:
                out[int(p.stem)] = json.loads(p.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
    return out


def clear_markers(path: str | os.PathLike[str]) -> None:
    d = Path(path) / MARKERS
    if d.is_dir():
        for p in d.iterdir():
            p.unlink()
