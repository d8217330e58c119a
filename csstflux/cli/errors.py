"""Turn library errors into one-line messages and exit codes (the only place that does).

The exit-code table, the same for every ``csstflux`` command (docs/reference.md, "Exit status"):

===  ==============================================================================
0    done
1    failed: bad input data, a file that cannot be written, a model that does not check
     out, another run holding the lock, too many unusable files
2    usage or configuration error: an unknown option or key, a missing or invalid job
     file or option value (click's usage errors exit 2 too)
3    nothing to do (``nightly``: no new complete exposure, or the version exists already)
===  ==============================================================================

A scheduler should count only 0 and 3 as success, so that a moved or broken job file is
reported as a failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from csstflux.errors import ConfigError, CsstFluxError

F = TypeVar("F", bound=Callable[..., Any])

#: The exit-code table (module docstring).
EXIT_DONE = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_DO = 3

#: The table as text, for ``csstflux --help``.
EXIT_CODES_HELP = ("Exit status: 0 done; 1 failed; 2 usage or configuration error; "
                   "3 nothing to do.")


def handle_errors(func: F) -> F:
    """Decorator for click commands: a :class:`CsstFluxError` becomes ``error: ...`` and
    :data:`EXIT_USAGE` for a :class:`ConfigError`, else :data:`EXIT_FAILURE`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CsstFluxError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_USAGE if isinstance(exc, ConfigError)
                             else EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]
