"""Options shared by several commands, declared once from their settings dataclasses.

- :func:`cluster_options`: the cluster options of every Dask command (``predict-catalog``,
  ``anchor``, ``demo-field``, ``build-flat``, ``nightly``), one per field of
  :class:`csstflux.pipeline.cluster.ClusterSettings` (``--scheduler``, ``--cluster``,
  ``--jobs``, ``--workers``, ``--threads``, ``--memory``, ``--dashboard-address``,
  ``--tls-ca-file``, ``--tls-cert``, ``--tls-key``, ``--insecure``, ``--dask-config``,
  ``--prometheus/--no-prometheus``), laid over a job file's ``cluster`` table by
  :func:`cluster_settings`. ``--gpu`` (``--cluster gpu``) and ``--dashboard-host HOST`` (the
  host of ``--dashboard-address``) are kept as hidden spellings.
- :func:`settings_options`: one option per field of a settings dataclass
  (:class:`csstflux.flat.settings.FlatSettings` for ``build-flat``), its help the field's
  docstring, its default the field's.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from click.core import ParameterSource

from csstflux.cli.errors import handle_errors
from csstflux.config import field_docs, from_dict, with_overrides
from csstflux.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def _help(cls: type, name: str, extra: str = "") -> str:
    return " ".join((field_docs(cls).get(name, "") + extra).split())


def _cluster_params() -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """(declarations, attributes) of the cluster options, in ``--help`` order."""
    from csstflux.pipeline.cluster import CLUSTER_KINDS, ClusterSettings

    d, c = ClusterSettings(), ClusterSettings
    file = click.Path(exists=True, dir_okay=False)
    count = click.IntRange(min=0)
    return [
        (("--scheduler",), dict(metavar="ADDRESS", help=_help(c, "scheduler"))),
        (("--cluster",), dict(type=click.Choice(CLUSTER_KINDS), default=d.cluster,
                              show_default=True, help=_help(c, "cluster"))),
        (("--gpu",), dict(is_flag=True, hidden=True, help="--cluster gpu.")),
        (("--jobs",), dict(type=count, default=d.jobs, show_default=True,
                           help=_help(c, "jobs"))),
        (("--workers",), dict(type=count, default=d.workers, show_default=True,
                              help=_help(c, "workers"))),
        (("--threads",), dict(type=count, default=d.threads, show_default=True,
                              help=_help(c, "threads"))),
        (("--memory",), dict(metavar="SIZE", default=d.memory, show_default=True,
                             help=_help(c, "memory"))),
        (("--dashboard-address",), dict(metavar="HOST:PORT", default=d.dashboard_address,
                                        show_default=True, help=_help(c, "dashboard_address"))),
        (("--dashboard-host",), dict(hidden=True, help="The host of --dashboard-address.")),
        (("--tls-ca-file",), dict(type=file, help=_help(c, "tls_ca_file"))),
        (("--tls-cert",), dict(type=file, help=_help(c, "tls_cert"))),
        (("--tls-key",), dict(type=file, help=_help(c, "tls_key"))),
        (("--insecure",), dict(is_flag=True, help=_help(c, "insecure"))),
        (("--dask-config",), dict(type=file, multiple=True,
                                  help=_help(c, "dask_config", " Repeatable."))),
        (("--prometheus/--no-prometheus",), dict(default=None, help=_help(c, "prometheus"))),
    ]


def _add_options(func: F, options: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
                 ) -> list[str]:
    """Add ``options`` to ``func`` (first one first in ``--help``); their parameter names."""
    for decls, attrs in reversed(options):
        click.option(*decls, **attrs)(func)
    params = func.__click_params__  # type: ignore[attr-defined]
    return [str(p.name) for p in params[len(params) - len(options):]]


def cluster_options(func: F) -> F:
    """Add the cluster options to a click command (module docstring).

    The command receives ``cluster_flags``: the cluster options given on the command line,
    by name; :func:`cluster_settings` turns them (over a job file's table) into the settings.
    """
    names: list[str] = []

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT,
                 ParameterSource.DEFAULT_MAP, ParameterSource.PROMPT)
        flags = {n: kwargs[n] for n in names if ctx.get_parameter_source(n) in given}
        for n in names:
            del kwargs[n]
        return func(*args, cluster_flags=flags, **kwargs)

    names.extend(_add_options(wrapper, _cluster_params()))
    return wrapper  # type: ignore[return-value]


def cluster_settings(flags: dict[str, Any], base: Any = None) -> Any:
    """The :class:`~csstflux.pipeline.cluster.ClusterSettings` of ``flags`` (from
    :func:`cluster_options`) laid over ``base`` (a job file's; None: the defaults), checked:
    :class:`ConfigError` on a bad value or combination."""
    from csstflux.pipeline.cluster import ClusterSettings, split_address

    base = base if base is not None else ClusterSettings()
    changes = dict(flags)
    if changes.pop("gpu", False):
        if changes.get("cluster", "gpu") != "gpu":
            raise ConfigError(f"--gpu is --cluster gpu; it cannot go with --cluster "
                              f"{changes['cluster']}")
        changes["cluster"] = "gpu"
    host = changes.pop("dashboard_host", None)
    if host is not None:
        if "dashboard_address" in changes:
            raise ConfigError("--dashboard-host is the host of --dashboard-address: give one")
        changes["dashboard_address"] = f"{host}:{split_address(base.dashboard_address)[1]}"
    return with_overrides(base, changes, where="cluster.")


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """click type of a field annotation, and whether it is a flag."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return click.Choice([str(a) for a in args]), False
    if annotation is bool:
        return None, True
    if annotation is Path:
        return click.Path(), False
    if annotation in (int, float, str):
        return annotation, False
    raise TypeError(f"no command-line option for a field of type {annotation!r}")


def settings_options(cls: type, name: str) -> Callable[[F], F]:
    """Decorator: one option per field of settings dataclass ``cls`` (``--max-iter`` for
    ``max_iter``, its docstring as help, its default), given to the command as one ``cls``
    instance, keyword ``name``; a bad value exits 2 (:class:`ConfigError`)."""
    hints = typing.get_type_hints(cls)
    options = []
    for f in fields(cls):  # type: ignore[arg-type]
        ctype, flag = _click_type(hints[f.name])
        opt = f"--{f.name.replace('_', '-')}"
        options.append(((f"{opt}/--no-{opt[2:]}" if flag else opt, f.name),
                        dict(type=ctype, default=None if f.default is MISSING else f.default,
                             show_default=True, help=_help(cls, f.name))))

    def decorate(func: F) -> F:
        names: list[str] = []

        @functools.wraps(func)
        @handle_errors
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return func(*args, **{name: from_dict(cls, values, where=f"{name}.")}, **kwargs)

        names.extend(_add_options(wrapper, options))
        return wrapper  # type: ignore[return-value]

    return decorate
