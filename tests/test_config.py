"""Configuration loading: unknown keys are errors naming the nearest valid key."""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest

from csstflux.config import (
    JobPath,
    PathField,
    field_docs,
    from_dict,
    load_config,
    load_job,
    to_dict,
    with_overrides,
)
from csstflux.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    radius: float = 1.0
    """Match radius, arcsec."""


@dataclass(frozen=True)
class Demo:
    batch_size: int = 256
    """Spectra per model call."""
    snrs: tuple[float, ...] = (20.0, 40.0)
    """Signal-to-noise ratios."""
    inner: Inner = field(default_factory=Inner)
    """Nested table."""

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError("batch_size must be positive")


def test_load_and_coerce(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("batch_size = 64\nsnrs = [20, 80]\n[inner]\nradius = 2\n")
    cfg = load_config(p, Demo)
    assert cfg == Demo(batch_size=64, snrs=(20.0, 80.0), inner=Inner(radius=2.0))
    assert to_dict(cfg) == {"batch_size": 64, "snrs": [20.0, 80.0], "inner": {"radius": 2.0}}


def test_unknown_key_suggests_nearest(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("batch_sise = 64\n")
    with pytest.raises(ConfigError, match="'batch_sise'.*did you mean 'batch_size'") as exc:
        load_config(p, Demo)
    assert str(p) in str(exc.value)
    with pytest.raises(ConfigError, match="'inner.radious'.*'radius'"):
        from_dict(Demo, {"inner": {"radious": 3}})


def test_invalid_value_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nbatch_size = 8\n")
    assert load_config(p, Demo, table="train", overrides={"batch_size": 16}).batch_size == 16
    assert load_config(p, Demo, table="train", overrides={"batch_size": None}).batch_size == 8
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        load_config(p, Demo, table="train", overrides={"batch_size": 0})
    with pytest.raises(ConfigError, match=r"no \[predict\] table"):
        load_config(p, Demo, table="predict")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", Demo)


# --------------------------------------------------------------------------- job files

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@dataclass(frozen=True)
class Entry:
    path: JobPath
    """A folder."""
    params: JobPath | None = None
    """A table."""


@dataclass(frozen=True)
class Job:
    out: Path
    """Output."""
    model: JobPath | None = None
    """A model file."""
    photometry: Annotated[str, PathField(keep=("header",))] | None = None
    """'header' or a table."""
    extra: tuple[Path, ...] = ()
    """More files."""
    name: str = "x"
    """Not a path."""
    inner: Inner = field(default_factory=Inner)
    """Nested table."""
    sets: tuple[Entry, ...] = ()
    """An array of tables."""


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_job_file_loads(path):
    """Each table of each job file in jobs/ that is a job loads through load_job into its
    class, and every job file holds at least one."""
    from csstflux.cli.jobs import JOB_TABLES, settings_class

    tables = [t for t in tomllib.loads(path.read_text()) if t in JOB_TABLES]
    assert tables, f"{path.name}: no job table ({', '.join(JOB_TABLES)})"
    for table in tables:
        cfg = load_job(path, settings_class(table), table)
        assert dataclasses.is_dataclass(cfg)


def test_job_paths_are_taken_from_the_job_file(tmp_path, monkeypatch):
    jobs = tmp_path / "deep" / "jobs"
    jobs.mkdir(parents=True)
    p = jobs / "job.toml"
    p.write_text('[job]\nout = "../runs/out.zarr"\nmodel = "/abs/model.keras"\n'
                 'photometry = "header"\nextra = ["a.yaml", "../b.yaml"]\nname = "n.txt"\n'
                 '[[job.sets]]\npath = "lib"\nparams = "../p.csv"\n[[job.sets]]\npath = "~/lib"\n')
    monkeypatch.chdir(tmp_path)          # not the job file's folder
    job = load_job(p, Job, "job")
    assert job.out == jobs.parent / "runs" / "out.zarr" and job.out.is_absolute()
    assert job.model == "/abs/model.keras" and job.photometry == "header"
    assert job.extra == (jobs / "a.yaml", jobs.parent / "b.yaml") and job.name == "n.txt"
    assert job.sets[0] == Entry(str(jobs / "lib"), str(jobs.parent / "p.csv"))
    assert job.sets[1].path == str(Path("~/lib").expanduser())
    p.write_text('[job]\nout = "o"\nphotometry = "phot.csv"\n')
    assert load_job(p, Job, "job").photometry == str(jobs / "phot.csv")
    # values from the command line are taken as given: from the working directory
    assert load_job(p, Job, "job", overrides={"out": Path("here.zarr")}).out == Path("here.zarr")
    # load_config leaves paths alone (files that are not jobs)
    assert load_config(p, Job, table="job").out == Path("o")


def test_job_typo_suggests_the_nearest_key(tmp_path):
    p = tmp_path / "job.toml"
    p.write_text('[job]\nout = "o"\n[job.inner]\nradious = 2\n')
    with pytest.raises(ConfigError, match=r"'job\.inner\.radious'.*did you mean 'radius'") as e:
        load_job(p, Job, "job")
    assert str(p) in str(e.value)
    p.write_text('[jobs]\nout = "o"\n')
    with pytest.raises(ConfigError, match=r"no \[job\] table; is \[jobs\] a misspelling"):
        load_job(p, Job, "job")
    # a job file from before job tables: its keys are outside any table
    p.write_text('out = "o"\nname = "n"\n')
    with pytest.raises(ConfigError, match=r"out, name are outside any table: put them under "
                       r"\[job\]"):
        load_job(p, Job, "job")


def test_shipped_job_tables_and_their_commands():
    """Every job table names a real command with a --config option, and its class is a
    dataclass whose fields all have docstrings."""
    from csstflux.cli.jobs import JOB_TABLES, settings_class
    from csstflux.cli.main import cli

    for table, (command, _) in JOB_TABLES.items():
        cmd = cli.commands[command]
        assert any("--config" in p.opts for p in cmd.params), command
        cls = settings_class(table)
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}, table


def test_with_overrides_checks_values():
    d = Demo()
    assert with_overrides(d, {"batch_size": 8, "snrs": [1, 2]}) == Demo(8, (1.0, 2.0))
    assert with_overrides(d, {"batch_size": None}) == d
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        with_overrides(d, {"batch_size": 0})
    with pytest.raises(ConfigError, match="'batch_sise'.*'batch_size'"):
        with_overrides(d, {"batch_sise": 1})
