"""Turn library errors into one-line messages and exit codes (the only place that does)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from csstflux.errors import CsstFluxError

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code for a failure the user can fix (bad input, bad configuration).
EXIT_FAILURE = 1


def handle_errors(func: F) -> F:
    """Decorator for click commands: a :class:`CsstFluxError` becomes ``error: ...`` and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CsstFluxError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]
