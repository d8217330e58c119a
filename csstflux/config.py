"""Configuration loading: TOML into frozen dataclasses, with helpful errors.

A configuration class is a frozen dataclass whose fields carry docstrings and whose
``__post_init__`` only validates. :func:`load_config` reads one TOML table into it; an unknown
key is an error that names the key and suggests the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from csstflux.errors import ConfigError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Light coercion for TOML values: lists to tuples, ints to floats, nested dataclasses."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(value, non_none[0], key, where)
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return from_dict(annotation, value, where=f"{where}{key}.")  # type: ignore[arg-type]
    if origin is tuple and isinstance(value, list):
        inner = args[0] if args else Any
        # an array of tables: errors name the entry, e.g. 'sets[1].pth'
        return tuple(_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is Path and isinstance(value, str):
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown configuration key '{where}{key}'{hint}",
                              expected=", ".join(sorted(fields)), found=key)
        kwargs[key] = _coerce(value, hints.get(key, Any), key, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration {where.rstrip('.') or cls.__name__}: {exc}") \
            from exc
    except ValueError as exc:
        raise ConfigError(f"invalid value in {where.rstrip('.') or cls.__name__}: {exc}") from exc


def load_config(path: str | os.PathLike[str], cls: type[T], *, table: str | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """Read TOML ``path`` (optionally only ``[table]``) into ``cls``, then apply ``overrides``.

    ``overrides`` are command-line values; keys whose value is None are ignored.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError("configuration file not found", path=p) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=p) from exc
    if table is not None:
        if table not in data:
            near = difflib.get_close_matches(table, list(data), n=1, cutoff=0.5)
            hint = f"; is [{near[0]}] a misspelling of it?" if near else ""
            raise ConfigError(f"configuration has no [{table}] table{hint}", path=p,
                              expected=table, found=", ".join(data) or "no tables")
        data = data[table]
    data = dict(data)
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    try:
        return from_dict(cls, data, where=f"{table}." if table else "")
    except ConfigError as exc:
        raise ConfigError(exc.message, path=p, expected=exc.expected, found=exc.found) from exc


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (Paths and tuples made plain)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}
