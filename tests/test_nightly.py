"""The nightly job: rolling window, versions, reruns, lock, exit codes, half-written exposures,
realistic exposures whose all-NaN chunks Zarr never stores."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from test_io_stores_exposures import _stored_chunks, _strip_record
from test_pipeline_flats import DEC, RA, _stars, _store

from csstflux.cli.main import cli
from csstflux.config import load_config
from csstflux.errors import ConfigError, LockedError
from csstflux.flat.fit import band_pixels
from csstflux.flat.observe import simulate
from csstflux.io.stores.exposures import list_exposures, read_exposure, read_truth
from csstflux.io.stores.flatcube import read_flat_zarr
from csstflux.io.stores.nights import (
    NightLock,
    check_exposure,
    parse_night,
    scan_night,
    window_nights,
)
from csstflux.pipeline.nightly import NightlyConfig, load_nightly_config, read_index

N1, N2, N3 = "2026-11-20", "2026-11-21", "2026-11-23"



@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A predictions store and three nights of simulated exposures (each night a new seed)."""
    d = tmp_path_factory.mktemp("nightly")
    rng = np.random.default_rng(3)
    ra, dec = _stars(rng)
    _store(d / "pred.zarr", ra, dec, rng)
    for k, night in enumerate((N1, N2, N3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # top-hat throughput
            simulate(d / "pred.zarr", d / "exposures" / night, ra=RA, dec=DEC, radius_deg=1.0,
                     n_pointings=2, seed=10 + k, dither_arcsec=5.0, amplitude=0.03)
    return d


@pytest.fixture(scope="module")
def realistic(tmp_path_factory, shared_data):
    """400 stars per detector through the real CSST slitless throughputs: counts are NaN
    outside each detector's band, so whole chunks are NaN and Zarr never stores them (6 of
    8). One noisy night ``N1`` for the nightly job, and ideal exposures in ``ideal/``."""
    d = tmp_path_factory.mktemp("realistic")
    rng = np.random.default_rng(11)
    ra, dec = _stars(rng, n=400)
    _store(d / "pred.zarr", ra, dec, rng)
    tp = shared_data / "csst" / "csst_sls_tp"
    for out, seed, ideal in ((d / "exposures" / N1, 21, False), (d / "ideal", 22, True)):
        simulate(d / "pred.zarr", out, ra=RA, dec=DEC, radius_deg=1.0, n_pointings=2,
                 seed=seed, ideal=ideal, dither_arcsec=5.0, amplitude=0.03, throughput_dir=tp)
    return d


def _unstored_chunks(path):
    """Arrays of an exposure group with chunks Zarr did not store: name → (stored, all)."""
    g = zarr.open_group(str(path), mode="r", zarr_format=3)
    return {k: (a.nchunks_initialized, a.nchunks) for k, a in g.arrays()
            if a.nchunks_initialized < a.nchunks}


def _config(tmp_path, archive, scheduler, **extra):
    """A job file; ``scheduler=""``: the job starts its own one-worker local cluster."""
    lines = ["[nightly]", f'exposures_root = "{archive / "exposures"}"',
             f'predictions = "{archive / "pred.zarr"}"', 'output_root = "flats"',
             *[f"{k} = {v}" for k, v in extra.items()],
             "[nightly.flat]", "max_iter = 1", "[nightly.cluster]", f'scheduler = "{scheduler}"',
             *(["workers = 1", 'dashboard_address = "127.0.0.1:0"'] if not scheduler else [])]
    p = tmp_path / "nightly.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _run(cfg, night, *args):
    return CliRunner().invoke(cli, ["nightly", "--config", str(cfg), "--night", night, *args])


def _open_in_browser(page, shot):
    """The QA page in headless chromium: loads, every image decodes, no script error."""
    from browser import check_page, chromium_executable

    html = Path(page).read_text()
    assert html.count("<img") >= 3 and "dask-performance.html" in html
    if chromium_executable() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium missing in CI (.ci/run installs it)")
        return                       # developer machine without chromium: checked in CI
    r = check_page(page, shot)
    assert not r.errors and not r.broken_images and not r.blocked, r
    assert shot.stat().st_size > 10_000


def test_night_parsing_and_window():
    today = dt.date(2026, 11, 25)
    assert parse_night("yesterday", today=today) == dt.date(2026, 11, 24)
    assert parse_night("2026-11-20") == dt.date(2026, 11, 20)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_night("20/11/2026")
    assert window_nights(dt.date(2026, 11, 3), 3) == [dt.date(2026, 11, d) for d in (1, 2, 3)]


def test_shipped_job_file_parses():
    cfg = load_nightly_config(os.path.join(os.path.dirname(__file__), "..", "jobs",
                                           "nightly.toml"))
    assert cfg.window_nights == 7 and cfg.flat.order == 2 and cfg.cluster.scheduler == ""
    assert cfg.output_root.is_absolute()


def test_unknown_key_is_named_with_nearest(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[nightly]\nexposures_root = "e"\npredictions = "p"\noutput_root = "o"\n'
                 "window_night = 3\n")
    with pytest.raises(ConfigError, match="window_night.*did you mean 'window_nights'"):
        load_config(p, NightlyConfig, table="nightly")
    p.write_text('[nightly]\nexposures_root = "e"\npredictions = "p"\noutput_root = "o"\n'
                 "[nightly.flat]\nordr = 2\n")
    res = CliRunner().invoke(cli, ["nightly", "--config", str(p), "--night", N1])
    assert res.exit_code == 2 and "nightly.flat.ordr" in res.output and "'order'" in res.output


@pytest.mark.slow
def test_nightly_versions_reruns_and_reproducibility(archive, tmp_path, dask_scheduler_address):
    cfg = _config(tmp_path, archive, dask_scheduler_address, window_nights=3)
    out = tmp_path / "flats"

    # dry run: the plan, nothing written
    res = _run(cfg, N1, "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert [w["n_exposures"] for w in plan["window"]] == [0, 0, 2]
    assert not (out / "versions").exists()

    res = _run(cfg, N1, "--json")
    assert res.exit_code == 0, res.output
    s1 = json.loads(res.stdout)
    v1 = out / "versions" / s1["version"]
    assert s1["version"].startswith(f"flat-{N1}-") and s1["n_exposures"] == 2
    assert s1["previous_version"] is None and s1["n_stars"] > 0
    on_disk = json.loads((v1 / "summary.json").read_text())
    assert on_disk["version"] == s1["version"] and on_disk["status"] == "done"
    for key in ("fits", "sigma_fits", "zarr", "performance_report", "qa_report"):
        assert os.path.exists(s1["outputs"][key]), key
    assert (v1 / "qa" / "flat_maps.png").is_file()
    assert not any(p.name.endswith(".partial") for p in (out / "versions").iterdir())

    # the next night: a rolling window of both nights, compared with the first version
    res = _run(cfg, N2, "--json")
    assert res.exit_code == 0, res.output
    s2 = json.loads(res.stdout)
    assert s2["exposures_per_night"] == {"2026-11-19": 0, N1: 2, N2: 2}
    assert s2["n_exposures"] == 4 and s2["previous_version"] == s1["version"]
    for det in s2["detectors"].values():
        assert 0 < det["change_vs_previous_max_abs"] < 0.05   # same flat, other noise
    assert (out / "versions" / s2["version"] / "qa" / "change_vs_previous.png").is_file()
    _open_in_browser(s2["outputs"]["qa_report"], tmp_path / "qa.png")
    assert [e["version"] for e in read_index(out)] == [s1["version"], s2["version"]]

    # rerun of a finished night: nothing to do, nothing rewritten
    stamp = (out / "versions" / s2["version"] / "flat.fits").stat().st_mtime_ns
    res = _run(cfg, N2)
    assert res.exit_code == 3 and "already exists" in res.output
    assert (out / "versions" / s2["version"] / "flat.fits").stat().st_mtime_ns == stamp

    # rebuilding the night from scratch reproduces the same version, bit for bit
    keep = tmp_path / "kept.zarr"
    shutil.copytree(out / "versions" / s2["version"] / "flat.zarr", keep)
    shutil.rmtree(out / "versions" / s2["version"])
    res = _run(cfg, N2, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["version"] == s2["version"]
    a, _ = read_flat_zarr(keep)
    b, _ = read_flat_zarr(out / "versions" / s2["version"] / "flat.zarr")
    for det in a:
        np.testing.assert_array_equal(a[det]["flat"], b[det]["flat"])
        np.testing.assert_array_equal(a[det]["sigma"], b[det]["sigma"])

    # a late exposure changes the inputs: a new version, the earlier one left as it was
    late = archive / "exposures" / N2 / "exposure-0009.zarr"
    shutil.copytree(archive / "exposures" / N1 / "exposure-0000.zarr", late)
    try:
        res = _run(cfg, N2, "--json")
    finally:
        shutil.rmtree(late)
    assert res.exit_code == 0, res.output
    s3 = json.loads(res.stdout)
    assert s3["version"] != s2["version"] and s3["n_exposures"] == 5
    assert (out / "versions" / s2["version"] / "flat.fits").is_file()


@pytest.mark.slow
def test_nothing_to_do(archive, tmp_path, dask_scheduler_address):
    cfg = _config(tmp_path, archive, dask_scheduler_address)
    res = _run(cfg, "2026-11-22")          # no folder for that night
    assert res.exit_code == 3 and "no folder for night 2026-11-22" in res.output
    res = _run(cfg, "2026-11-22", "--dry-run")
    assert res.exit_code == 3
    assert not (tmp_path / "flats" / "versions").exists()


@pytest.mark.slow
def test_half_written_exposures_skipped_and_reported(archive, tmp_path):
    night = "2026-11-24"
    folder = archive / "exposures" / night
    shutil.copytree(archive / "exposures" / N3, folder)
    try:
        # a transfer still in progress: a counts chunk missing; another without its metadata;
        # a writer's unfinished .partial group (not an exposure name at all)
        chunks = sorted((folder / "exposure-0001.zarr" / "counts" / "c").rglob("*"))
        next(c for c in chunks if c.is_file()).unlink()
        shutil.copytree(folder / "exposure-0000.zarr", folder / "exposure-0002.zarr")
        (folder / "exposure-0002.zarr" / "zarr.json").unlink()
        shutil.copytree(folder / "exposure-0000.zarr", folder / "exposure-0003.zarr.partial")
        # an older writer's group (no completion record) with every chunk stored: accepted
        shutil.copytree(folder / "exposure-0000.zarr", folder / "exposure-0004.zarr")
        _strip_record(folder / "exposure-0004.zarr")
        scan = scan_night(archive / "exposures", dt.date.fromisoformat(night))
        assert [p.name for p in scan.exposures] == ["exposure-0000.zarr", "exposure-0004.zarr"]
        reasons = {p.name: r for p, r in scan.skipped}
        assert "incomplete" in reasons["exposure-0001.zarr"]
        assert "exposure-0002.zarr" in reasons
        assert check_exposure(folder / "exposure-0000.zarr") is None

        cfg = _config(tmp_path, archive, "", window_nights=1)      # its own local cluster
        res = _run(cfg, night, "--json")
        assert res.exit_code == 0, res.output
        s = json.loads(res.stdout)
        assert s["dashboard"].startswith("http://127.0.0.1:")
        assert s["n_exposures"] == 2
        assert {os.path.basename(x["path"]) for x in s["skipped"]} == {
            "exposure-0001.zarr", "exposure-0002.zarr"}
        html = Path(s["outputs"]["qa_report"]).read_text()
        assert "exposure-0001.zarr" in html and "incomplete" in html
    finally:
        shutil.rmtree(folder)


@pytest.mark.slow
def test_nightly_builds_from_exposures_with_unstored_nan_chunks(realistic, tmp_path,
                                                               dask_scheduler_address):
    """The reported bug: a realistic field's exposures were all skipped as incomplete (exit 2).
    Now they are whole by the writer's record; a copy without the record and holes, or with
    a chunk the writer stored missing, is still skipped."""
    folder = realistic / "exposures" / N1
    for p in list_exposures(folder):
        assert set(_unstored_chunks(p)) == {"counts", "counts_err"}, _unstored_chunks(p)
        assert check_exposure(p) is None
    no_record, no_chunk = folder / "exposure-0008.zarr", folder / "exposure-0009.zarr"
    for p in (no_record, no_chunk):
        shutil.copytree(folder / "exposure-0000.zarr", p)
    _strip_record(no_record)
    _stored_chunks(no_chunk, "counts")[0].unlink()
    try:
        cfg = _config(tmp_path, realistic, dask_scheduler_address, window_nights=1)
        res = _run(cfg, N1, "--json")
    finally:
        for p in (no_record, no_chunk):
            shutil.rmtree(p)
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["n_exposures"] == 2 and s["n_stars"] > 0
    assert (tmp_path / "flats" / "versions" / s["version"] / "flat.fits").is_file()
    reasons = {os.path.basename(x["path"]): x["reason"] for x in s["skipped"]}
    assert set(reasons) == {no_record.name, no_chunk.name}
    assert "no completion marker" in reasons[no_record.name]
    assert "5 of the 6 chunks" in reasons[no_chunk.name]
    for det in s["detectors"].values():
        assert det["n_wavelengths"] > 0


@pytest.mark.slow
def test_build_flat_reads_unstored_chunks_as_nan(realistic, tmp_path, dask_scheduler_address):
    """``csstflux build-flat`` on exposures with unstored chunks: they read back as the fill
    value, NaN (outside each band, never zero), and the ideal flat matches the truth."""
    for p in list_exposures(realistic / "ideal"):
        assert _unstored_chunks(p)
        e = read_exposure(p)
        inband = np.stack([band_pixels(e.throughput[k]) for k in e.detector])
        assert np.isnan(e.counts[~inband]).all() and np.isnan(e.counts_err[~inband]).all()
        assert np.isfinite(e.counts[inband]).all()
    res = CliRunner().invoke(cli, [
        "build-flat", "--exposures", str(realistic / "ideal"),
        "--predictions", str(realistic / "pred.zarr"), "--out", str(tmp_path / "cube"),
        "--star-scale", "known", "--max-iter", "0", "--scheduler", dask_scheduler_address,
        "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_exposures"] == 2
    cubes, _ = read_flat_zarr(tmp_path / "cube.zarr")
    flats, waves, _, _, _ = read_truth(realistic / "ideal")
    for k, truth in flats.items():
        np.testing.assert_allclose(cubes[k]["wavelength"], waves[k])
        # ideal, noise-free, order-2 truth: exact up to float32 counts
        np.testing.assert_allclose(cubes[k]["flat"], truth, atol=2e-5)


@pytest.mark.slow
def test_lock_blocks_a_second_run(archive, tmp_path, dask_scheduler_address):
    cfg = _config(tmp_path, archive, dask_scheduler_address)
    locks = tmp_path / "flats" / "locks"
    with NightLock(locks, dt.date.fromisoformat(N3)):
        res = _run(cfg, N3)
        assert res.exit_code == 1 and "holds the lock" in res.output
        with pytest.raises(LockedError):
            NightLock(locks, dt.date.fromisoformat(N3)).acquire()
    assert not (locks / f"{N3}.lock").exists()
    res = _run(cfg, N3)                 # lock released: the run goes ahead (plain output)
    assert res.exit_code == 0, res.output
    assert f"version flat-{N3}-" in res.output and "dashboard: http" in res.output
    assert "qa_report: " in res.output and not (locks / f"{N3}.lock").exists()

    # a lock left by a process that died is stale: taken over with a warning
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    import socket

    (locks / f"{N3}.lock").write_text(json.dumps({"host": socket.gethostname(),
                                                  "pid": int(dead.stdout), "started": "x"}))
    lock = NightLock(locks, dt.date.fromisoformat(N3))
    with pytest.warns(UserWarning, match="stale lock"):
        lock.acquire()
    assert lock.owner()["pid"] == os.getpid()
    lock.release()
