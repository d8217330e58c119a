"""Small array products (the compact emulator, fitted coefficients) as ``.npz`` with metadata.

The metadata dict is stored as JSON inside the archive (key ``__meta__``); loading never unpickles
(``allow_pickle=False``), and :func:`file_sha256` gives the checksum written into provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.errors import GridMismatchError, InputFormatError, ModelFileError
from csstflux.grids import INPUT_GRID
from csstflux.io.atomic import atomic_write

_META = "__meta__"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, Any],
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` (name → numpy array) and JSON-serialisable ``meta`` to ``path``,
    atomically (:func:`csstflux.io.atomic.atomic_write`)."""
    p = Path(path)
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_META] = np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), np.uint8)
    with atomic_write(p) as fh:
        np.savez_compressed(fh, **payload)  # type: ignore[arg-type]
    return p


def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read what :func:`save_arrays` wrote: (arrays, meta)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise InputFormatError("no such file", path=p) from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFormatError(f"not a csstflux array archive ({exc})", path=p) from exc
    raw = arrays.pop(_META, None)
    meta = json.loads(raw.tobytes().decode()) if raw is not None else {}
    return arrays, meta


def save_input_product(path: str | os.PathLike[str], arrays: dict[str, Any], kind: str,
                       provenance: dict[str, Any], **meta: Any) -> Path:
    """Write an array product made for the model input grid (the emulator, the domain model):
    ``kind``, the input grid, ``provenance`` and any further ``meta`` go into its metadata."""
    return save_arrays(path, arrays, {"kind": kind, "input_grid": INPUT_GRID.to_attrs(),
                                      "provenance": provenance, **meta})


def load_input_product(path: str | os.PathLike[str] | None, shipped: Path, kind: str,
                       what: str, command: str
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Read what :func:`save_input_product` wrote: (arrays, meta, provenance).

    ``path`` None reads the ``shipped`` file. The provenance gains the file's ``sha256`` and
    ``path``.

    Raises
    ------
    ModelFileError
        The shipped file is missing (``command`` builds one), or the file is another ``kind``.
    GridMismatchError
        The product was made for another input grid.
    """
    p = shipped if path is None else Path(path)
    if path is None and not p.is_file():
        raise ModelFileError(f"the shipped {what} is missing from the installation; build one "
                             f"with `{command}`", path=p)
    arrays, meta = load_arrays(p)
    if meta.get("kind") != kind:
        raise ModelFileError(f"not a csstflux {what}", path=p, expected=kind,
                             found=meta.get("kind"))
    if not INPUT_GRID.matches_attrs(meta.get("input_grid", {})):
        raise GridMismatchError(f"{what} was built for another input grid", path=p,
                                expected=INPUT_GRID.describe(), found=meta.get("input_grid"))
    prov = dict(meta.get("provenance", {}))
    prov.update(sha256=file_sha256(p), path=str(p))
    return arrays, meta, prov
