"""Messages for people: logging set up once by the command line, progress, numbers and paths.

Every module logs through ``logging.getLogger(__name__)``, all below the ``csstflux`` logger,
and never prints. :func:`configure` (the ``csstflux`` command calls it; ``-q`` and ``-v`` set
``verbosity``) sends those messages to standard error: on a terminal as short lines, elsewhere
(a batch job, systemd's journal, a file) with a UTC timestamp, the level and the module::

    2026-12-02T04:51:07Z INFO csstflux.pipeline.predict: writing dr9.zarr

Without :func:`configure` (csstflux used as a library) nothing is set up: the application's
own logging configuration decides.

:class:`Progress` reports a long step: a bar (tqdm) on a terminal, elsewhere a log line each
time another ``every_pct`` percent is done or ``every_s`` seconds have passed, with the count,
the rate and the time left.

Known harmless noise is stopped where it starts, and ``-v`` lets it through:
:func:`quiet_dask_noise` (the nanny's "Worker process still alive after ... seconds, killing"
at shutdown; ``distributed.sizeof``'s "Sizeof calculation ... failed" on the performance
report's profiles), :func:`quiet_tensorflow_env` (``TF_CPP_MIN_LOG_LEVEL=2`` for TensorFlow
imported afterwards, here and in worker processes started afterwards) and
:func:`quiet_native_stderr` (the lines TensorFlow's C++ code writes while it is imported, which
TensorFlow 2.19 and later print whatever ``TF_CPP_MIN_LOG_LEVEL`` says; ``csstflux.model``
imports Keras inside it). :func:`configure` applies them in the command's process,
:func:`quiet_worker` in each Dask worker (the worker plugins of :mod:`csstflux.pipeline.worker`).

:func:`fmt_num`, :func:`fmt_path` and :func:`fmt_duration` write numbers, paths and times for
people: ``8044.5``, not ``np.float64(8044.51234)``; ``runs``, not ``jobs/../runs``.

Standard library only (tqdm is imported when a bar is drawn).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: The logger every csstflux module's logger sits below.
ROOT = "csstflux"
#: Timestamp of the log lines written off a terminal (UTC).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

log = logging.getLogger(__name__)


class _State:
    """What :func:`configure` set up (one per process)."""

    def __init__(self) -> None:
        self.verbosity: int | None = None   # None: not configured
        self.tty = False
        self.bars = 0                        # tqdm bars open now
        self.env_set: set[str] = set()       # variables quiet_tensorflow_env set


_state = _State()


def level_for(verbosity: int) -> int:
    """Logging level of a verbosity: < 0 (``-q``) WARNING, 0 INFO, > 0 (``-v``) DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``stream``, or to whatever ``sys.stderr`` is when a message comes (a test
    runner swaps it); on a terminal, around the open progress bars."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str] | None) -> None:
        self._fixed = value

    def emit(self, record: logging.LogRecord) -> None:
        if _state.bars:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=self.stream):
                super().emit(record)
        else:
            super().emit(record)


class _TerminalFormatter(logging.Formatter):
    """``message`` for INFO, ``warning: message`` (the level in lower case) otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


class _LogFormatter(logging.Formatter):
    """``2026-12-02T04:51:07Z INFO csstflux.pipeline.predict: message``."""

    converter = time.gmtime  # type: ignore[assignment]   # UTC

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", TIME_FORMAT)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or closed
        return False


def configure(verbosity: int = 0, *, stream: IO[str] | None = None) -> None:
    """Send csstflux's messages to ``stream`` (default: standard error, looked up when each
    message is written) at the level of ``verbosity`` (:func:`level_for`); short lines when
    ``stream`` is a terminal, timestamped lines with the level and the module otherwise.

    Also quiets Dask's and TensorFlow's known noise (:func:`quiet_dask_noise`,
    :func:`quiet_tensorflow_env`), or lets it through when ``verbosity`` > 0. Calling it
    again replaces the previous set-up.
    """
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(h)
    handler = _Handler(stream)
    tty = _isatty(handler.stream)
    handler.setFormatter(_TerminalFormatter() if tty else _LogFormatter())
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    logger.propagate = False   # this handler is the output; no second copy via the root
    _state.verbosity, _state.tty = verbosity, tty
    quiet_dask_noise(restore=verbosity > 0)
    quiet_tensorflow_env(restore=verbosity > 0)


def quiet_progress() -> None:
    """For a command whose standard output is a machine-readable result (``--json``):
    progress and other INFO messages off, warnings kept; ``-v`` keeps everything. Does
    nothing when :func:`configure` was not called."""
    if _state.verbosity is not None and _state.verbosity <= 0:
        logging.getLogger(ROOT).setLevel(logging.WARNING)


def verbose() -> bool:
    """True when csstflux's debug messages are on (``-v``): the known noise is then let
    through, here and (:func:`quiet_worker`) in the workers."""
    return logging.getLogger(ROOT).isEnabledFor(logging.DEBUG)


def quiet_worker(verbose: bool = False) -> None:
    """In a Dask worker process, the noise settings :func:`configure` made in the command's
    process (worker plugins call it in ``setup`` with the command's :func:`verbose`):
    :func:`quiet_dask_noise` and :func:`quiet_tensorflow_env`, or with ``verbose`` neither,
    and csstflux's level at DEBUG so that :func:`quiet_native_stderr` lets TensorFlow's
    start-up lines through as well."""
    quiet_dask_noise(restore=verbose)
    quiet_tensorflow_env(restore=verbose)
    if verbose:
        logging.getLogger(ROOT).setLevel(logging.DEBUG)


# --------------------------------------------------------------------------------- progress

class Progress:
    """Progress of a long step, as a context manager.

    ``with Progress("predicting", total=n, unit="chunks", logger=log) as p: ... p.update()``,
    or ``for x in p.wrap(items)``; :func:`track` wraps an iterable in one call. On a terminal
    (as :func:`configure` found it) a tqdm bar; elsewhere a line when it starts
    (``predicting: 16 chunks``), then a line each time another ``every_pct`` percent is done
    (at most one per ``min_gap_s`` seconds) or ``every_s`` seconds have passed since the last
    line (``predicting: 12 of 16 chunks (75%), 0.41 chunks/s, 10 s left``), and one when it
    ends (``predicting: 16 chunks in 39 s (0.41 chunks/s)``): at most 100/``every_pct`` + time
    / ``every_s`` + 2 lines. Nothing when ``logger`` does not pass INFO (``-q``, ``--json``).
    """

    def __init__(self, what: str, total: int | None = None, *, unit: str = "",
                 logger: logging.Logger | None = None, every_pct: float = 10.0,
                 every_s: float = 60.0, min_gap_s: float = 2.0) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.log = logger or logging.getLogger(ROOT)
        self.every_pct, self.every_s, self.min_gap_s = every_pct, every_s, min_gap_s
        self.n = 0
        self._bar: Any = None
        self._on = False
        self._t0 = self._last_t = 0.0
        self._last_pct = 0.0

    def __enter__(self) -> Progress:
        self._t0 = self._last_t = time.monotonic()
        self._on = self.log.isEnabledFor(logging.INFO)
        if not self._on:
            return self
        handler = next((h for h in logging.getLogger(ROOT).handlers
                        if isinstance(h, _Handler)), None)
        if _state.tty and handler is not None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.what, unit=f" {self.unit or 'it'}",
                             file=handler.stream, dynamic_ncols=True)
            _state.bars += 1
        else:
            self.log.info("%s: %s", self.what,
                          f"{self.total} {self.unit}".rstrip() if self.total is not None
                          else "started")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            _state.bars -= 1
        elif self._on and exc_type is None:
            dt = time.monotonic() - self._t0
            self.log.info("%s: %s in %s (%s)", self.what, f"{self.n} {self.unit}".rstrip(),
                          fmt_duration(dt), self._rate(dt))
        self._on = False

    def update(self, n: int = 1) -> None:
        """``n`` more done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self._on or (self.total is not None and self.n >= self.total):
            return   # the last line comes when the step ends
        now = time.monotonic()
        since = now - self._last_t
        pct = 100.0 * self.n / self.total if self.total else None
        if since >= self.every_s or (pct is not None and pct - self._last_pct >= self.every_pct
                                     and since >= self.min_gap_s):
            self.log.info("%s", self._line(now - self._t0))
            self._last_t = now
            if pct is not None:
                self._last_pct = pct - pct % self.every_pct

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """The items, counting each one done when the next is asked for."""
        for item in items:
            yield item
            self.update()

    def _rate(self, dt: float) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{fmt_num(self.n / dt, 3)}{unit}/s" if dt > 0 else f"-{unit}/s"

    def _line(self, dt: float) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.what}: {self.n}{unit}, {self._rate(dt)}"
        left = ""
        if self.n > 0 and dt > 0:
            left = f", {fmt_duration((self.total - self.n) * dt / self.n)} left"
        return (f"{self.what}: {self.n} of {self.total}{unit} "
                f"({100 * self.n // self.total}%), {self._rate(dt)}{left}")


def track(items: Iterable[T], what: str, total: int | None = None, **kwargs: Any
          ) -> Iterator[T]:
    """``items`` with their :class:`Progress` (``total`` defaults to ``len(items)``; the other
    arguments are :class:`Progress`'s)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, **kwargs) as p:
        yield from p.wrap(items)


# ------------------------------------------------------------------------------- formatting

def fmt_num(x: Any, digits: int = 5) -> str:
    """A number for people: integers as they are, floats to ``digits`` significant digits
    (``8044.51234`` → ``8044.5``, ``0.000256213`` → ``0.00025621``), in plain notation up to
    1e15 (``123456.7`` → ``123457``); NumPy scalars as the Python numbers they hold; anything
    else as ``str``."""
    if getattr(x, "shape", None) == () and hasattr(x, "item"):
        x = x.item()   # a NumPy scalar or 0-d array
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    s = f"{x:.{digits}g}"
    if "e+" in s and abs(x) < 1e15:
        s = f"{x:.0f}"
    return s


def fmt_path(path: str | os.PathLike[str]) -> str:
    """A path for people: normalised (``jobs/../runs`` → ``runs``), and relative to the current
    folder where that is shorter."""
    s = os.path.normpath(os.fspath(path))
    try:
        rel = os.path.relpath(s)
    except ValueError:   # another drive (Windows)
        return s
    return rel if len(rel) < len(s) else s


def fmt_duration(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3 min 05 s``, ``2 h 04 min``."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


# ------------------------------------------------------------------------------------ noise

class _NannyKill(logging.Filter):
    """Drops the nanny's "Worker process still alive after ... seconds, killing": a worker
    slow to exit when the cluster closes, after its work is done. The nanny's other warnings
    (a worker restarted, or killed for memory) stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Worker process still alive after")


_NANNY_KILL = _NannyKill()


def quiet_dask_noise(restore: bool = False) -> None:
    """Keep Dask's known harmless warnings out of this process's output (module docstring):
    the nanny's "still alive ... killing" is dropped, ``distributed.sizeof`` raised to ERROR;
    ``restore=True`` undoes both. Works on the loggers, so it applies in the process that
    calls it: the CLI's (a local cluster's nannies run there), a worker's (its plugin's
    ``setup`` calls it)."""
    nanny, sizeof = logging.getLogger("distributed.nanny"), logging.getLogger("distributed.sizeof")
    if restore:
        nanny.removeFilter(_NANNY_KILL)
        sizeof.setLevel(logging.NOTSET)
    else:
        nanny.addFilter(_NANNY_KILL)
        sizeof.setLevel(logging.ERROR)


#: Environment that keeps TensorFlow's C++ INFO and WARNING lines out (the CPU-instruction
#: notice of every process); read when TensorFlow is imported.
TF_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def quiet_tensorflow_env(restore: bool = False) -> None:
    """Set :data:`TF_QUIET_ENV` in this process's environment where it is not set (a value
    of the user's wins), so that TensorFlow imported afterwards, here or in a worker process
    started afterwards, is quiet; ``restore=True`` removes what an earlier call set."""
    for key, value in TF_QUIET_ENV.items():
        if restore:
            if key in _state.env_set:
                os.environ.pop(key, None)
                _state.env_set.discard(key)
        elif key not in os.environ:
            os.environ[key] = value
            _state.env_set.add(key)


#: Lines native code writes that :func:`quiet_native_stderr` holds back: absl's notice about
#: its own start, TensorFlow's C++ INFO and WARNING lines (absl and older formats), and the
#: second line of the CPU-instruction notice.
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] \S+:\d+\] "
    r"|To enable the following instructions: .*rebuild TensorFlow")


@contextlib.contextmanager
def quiet_native_stderr(restore: bool = False) -> Iterator[None]:
    """Inside, hold back what is written to this process's standard error at the file
    descriptor (native code: TensorFlow's C++ start-up lines); when the block ends, the lines
    matching :data:`NATIVE_NOISE` go to the DEBUG log of this module and the others are
    written out as they were. ``restore=True`` (or no usable descriptor 2): nothing is held
    back. Process-wide while it lasts: other threads' output waits with it."""
    if restore:
        yield
        return
    with contextlib.suppress(ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", "replace")
            keep = []
            for line in text.splitlines(keepends=True):
                if NATIVE_NOISE.match(line):
                    log.debug("held back: %s", line.rstrip())
                else:
                    keep.append(line)
            if keep:
                os.write(2, "".join(keep).encode("utf-8"))
