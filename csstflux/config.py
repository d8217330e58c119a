"""Configuration loading: TOML into frozen dataclasses, with helpful errors.

A configuration class is a frozen dataclass whose fields carry docstrings and whose
``__post_init__`` only validates. An unknown key is an error that names the key and suggests
the nearest valid one.

Job files. Every ``csstflux`` job file (``jobs/*.toml``: ``--config`` of ``build-trainset``,
``train``, ``finetune``, ``predict-catalog`` and ``nightly``) is read by one loader,
:func:`load_job`: the job's table (``[trainset]``, ``[train]``, ``[finetune]``, ``[predict]``,
``[nightly]``) into its dataclass, with its nested tables (``[predict.cluster]``,
``[nightly.flat]``, ...), checked by the dataclass, and every relative path in it taken from
the job file's folder (made absolute; ``~`` is the home folder). A field is a path when its
type is :class:`pathlib.Path` or :data:`JobPath` (a ``str`` that names a file or folder).
Values given on the command line (``overrides``) are taken as they are: relative to the
working directory.
:func:`load_config` reads other TOML files (an instrument model) without touching paths.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import os
import textwrap
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from csstflux.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class PathField:
    """Annotation marker of a ``str`` field that names a file or folder (:data:`JobPath`)."""

    keep: tuple[str, ...] = ()
    """Values that are words, not paths (``"header"``), left as they are."""


#: A ``str`` field naming a file or folder: :func:`load_job` takes it from the job file's folder.
JobPath = Annotated[str, PathField()]


def _field_types(cls: type, *, extras: bool = False) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=extras)


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
    if origin is tuple and isinstance(value, list | tuple):
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


def with_overrides(obj: T, changes: dict[str, Any], *, where: str = "") -> T:
    """``obj`` with the fields in ``changes`` replaced, checked as :func:`from_dict` checks a
    file (values None are ignored: an option not given)."""
    assert dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    data.update({k: v for k, v in changes.items() if v is not None})
    return from_dict(type(obj), data, where=where)


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError("configuration file not found", path=p) from exc
    except IsADirectoryError as exc:
        raise ConfigError("configuration file is a folder", path=p) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=p) from exc


def _table(data: dict[str, Any], table: str, p: Path, cls: type) -> dict[str, Any]:
    """``data[table]``, or an error that suggests the table meant."""
    if isinstance(data.get(table), dict):
        return dict(data[table])
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    loose = [k for k, v in data.items() if k in names and not isinstance(v, dict)]
    if loose:
        hint = (f"; the keys {', '.join(loose)} are outside any table: put them under "
                f"[{table}]")
    else:
        near = difflib.get_close_matches(table, list(data), n=1, cutoff=0.5)
        hint = f"; is [{near[0]}] a misspelling of it?" if near else ""
    raise ConfigError(f"configuration has no [{table}] table{hint}", path=p,
                      expected=table, found=", ".join(data) or "no tables")


def load_config(path: str | os.PathLike[str], cls: type[T], *, table: str | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """Read TOML ``path`` (optionally only ``[table]``) into ``cls``, then apply ``overrides``.

    ``overrides`` are command-line values; keys whose value is None are ignored. Paths are
    kept as written (job files: :func:`load_job`).
    """
    p = Path(path)
    data = _read_toml(p)
    if table is not None:
        data = _table(data, table, p, cls)
    return _build(cls, dict(data), overrides, table, p)


def load_job(path: str | os.PathLike[str], cls: type[T], table: str, *,
             overrides: dict[str, Any] | None = None) -> T:
    """Read the ``[table]`` of job file ``path`` into ``cls`` (module docstring).

    Relative paths in the file are taken from the file's folder; ``overrides`` (command-line
    values, None ignored) replace the file's values as they are. Errors are
    :class:`ConfigError` naming the file and the key (with the nearest valid key).
    """
    p = Path(path)
    data = _table(_read_toml(p), table, p, cls)
    base = Path(os.path.abspath(p)).parent
    return _build(cls, resolve_paths(cls, data, base), overrides, table, p)


def _build(cls: type[T], data: dict[str, Any], overrides: dict[str, Any] | None,
           table: str | None, p: Path) -> T:
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    try:
        return from_dict(cls, data, where=f"{table}." if table else "")
    except ConfigError as exc:
        raise ConfigError(exc.message, path=p, expected=exc.expected, found=exc.found) from exc


def _path_kind(annotation: Any) -> tuple[str, Any]:
    """What a field's annotation says about paths: ``("path", keep)``, ``("paths", keep)`` (a
    tuple of them), ``("table", cls)``, ``("tables", cls)`` or ``("", None)``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _path_kind(non_none[0]) if len(non_none) == 1 else ("", None)
    if annotation is Path:
        return "path", ()
    if origin is Annotated:
        marks = [m for m in annotation.__metadata__ if isinstance(m, PathField)]
        return ("path", marks[0].keep) if marks else _path_kind(args[0])
    if dataclasses.is_dataclass(annotation):
        return "table", annotation
    if origin is tuple and args:
        kind, extra = _path_kind(args[0])
        if kind in ("path", "table"):
            return kind + "s", extra
    return "", None


def _resolve(value: Any, base: Path, keep: tuple[str, ...]) -> Any:
    """A path of a job file, absolute: relative ones taken from ``base``."""
    if not isinstance(value, str) or not value or value in keep:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_paths(cls: type, data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` (a table for dataclass ``cls``) with its path values taken from ``base``,
    nested tables and arrays of tables included; other values and unknown keys untouched."""
    hints = _field_types(cls, extras=True)
    out = dict(data)
    for key, value in data.items():
        kind, extra = _path_kind(hints.get(key, Any))
        if kind == "path":
            out[key] = _resolve(value, base, extra)
        elif kind == "paths" and isinstance(value, list):
            out[key] = [_resolve(v, base, extra) for v in value]
        elif kind == "table" and isinstance(value, dict):
            out[key] = resolve_paths(extra, value, base)
        elif kind == "tables" and isinstance(value, list):
            out[key] = [resolve_paths(extra, v, base) if isinstance(v, dict) else v
                        for v in value]
    return out


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name → the docstring under the field in ``cls``'s source (empty without source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) \
                and isinstance(nxt.value.value, str):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


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
