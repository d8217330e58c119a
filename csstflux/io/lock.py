"""One exclusive lock file for every job that must not run twice on the same output.

:class:`FileLock` creates its file with ``O_EXCL`` and writes the owner's host, pid and start
time into it. A second holder fails at once with :class:`~csstflux.errors.LockedError`
naming the owner; a lock left by a process that no longer exists on this host is stale and is
taken over, with a warning. Used for a night's run (:class:`csstflux.io.stores.nights.NightLock`)
and for a predictions store being written (:func:`store_lock`: ``predict-catalog`` and
``anchor``). A lock held by a process on another host is never taken over: remove its file
by hand when that process is known to be gone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from csstflux.errors import LockedError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)             # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class FileLock:
    """Exclusive lock file (module docstring); a context manager."""

    def __init__(self, path: str | os.PathLike[str], what: str = "run") -> None:
        self.path = Path(path)
        self.what = what
        self._held = False

    def owner(self) -> dict[str, Any] | None:
        """The current lock file's content, or None when unlocked or unreadable."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                stale = (owner is not None and owner.get("host") == me["host"]
                         and isinstance(owner.get("pid"), int)
                         and not _pid_alive(int(owner["pid"])))
                if not stale:
                    raise LockedError(f"another {self.what} holds the lock", path=self.path,
                                      found=owner) from None
                warnings.warn(f"{self.path}: stale lock of pid {owner['pid']} (no such "  # type: ignore[index]
                              "process) taken over", stacklevel=2)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._held = True
            return
        raise LockedError("could not take the lock", path=self.path)

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def store_lock(store: str | os.PathLike[str]) -> FileLock:
    """The lock of a predictions store being written: ``{store}.lock`` beside it (the store
    itself may not exist yet, or be replaced by ``--overwrite``)."""
    p = Path(store)
    return FileLock(p.with_name(p.name + ".lock"), "job writing this predictions store")
