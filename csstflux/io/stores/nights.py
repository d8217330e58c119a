"""Night folders of exposures, their completeness checks, and the per-night run lock.

Directory convention
--------------------
Exposures arrive in one folder per observing night under an exposures root::

    {exposures_root}/{YYYY-MM-DD}/exposure-{id:04d}.zarr

``YYYY-MM-DD`` is the UTC date on which the night began (the civil date of the evening). Each
exposure is a Zarr v3 group written by :func:`csstflux.io.stores.exposures.write_exposure`. Writers
build a group under a temporary name (``.exposure-NNNN.zarr.XXXXXXXX.partial``,
:func:`csstflux.io.atomic.atomic_dir`) and rename it when complete; anything by another name
than ``exposure-NNNN.zarr`` is not an exposure and is ignored. A group that
has the right name but is not complete — a copy still in progress, a crashed transfer — is
*skipped and reported* by :func:`check_exposure`, never read as if it were whole: Zarr would
silently return NaN for the chunks that are missing.

Whole is what the writer says: its completion record (:mod:`csstflux.io.stores.exposures`), written
last, lists each array's shape and how many chunks it stored. Counting chunks against
``nchunks`` instead would skip every realistic exposure: Zarr stores no chunk that is all fill
value, and ``counts`` is NaN outside each detector's band, so whole chunks of it are never
stored. A group without the record (an older writer's) is accepted only when every chunk is
stored, as before the record existed.

Lock
----
:class:`NightLock` is an exclusive lock file ``{dir}/{night}.lock`` created with ``O_EXCL``
holding the owner's host, pid and start time. A second run of the same night fails at once
with :class:`~csstflux.errors.LockedError`; a lock left by a process that no longer exists on
this host is stale and is taken over (with a warning).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from csstflux.errors import ConfigError
from csstflux.io.lock import FileLock
from csstflux.io.stores.exposures import COMPLETE, FORMAT, STORED_ARRAYS, list_exposures

#: Arrays every exposure group must hold, with their rank.
REQUIRED_ARRAYS: dict[str, int] = {"id": 1, "ra": 1, "dec": 1, "detector": 1, "x": 1, "y": 1,
                                   "scale": 1, "counts": 2, "counts_err": 2, "throughput": 2}


def parse_night(text: str, *, today: dt.date | None = None) -> dt.date:
    """``YYYY-MM-DD``, ``yesterday`` or ``today`` (UTC) as a date; ConfigError otherwise."""
    now = today or dt.datetime.now(dt.UTC).date()
    key = text.strip().lower()
    if key == "yesterday":
        return now - dt.timedelta(days=1)
    if key == "today":
        return now
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError("night must be YYYY-MM-DD, 'yesterday' or 'today'",
                          found=text) from exc


def window_nights(night: dt.date, n: int) -> list[dt.date]:
    """The ``n`` nights ending with ``night``, oldest first."""
    if n < 1:
        raise ConfigError("window_nights must be at least 1", found=n)
    return [night - dt.timedelta(days=k) for k in range(n - 1, -1, -1)]


def night_folder(root: str | os.PathLike[str], night: dt.date) -> Path:
    """``root / YYYY-MM-DD``."""
    return Path(root) / night.isoformat()


def check_exposure(path: str | os.PathLike[str]) -> str | None:
    """None when the exposure group is complete, else the reason it must be skipped.

    Checks, without reading the data: a readable Zarr v3 group of csstflux's exposure format,
    every required array present with its rank, one length for the source arrays, and the
    writer's completion record (module docstring): ``complete`` true, and every array it lists
    present with the recorded shape and exactly the recorded number of stored chunks (fewer:
    a copy in progress; more: chunks left over from another copy).

    A group without the record is accepted only when every chunk of every array is stored
    (``nchunks_initialized == nchunks``): its missing chunks could be all-NaN ones the writer
    never stored, or ones a transfer has not copied yet, and nothing tells which.
    """
    p = Path(path)
    try:
        g = zarr.open_group(str(p), mode="r", zarr_format=3)
        attrs = dict(g.attrs)
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a broken group
        return f"not a readable Zarr v3 group ({type(exc).__name__}: {exc})"
    if attrs.get("format") != FORMAT:
        return f"format attribute is {attrs.get('format')!r}, not {FORMAT!r}"
    record: Any = None
    if COMPLETE in attrs:
        if attrs[COMPLETE] is not True:
            return f"completion marker {COMPLETE!r} is {attrs[COMPLETE]!r}, not true"
        record = attrs.get(STORED_ARRAYS)
        if not isinstance(record, dict):
            return f"completion marker without its {STORED_ARRAYS!r} record"
    names = [*REQUIRED_ARRAYS, *(k for k in record or {} if k not in REQUIRED_ARRAYS)]
    n_src: int | None = None
    for name in names:
        try:
            arr: Any = g[name]
        except KeyError:
            return f"array {name!r} missing"
        except Exception as exc:  # noqa: BLE001 - a half-written array's metadata
            return f"array {name!r} unreadable ({type(exc).__name__}: {exc})"
        rank = REQUIRED_ARRAYS.get(name)
        if rank is not None and len(arr.shape) != rank:
            return f"array {name!r} has rank {len(arr.shape)}, expected {rank}"
        if rank is not None and name != "throughput":
            if n_src is None:
                n_src = int(arr.shape[0])
            elif int(arr.shape[0]) != n_src:
                return f"array {name!r} has {arr.shape[0]} sources, others {n_src}"
        try:
            done, total = int(arr.nchunks_initialized), int(arr.nchunks)
        except Exception as exc:  # noqa: BLE001
            return f"array {name!r}: chunks unreadable ({type(exc).__name__}: {exc})"
        problem = (_check_legacy(name, done, total) if record is None
                   else _check_recorded(name, arr.shape, done, record.get(name)))
        if problem is not None:
            return problem
    return None


def _check_recorded(name: str, shape: tuple[int, ...], done: int, want: Any) -> str | None:
    """An array against its entry in the writer's completion record."""
    if want is None:
        return f"array {name!r} is not in the writer's {STORED_ARRAYS!r} record"
    try:
        want_shape, want_chunks = [int(k) for k in want["shape"]], int(want["chunks"])
    except (KeyError, TypeError, ValueError):
        return f"array {name!r}: malformed {STORED_ARRAYS!r} entry {want!r}"
    if [int(k) for k in shape] != want_shape:
        return f"array {name!r} has shape {list(shape)}, the writer recorded {want_shape}"
    if done < want_chunks:
        return f"array {name!r} is incomplete: {done} of the {want_chunks} chunks written"
    if done > want_chunks:
        return (f"array {name!r} has {done} chunks, the writer stored {want_chunks} "
                "(left over from another copy?)")
    return None


def _check_legacy(name: str, done: int, total: int) -> str | None:
    """An array of a group without the completion record: every chunk must be stored."""
    if done >= total:
        return None
    return (f"no completion marker ({COMPLETE!r} attribute: written by an older csstflux or "
            f"another writer) and array {name!r} is incomplete: {done} of {total} chunks "
            "written, which may be all-NaN chunks never stored or a transfer in progress; if "
            "the exposure is known to be whole, rewrite it with csstflux.io.stores.exposures."
            "write_exposure(folder, read_exposure(path))")


@dataclass(frozen=True)
class NightExposures:
    """The exposures of one night: usable ones, and skipped ones with their reasons."""

    night: dt.date
    folder: Path
    exposures: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]

    @property
    def exists(self) -> bool:
        return self.folder.is_dir()


def scan_night(root: str | os.PathLike[str], night: dt.date) -> NightExposures:
    """Usable and skipped exposures of ``night`` (an absent folder has neither)."""
    folder = night_folder(root, night)
    if not folder.is_dir():
        return NightExposures(night, folder, (), ())
    good: list[Path] = []
    bad: list[tuple[Path, str]] = []
    for p in list_exposures(folder):
        problem = check_exposure(p)
        if problem is None:
            good.append(p)
        else:
            bad.append((p, problem))
    return NightExposures(night, folder, tuple(good), tuple(bad))


class NightLock(FileLock):
    """Exclusive lock of one night's run (module docstring); a context manager."""

    def __init__(self, directory: str | os.PathLike[str], night: dt.date) -> None:
        super().__init__(Path(directory) / f"{night.isoformat()}.lock", "run of this night")
