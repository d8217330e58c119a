"""``csstflux jobs``: the example job files shipped with the package, listed, copied, checked.

The files are the repository's ``jobs/*.toml``, installed as package data
(``csstflux/jobs``). Each holds one table per job, read by :func:`csstflux.config.load_job`
(relative paths from the file's folder): :data:`JOB_TABLES` names the command and the settings
class of each table.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tomllib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import handle_errors

#: Job table → (the command that reads it, its settings class as "module:name").
JOB_TABLES: dict[str, tuple[str, str]] = {
    "trainset": ("build-trainset", "csstflux.library.sets:TrainsetConfig"),
    "train": ("train", "csstflux.model.training:TrainConfig"),
    "finetune": ("finetune", "csstflux.model.training:TrainConfig"),
    "predict": ("predict-catalog", "csstflux.pipeline.predict:PredictJob"),
    "nightly": ("nightly", "csstflux.pipeline.nightly:NightlyConfig"),
}


def shipped_jobs() -> dict[str, Traversable]:
    """Name (without ``.toml``) → the shipped example job file."""
    folder = files("csstflux") / "jobs"
    return {p.name.removesuffix(".toml"): p for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".toml")}


def settings_class(table: str) -> type:
    """The settings class of job table ``table`` (:data:`JOB_TABLES`)."""
    module, _, name = JOB_TABLES[table][1].partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def describe(text: str) -> dict[str, Any]:
    """The tables of a job file's text that are jobs, and its first comment line."""
    first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    tables = [t for t in tomllib.loads(text) if t in JOB_TABLES]
    return {"tables": tables, "commands": [JOB_TABLES[t][0] for t in tables],
            "description": first}


def check_job(path: str | Path) -> list[str]:
    """Load every job table of ``path`` through :func:`csstflux.config.load_job` (a
    :class:`~csstflux.errors.ConfigError` on the first problem); the tables checked."""
    from csstflux.config import load_job
    from csstflux.errors import ConfigError

    try:
        tables = describe(Path(path).read_text())["tables"]
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the job file ({exc})", path=path) from exc
    if not tables:
        raise ConfigError("no job table in the file", path=path,
                          expected=", ".join(f"[{t}]" for t in JOB_TABLES), found="none")
    for table in tables:
        load_job(path, settings_class(table), table)
    return tables


@click.group("jobs", invoke_without_command=True)
@click.pass_context
def jobs_cmd(ctx: click.Context) -> None:
    """The example job files shipped with csstflux: list them (the default), copy them to edit
    (`csstflux jobs copy nightly`), check a job file (`csstflux jobs check FILE`).

    Relative paths in a job file are taken from the file's folder."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@jobs_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_cmd(as_json: bool = False) -> None:
    """List the shipped job files, their tables and the commands that read them."""
    out = {name: {"file": str(p), **describe(p.read_text())}
           for name, p in shipped_jobs().items()}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for name, d in out.items():
        tables = " ".join(f"[{t}]" for t in d["tables"])
        commands = ", ".join(f"csstflux {c} --config {name}.toml" for c in d["commands"])
        click.echo(f"{name:18s} {tables:22s} {commands}")
        if d["description"]:
            click.echo(f"{'':18s} {d['description']}")


@jobs_cmd.command("copy")
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "dest", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Folder to copy them into (made if needed).")
@click.option("--overwrite", is_flag=True, help="Replace files that exist there.")
@handle_errors
def copy_cmd(names: tuple[str, ...], dest: str, overwrite: bool) -> None:
    """Copy shipped job files NAMES (nightly, predict-dr9.toml, ...; `all` for every one) into
    a folder, to edit: their relative paths are then taken from that folder."""
    from csstflux.errors import ConfigError, StoreError

    shipped = shipped_jobs()
    wanted = list(shipped) if "all" in names else [n.removesuffix(".toml") for n in names]
    unknown = [n for n in wanted if n not in shipped]
    if unknown:
        raise ConfigError(f"no shipped job file {', '.join(unknown)}",
                          expected=", ".join(shipped), found=", ".join(unknown))
    folder = Path(dest)
    targets = {n: folder / f"{n}.toml" for n in wanted}
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not overwrite:
        raise StoreError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    folder.mkdir(parents=True, exist_ok=True)
    for n, target in targets.items():
        with shipped[n].open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        click.echo(f"{target}")


@jobs_cmd.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@handle_errors
def check_cmd(paths: tuple[str, ...]) -> None:
    """Check job files: every job table loads (known keys, valid values; exit 2 naming the key
    otherwise). Files named are not opened or created."""
    for path in paths:
        tables = check_job(path)
        click.echo(f"{path}: " + ", ".join(f"[{t}]" for t in tables) + " ok")
