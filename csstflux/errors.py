"""Error hierarchy of csstflux.

Library code raises these; only the command-line interface turns them into exit codes and
one-line messages. Each error carries the fields a user needs to find the problem (the file,
the HDU, what was expected and what was found) and formats them into its message.
"""

from __future__ import annotations

import os
from typing import Any


class CsstFluxError(Exception):
    """Base class of every error csstflux raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        hdu: int | str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.hdu = hdu
        self.expected = expected
        self.found = found
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.path is not None:
            where = self.path if self.hdu is None else f"{self.path}[HDU {self.hdu}]"
            parts.append(f"{where}: ")
        parts.append(self.message)
        if self.expected is not None or self.found is not None:
            parts.append(f" (expected {self.expected!s}, found {self.found!s})")
        return "".join(parts)


class InputFormatError(CsstFluxError):
    """A file is unreadable, truncated, corrupt, or not in the format it claims to be."""


class UnsupportedFormatError(InputFormatError):
    """A readable file in a format csstflux does not take (e.g. a LAMOST medium-resolution file)."""


class TruncatedFileError(InputFormatError):
    """A file is shorter than its own header promises."""


class GridMismatchError(CsstFluxError):
    """Arrays or a model file do not sit on the wavelength grid they must sit on."""


class CoverageError(CsstFluxError):
    """A spectrum does not cover the wavelength range an operation needs."""


class ConfigError(CsstFluxError):
    """A configuration file or option is invalid (unknown key, wrong type, out of range)."""


class ModelFileError(CsstFluxError):
    """A model archive or model card is missing, corrupt, tampered with or incompatible."""


class StoreError(CsstFluxError):
    """An output store cannot be created, resumed or written safely."""

    @classmethod
    def from_os_error(cls, exc: OSError, what: str,
                      path: str | os.PathLike[str]) -> StoreError:
        """``exc``, met while writing ``what``, as one line that names the file (the one the OS
        names, else ``path``) and the system's reason, e.g. ``[Errno 28] No space left on
        device``."""
        reason = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc) or repr(exc)
        return cls(f"cannot write {what}: {reason}", path=exc.filename or path)


class LockedError(CsstFluxError):
    """Another run holds the lock of the work asked for (e.g. the same night's calibration)."""


class EmptyResultError(CsstFluxError):
    """Valid inputs that would produce nothing useful: no star on any simulated detector, no
    exposure in the folder, no exposure source matched to the store.

    The CLI exits 1 ("failed"): the run cannot deliver what was asked for, and a scheduler must
    see that. Not 2 (no option or key is wrong as such: the field, the folder or the store
    simply hold nothing that fits) and not 3 ("nothing to do" means the work is already done,
    as a nightly version that exists).
    """
