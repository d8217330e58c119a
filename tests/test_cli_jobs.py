"""``csstflux jobs``: the shipped job files (package data) listed, copied and checked."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from click.testing import CliRunner

from csstflux.cli.jobs import shipped_jobs
from csstflux.cli.main import cli

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_shipped_jobs_are_the_repository_jobs():
    """The package data is jobs/: the same files, the same bytes."""
    shipped = shipped_jobs()
    assert set(shipped) == {p.stem for p in JOBS.glob("*.toml")}
    for name, p in shipped.items():
        assert p.read_bytes() == (JOBS / f"{name}.toml").read_bytes()


def test_jobs_lists_them():
    res = CliRunner().invoke(cli, ["jobs"])
    assert res.exit_code == 0, res.output
    for name in ("nightly", "predict-dr9", "train-default", "trainset-default"):
        assert name in res.output
    assert "csstflux nightly --config nightly.toml" in res.output
    res = CliRunner().invoke(cli, ["jobs", "list", "--json"])
    listed = json.loads(res.stdout)
    assert listed["train-default"]["tables"] == ["train", "finetune"]
    assert listed["predict-dr9"]["commands"] == ["predict-catalog"]


def test_jobs_copy_and_the_copy_loads_from_its_folder(tmp_path):
    res = CliRunner().invoke(cli, ["jobs", "copy", "nightly", "predict-dr9.toml", "--to",
                                   str(tmp_path / "mine")])
    assert res.exit_code == 0, res.output
    copied = tmp_path / "mine" / "nightly.toml"
    assert copied.read_bytes() == (JOBS / "nightly.toml").read_bytes()
    assert (tmp_path / "mine" / "predict-dr9.toml").is_file()
    # relative paths of the copy are taken from its new folder
    from csstflux.pipeline.nightly import load_nightly_config

    cfg = load_nightly_config(copied)
    rel = tomllib.loads(copied.read_text())["nightly"]["output_root"]
    assert cfg.output_root == (copied.parent / rel).resolve()
    # an existing file is kept unless --overwrite
    copied.write_text("# mine\n")
    res = CliRunner().invoke(cli, ["jobs", "copy", "nightly", "--to", str(tmp_path / "mine")])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert copied.read_text() == "# mine\n"
    res = CliRunner().invoke(cli, ["jobs", "copy", "nightly", "--to", str(tmp_path / "mine"),
                                   "--overwrite"])
    assert res.exit_code == 0 and copied.read_bytes() == (JOBS / "nightly.toml").read_bytes()
    res = CliRunner().invoke(cli, ["jobs", "copy", "all", "--to", str(tmp_path / "all")])
    assert res.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(
        p.name for p in JOBS.glob("*.toml"))
    res = CliRunner().invoke(cli, ["jobs", "copy", "nightlly", "--to", str(tmp_path)])
    assert res.exit_code == 2 and "nightlly" in res.output


def test_jobs_check(tmp_path):
    res = CliRunner().invoke(cli, ["jobs", "check", str(JOBS / "nightly.toml"),
                                   str(JOBS / "predict-dr9.toml")])
    assert res.exit_code == 0 and res.output.count(" ok") == 2, res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[nightly]\nexposures_root = "e"\npredictions = "p"\noutput_root = "o"\n'
                   "[nightly.cluster]\nworkrs = 1\n")
    res = CliRunner().invoke(cli, ["jobs", "check", str(bad)])
    assert res.exit_code == 2 and "nightly.cluster.workrs" in res.output
    assert "'workers'" in res.output
    bad.write_text('out = "o"\n')
    res = CliRunner().invoke(cli, ["jobs", "check", str(bad)])
    assert res.exit_code == 2 and "no job table" in res.output
