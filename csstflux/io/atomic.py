"""One atomic writer for files and one for folders.

Files (:func:`atomic_write`, :func:`atomic_path`, :func:`write_bytes`, :func:`write_text`):
the new content goes to a uniquely named temporary file beside the target
(``.NAME.XXXXXXXX.partial``, created with ``O_EXCL`` as :func:`tempfile.mkstemp` does, but
with the mode a plain ``open()`` gives), is flushed and fsynced, renamed over
the target with :func:`os.replace` and the directory is fsynced where the system allows. A
reader sees the old file or the new one, never a part; two writers of the same target never
share a temporary; an exception leaves the old file as it was and no temporary behind.

Folders (:func:`atomic_dir`, :func:`replace_dir`): the new folder is built under a uniquely
named temporary folder beside the target (``.NAME.XXXXXXXX.partial``). When it is complete
the old folder, if any, is moved aside to a unique ``.NAME.XXXXXXXX.old`` folder, the new one
is renamed into place, and only then is the old one deleted. If that rename fails the old
folder is moved back. (POSIX cannot swap two non-empty folders in one step: between the two
renames the name is briefly absent, but the old content is never lost.)

Names ending in ``.partial`` are never products: readers that list a folder skip them. A
process killed mid-write leaves its temporary behind; :func:`discard_leftovers` removes those
of one target where no other writer of it can be running (under a lock).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from csstflux.errors import StoreError

#: Suffix of every temporary file or folder a writer here builds.
TEMP_SUFFIX = ".partial"
#: Suffix of the folder an old version is moved aside to until the new one is in place.
OLD_SUFFIX = ".old"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _unique(target: Path, suffix: str, make: Callable[[Path], None]) -> Path:
    """Create ``{folder}/.{name}.XXXXXXXX{suffix}`` with ``make`` (which must fail with
    :class:`FileExistsError` when the name is taken), trying fresh random names.

    Like :func:`tempfile.mkstemp`, but ``make`` chooses the mode: files are created 0o666 and
    folders 0o777 less the umask, as a plain ``open()`` or ``mkdir()`` would make them
    (mkstemp's 0o600 and mkdtemp's 0o700 would leave the products unreadable to the group).
    """
    for _ in range(tempfile.TMP_MAX):
        token = "".join(secrets.choice(_NAME_CHARS) for _ in range(8))
        candidate = target.parent / f".{target.name}.{token}{suffix}"
        try:
            make(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no unused temporary name beside {target}")


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _new_dir(path: Path) -> None:
    os.mkdir(path, 0o777)


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it survives a crash (skipped where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """A unique temporary file name beside ``path``, for writers that want a name.

    For libraries that write by file name (Keras, numpy ``savez``, cfitsio): write to the
    yielded path; on a clean exit the file is fsynced and renamed onto ``path``, on an
    exception it is removed and ``path`` is left untouched.

    Parameters
    ----------
    path : path-like
        The target file. Its folder must exist.
    suffix : str
        Appended to the temporary name for writers that insist on an extension
        (``".keras"``, ``".npz"``).

    Yields
    ------
    Path
        ``{folder}/.{name}.XXXXXXXX.partial{suffix}``, an existing empty file.
    """
    target = Path(path)
    tmp = _unique(target, TEMP_SUFFIX + suffix, _new_file)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *,
                 encoding: str | None = None, newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a unique temporary file beside ``path`` for writing; rename it onto ``path`` on a
    clean exit (module docstring).

    Parameters
    ----------
    path : path-like
        The target file. Its folder must exist.
    mode : {"wb", "w"}
        Binary or text.
    encoding, newline
        As :func:`open`, text mode only (``encoding`` defaults to UTF-8 there).

    Yields
    ------
    file object
        Write to it; it is closed and fsynced before the rename.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as fh:
        yield fh


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`); returns ``path``."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`); returns ``path``."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def temporary_dir(path: str | os.PathLike[str]) -> Path:
    """A new empty folder with a unique name beside ``path`` (``.NAME.XXXXXXXX.partial``), to
    build a replacement of ``path`` in and hand to :func:`replace_dir`. The parent of ``path``
    is created when missing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _unique(target, TEMP_SUFFIX, _new_dir)


def replace_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Put the complete folder ``tmp`` in the place of ``final``.

    The old ``final`` (a folder, or anything else by that name), if any, is moved aside into
    a unique ``.NAME.XXXXXXXX.old`` folder beside it, ``tmp`` is renamed to ``final`` and only
    then is the old one deleted. If the rename fails the old one is moved back and the error
    re-raised; ``tmp`` is left for the caller.

    Raises
    ------
    OSError
        A rename failed; ``final`` is as it was.
    StoreError
        The rename failed and the old folder could not be moved back: the message names
        where it is.
    """
    src, dst = Path(tmp), Path(final)
    aside: Path | None = None
    if dst.exists() or dst.is_symlink():
        holder = _unique(dst, OLD_SUFFIX, _new_dir)
        aside = holder / dst.name
        try:
            os.rename(dst, aside)
        except BaseException:
            holder.rmdir()
            raise
    try:
        os.rename(src, dst)
    except BaseException as exc:
        if aside is not None:
            try:
                os.rename(aside, dst)
                aside.parent.rmdir()
            except OSError as undo:
                raise StoreError(f"cannot rename the new folder into place ({exc}) nor move "
                                 f"the old one back ({undo}); the old one is at {aside}",
                                 path=dst) from exc
        raise
    _fsync_dir(dst.parent)
    if aside is not None:
        shutil.rmtree(aside.parent, ignore_errors=True)
    return dst


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary name and put it in the place of ``path`` on a clean
    exit (:func:`temporary_dir`, :func:`replace_dir`); on an exception the temporary folder
    is deleted and ``path`` is left as it was.

    Yields
    ------
    Path
        The empty temporary folder to write into.
    """
    tmp = temporary_dir(path)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def discard_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of ``path`` that killed writers left beside it
    (``.NAME.XXXXXXXX.partial…`` files and folders, ``.NAME.XXXXXXXX.old`` folders).

    Call it only where no other writer of ``path`` can be running (under a lock, or where
    concurrent writers are not supported): it cannot tell a live writer's temporary from a
    dead one's. Returns what was deleted.
    """
    target = Path(path)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.[a-z0-9_]{{8}}"
                         rf"(?:{re.escape(TEMP_SUFFIX)}.*|{re.escape(OLD_SUFFIX)})$")
    removed = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return []
    for p in siblings:
        if pattern.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                _remove(p)
            removed.append(p)
    return removed
