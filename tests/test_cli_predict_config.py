"""predict-catalog --config: a job file's [predict] table (a PredictJob, read by load_job) sets
the options' defaults and its [predict.cluster] table the cluster's; the command line wins."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.cli.predict import predict_catalog_cmd
from csstflux.errors import ConfigError
from csstflux.pipeline.cluster import ClusterSettings
from csstflux.pipeline.predict import PredictJob

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_shipped_predict_job_file_is_valid(tmp_path):
    """Every key of the shipped job file is an option and every value converts (``--help``
    alone would stop before the values are converted)."""
    catalog = tmp_path / "dr9.csv"      # the file names a real release's catalogue and root
    catalog.write_text("obsid\n")
    ctx = predict_catalog_cmd.make_context(
        "predict-catalog", ["--config", str(JOBS / "predict-dr9.toml"), "--catalog", str(catalog),
                            "--root", str(tmp_path)])
    assert ctx.params["batch_size"] == 256       # the file's value, converted
    assert ctx.params["out"] == str((JOBS.parent / "runs" / "dr9-seds.zarr").resolve())
    bad = tmp_path / "bad.toml"
    bad.write_text('[predict]\nmin_snr = "ten"\n')
    with pytest.raises(click.BadParameter, match="ten"):
        predict_catalog_cmd.make_context("predict-catalog", ["--config", str(bad)])


def test_job_fields_are_the_options_with_the_same_defaults():
    """One PredictJob field per option of predict-catalog (less --config, --json and the
    cluster options, which are ClusterSettings'), with the option's default."""
    job = PredictJob()
    cluster = {f.name for f in fields(ClusterSettings)} | {"gpu", "dashboard_host"}
    given = predict_catalog_cmd.make_context("predict-catalog", []).params
    options = {k: v for k, v in given.items() if k not in cluster | {"job", "as_json"}}
    assert set(options) == {f.name for f in fields(job)} - {"cluster"}
    for name, default in options.items():
        assert getattr(job, name) == default, name


def test_job_file_sets_defaults_and_command_line_wins(tmp_path, monkeypatch):
    job = tmp_path / "jobs" / "job.toml"
    job.parent.mkdir()
    (tmp_path / "cat.csv").write_text("obsid\n")
    job.write_text('[predict]\nout = "../x.zarr"\ncatalog = "../cat.csv"\nbatch_size = 64\n'
                   'star_only = true\nlimit = 10\nphotometry = "header"\n')
    monkeypatch.chdir(job.parent.parent.parent)   # paths are the job file's, not from here
    ctx = predict_catalog_cmd.make_context("predict-catalog",
                                           ["--config", str(job), "--limit", "5"])
    assert ctx.params["out"] == str(tmp_path / "x.zarr")
    assert ctx.params["catalog"] == str(tmp_path / "cat.csv")
    assert ctx.params["batch_size"] == 64 and ctx.params["photometry"] == "header"
    assert ctx.params["star_only"] is True and ctx.params["limit"] == 5
    ctx = predict_catalog_cmd.make_context("predict-catalog", [])
    assert ctx.params["batch_size"] == 256 and ctx.params["out"] is None
    assert ctx.params["job"] is None


def test_unknown_key_names_the_nearest_option(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[predict]\nchunk_star = 100\n")
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job)])
    assert res.exit_code == 2
    assert "predict.chunk_star" in res.output and "'chunk_stars'" in res.output
    job.write_text("[predict.cluster]\nworkrs = 2\n")
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job)])
    assert res.exit_code == 2
    assert "predict.cluster.workrs" in res.output and "'workers'" in res.output
    job.write_text("[predicts]\nlimit = 1\n")
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job)])
    assert res.exit_code == 2 and "no [predict] table" in res.output


def test_cluster_table_and_flags_reach_start_cluster(tmp_path, monkeypatch):
    """[predict.cluster] gives the cluster; a cluster option on the command line wins."""
    seen: dict[str, Any] = {}

    def fake_start_cluster(settings, **kw):
        seen.update(settings=settings, **kw)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr("csstflux.pipeline.cluster.start_cluster", fake_start_cluster)
    catalog = tmp_path / "cat.csv"
    catalog.write_text("obsid,ra,dec,snrg,teff,logg,feh,rv,path\n"
                       "1,10,20,50,6000,4,0,0,spec.fits\n")
    job = tmp_path / "job.toml"
    job.write_text('[predict]\ncatalog = "cat.csv"\nroot = "."\nout = "out.zarr"\n'
                   '[predict.cluster]\ncluster = "gpu"\nthreads = 3\n'
                   'dashboard_address = "127.0.0.1:0"\n')
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job), "--threads", "4"])
    assert res.exit_code == 2 and "stopped by the test" in res.output, res.output
    assert seen["settings"] == ClusterSettings(cluster="gpu", threads=4,
                                               dashboard_address="127.0.0.1:0")
    assert seen["readers"] is True      # a gpu cluster reads through reader processes
    # a bad combination is refused before the catalogue is read
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job), "--scheduler",
                                   "tcp://127.0.0.1:1"])
    assert res.exit_code == 2 and "either a running scheduler" in res.output
