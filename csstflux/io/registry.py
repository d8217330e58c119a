"""Format registry: find the reader for a path by asking each reader's ``identify()``.

Every reader module in :mod:`csstflux.io.formats` exposes

- ``FORMAT``: a unique short name (``"lamost-lrs"``, ``"miles"``, ...);
- ``identify(path) -> bool``: looks at the file or directory (magic bytes, header keywords,
  layout), is cheap, and returns False rather than raising for anything it does not take;
- ``read(path, **options)``: returns a :class:`~csstflux.containers.Spectrum` (one spectrum per
  file) or a :class:`~csstflux.containers.SpectralLibrary` (grids and libraries), or raises an
  :class:`~csstflux.errors.InputFormatError` subclass naming the file, the HDU and the problem.

Readers are tried in the order of :data:`READER_MODULES`, most specific first.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from csstflux.containers import SpectralLibrary, Spectrum
from csstflux.errors import InputFormatError, UnsupportedFormatError

#: The registered reader modules, most specific first.
READER_MODULES: tuple[str, ...] = (
    "csstflux.io.formats.lamost",
    "csstflux.io.formats.bosz",
    "csstflux.io.formats.ngsl",
    "csstflux.io.formats.miles",
    "csstflux.io.formats.ck04",
    "csstflux.io.formats.pickles",
    "csstflux.io.formats.generic_fits",
    "csstflux.io.formats.generic_table",
)


def readers() -> list[ModuleType]:
    """The reader modules, imported, in the order they are tried."""
    return [importlib.import_module(name) for name in READER_MODULES]


def reader_for(format: str) -> ModuleType:
    """The reader module whose ``FORMAT`` is ``format``."""
    names = {}
    for mod in readers():
        names[mod.FORMAT] = mod
        for alias in getattr(mod, "FORMATS", ()):
            names[alias] = mod
    if format not in names:
        raise InputFormatError(f"unknown format {format!r}", expected=sorted(names), found=format)
    return names[format]


def identify(path: str | os.PathLike[str]) -> str:
    """Name of the format of ``path``; raises :class:`UnsupportedFormatError` if none takes it."""
    p = Path(path)
    if not p.exists():
        raise InputFormatError("no such file or directory", path=p)
    for mod in readers():
        fmt = mod.identify(p)
        if fmt:
            return fmt if isinstance(fmt, str) else str(mod.FORMAT)
    raise UnsupportedFormatError("no reader recognises this file", path=p,
                                 expected=", ".join(m.FORMAT for m in readers()))


def read(path: str | os.PathLike[str], format: str | None = None,
         **options: Any) -> Spectrum | SpectralLibrary:
    """Read ``path`` with the reader for ``format`` (detected with :func:`identify` if None)."""
    fmt = format or identify(path)
    return reader_for(fmt).read(Path(path), **options)  # type: ignore[no-any-return]
