"""Small array products (the compact emulator, fitted coefficients) as ``.npz`` with metadata.

The metadata dict is stored as JSON inside the archive (key ``__meta__``); loading never unpickles
(``allow_pickle=False``), and :func:`file_sha256` gives the checksum written into provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.errors import InputFormatError

_META = "__meta__"


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` (flushed to disk), then rename it
    over ``path``: readers see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, Any],
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` (name → numpy array) and JSON-serialisable ``meta`` to ``path``."""
    p = Path(path)
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_META] = np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), np.uint8)
    tmp = p.with_name(p.name + ".partial.npz")
    np.savez_compressed(tmp, **payload)  # type: ignore[arg-type]
    tmp.replace(p)
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
