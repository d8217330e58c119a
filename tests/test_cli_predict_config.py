"""predict-catalog --config: a job file's [predict] table sets option defaults."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.cli.predict import predict_catalog_cmd

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
    bad = tmp_path / "bad.toml"
    bad.write_text('[predict]\nmin_snr = "ten"\n')
    with pytest.raises(click.BadParameter, match="ten"):
        predict_catalog_cmd.make_context("predict-catalog", ["--config", str(bad)])


def test_job_file_sets_defaults_and_command_line_wins(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[predict]\nout = "x.zarr"\nbatch_size = 64\nstar_only = true\n'
                   "limit = 10\n")
    ctx = predict_catalog_cmd.make_context("predict-catalog",
                                           ["--config", str(job), "--limit", "5"])
    assert ctx.params["out"] == "x.zarr" and ctx.params["batch_size"] == 64
    assert ctx.params["star_only"] is True and ctx.params["limit"] == 5
    ctx = predict_catalog_cmd.make_context("predict-catalog", [])
    assert ctx.params["batch_size"] == 256 and ctx.params["out"] is None


def test_unknown_key_names_the_nearest_option(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[predict]\nchunk_star = 100\n")
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job)])
    assert res.exit_code == 2
    assert "predict.chunk_star" in res.output and "'chunk_stars'" in res.output
    job.write_text("[predicts]\nlimit = 1\n")
    res = CliRunner().invoke(cli, ["predict-catalog", "--config", str(job)])
    assert res.exit_code == 2 and "no [predict] table" in res.output
