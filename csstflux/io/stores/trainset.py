"""The training store: a Zarr v3 group holding clean training pairs and their provenance.

Layout (n = number of spectra; rows chunked by ``chunk_rows``)::

    inputs        (n, 2238) float32  normalised R=2000 spectra on grids.INPUT_GRID (clean)
    input_mask    (n, 2238) bool     True = bad input pixel
    targets       (n, 574)  float32  scaled R=200 SEDs on grids.OUTPUT_GRID
    target_mask   (n, 574)  bool     True = no target there (e.g. outside a library's range)
    teff, logg, feh (n,)    float64  K, dex, dex
    split         (n,)      int8     0 train, 1 test, 2 validation (see SPLITS)
    subset        (n,)      str      which set the row belongs to ("grid", "miles", "pickles", ...)
    name          (n,)      str      star or model identifier
    wavelength_in (2238,), wavelength_out (574,) float64, vacuum Å

Noise is not stored: training draws it afresh for each batch (eq. 1 or LAMOST-like errors).
Attributes hold the grids, the builder's configuration, every stand-in used, input hashes, the
csstflux version and the creation time. Arrays are read lazily; :meth:`TrainStore.load` reads
rows into memory.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from csstflux.errors import GridMismatchError, StoreError
from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.io.atomic import replace_dir, temporary_dir

#: Split codes.
SPLITS = {"train": 0, "test": 1, "validation": 2}

_FLOAT_ROWS = ("inputs", "targets")
_MASK_ROWS = ("input_mask", "target_mask")
_COLUMNS = ("teff", "logg", "feh", "split", "subset", "name")


@dataclass(frozen=True)
class TrainingArrays:
    """In-memory training pairs (shapes as in the module docstring)."""

    inputs: NDArray[np.floating[Any]]
    input_mask: NDArray[np.bool_]
    targets: NDArray[np.floating[Any]]
    target_mask: NDArray[np.bool_]
    teff: NDArray[np.float64]
    logg: NDArray[np.float64]
    feh: NDArray[np.float64]
    split: NDArray[np.int8]
    subset: NDArray[np.str_]
    name: NDArray[np.str_]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        if self.inputs.shape != (n, INPUT_GRID.n) or self.input_mask.shape != (n, INPUT_GRID.n):
            raise GridMismatchError("training inputs are not on the input grid",
                                    expected=(n, INPUT_GRID.n), found=self.inputs.shape)
        if self.targets.shape != (n, OUTPUT_GRID.n) or self.target_mask.shape != (n, OUTPUT_GRID.n):
            raise GridMismatchError("training targets are not on the output grid",
                                    expected=(n, OUTPUT_GRID.n), found=self.targets.shape)
        for c in _COLUMNS:
            if np.shape(getattr(self, c)) != (n,):
                raise ValueError(f"column {c!r} has shape {np.shape(getattr(self, c))}, "
                                 f"expected ({n},)")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, index: NDArray[Any]) -> TrainingArrays:
        """Rows ``index`` (boolean mask or integer indices)."""
        return TrainingArrays(**{k: np.asarray(getattr(self, k))[index]
                                 for k in (*_FLOAT_ROWS, *_MASK_ROWS, *_COLUMNS)},
                              attrs=dict(self.attrs))

    @staticmethod
    def concatenate(parts: list[TrainingArrays], attrs: dict[str, Any] | None = None
                    ) -> TrainingArrays:
        keys = (*_FLOAT_ROWS, *_MASK_ROWS, *_COLUMNS)
        return TrainingArrays(**{k: np.concatenate([np.asarray(getattr(p, k)) for p in parts])
                                 for k in keys}, attrs=dict(attrs or {}))


def write_trainstore(path: str | os.PathLike[str], data: TrainingArrays, *,
                     overwrite: bool = False, chunk_rows: int = 1024) -> Path:
    """Write ``data`` to a new Zarr store at ``path``; refuses to replace one unless asked."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise StoreError("training store exists; pass overwrite=True to replace it", path=p)
    tmp: Path | None = None
    try:
        tmp = temporary_dir(p)
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for k in _FLOAT_ROWS:
            arr = np.asarray(getattr(data, k), dtype=np.float32)
            g.create_array(k, data=arr, chunks=(chunk_rows, arr.shape[1]))
        for k in _MASK_ROWS:
            arr = np.asarray(getattr(data, k), dtype=bool)
            g.create_array(k, data=arr, chunks=(chunk_rows, arr.shape[1]))
        for k in ("teff", "logg", "feh"):
            g.create_array(k, data=np.asarray(getattr(data, k), np.float64))
        g.create_array("split", data=np.asarray(data.split, np.int8))
        for k in ("subset", "name"):
            col = g.create_array(k, shape=(len(data),), dtype=str)
            # via Python strings: rows read back from a store are numpy StringDType, which
            # does not cast to a fixed-width str dtype
            col[:] = np.array([str(v) for v in getattr(data, k)], dtype=str)
        g.create_array("wavelength_in", data=INPUT_GRID.wavelength)
        g.create_array("wavelength_out", data=OUTPUT_GRID.wavelength)
        attrs = dict(data.attrs)
        attrs.setdefault("input_grid", INPUT_GRID.to_attrs())
        attrs.setdefault("output_grid", OUTPUT_GRID.to_attrs())
        attrs["splits"] = SPLITS
        g.attrs.update(attrs)
        replace_dir(tmp, p)
        tmp = None
    except OSError as exc:
        raise StoreError(f"cannot write training store: {exc.strerror or exc}", path=p) from exc
    finally:
        if tmp is not None:   # something failed: drop what was built
            shutil.rmtree(tmp, ignore_errors=True)
    return p


class TrainStore:
    """A training store opened read-only; arrays are Zarr arrays, read on access."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError("no training store here", path=self.path)
        try:
            self.group = zarr.open_group(str(self.path), mode="r")
        except Exception as exc:  # zarr raises several types for a non-store
            raise StoreError(f"not a Zarr training store ({exc})", path=self.path) from exc
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        for key, grid in (("input_grid", INPUT_GRID), ("output_grid", OUTPUT_GRID)):
            if not grid.matches_attrs(self.attrs.get(key, {})):
                raise GridMismatchError(f"training store's {key} differs from csstflux's",
                                        path=self.path, expected=grid.describe(),
                                        found=self.attrs.get(key))
        missing = [k for k in (*_FLOAT_ROWS, *_MASK_ROWS, *_COLUMNS) if k not in self.group]
        if missing:
            raise StoreError(f"training store lacks arrays {missing}", path=self.path)

    def __len__(self) -> int:
        return int(self["inputs"].shape[0])

    def __getitem__(self, key: str) -> Any:
        """The store's array ``key`` (a Zarr array; the store holds no subgroups)."""
        return self.group[key]

    def column(self, key: str) -> NDArray[Any]:
        return np.asarray(self[key][:])

    def load(self, index: NDArray[Any] | None = None) -> TrainingArrays:
        """Read rows ``index`` (all when None) into memory."""
        cols = {k: self.column(k) for k in _COLUMNS}
        if index is None:
            rows = {k: np.asarray(self[k][:]) for k in (*_FLOAT_ROWS, *_MASK_ROWS)}
        else:
            idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
            order = np.argsort(idx)
            rows = {}
            for k in (*_FLOAT_ROWS, *_MASK_ROWS):
                got = self[k].get_orthogonal_selection((idx[order], slice(None)))
                out = np.empty_like(got)
                out[order] = got
                rows[k] = out
            cols = {k: v[idx] for k, v in cols.items()}
        return TrainingArrays(**rows, **cols, attrs=dict(self.attrs))
