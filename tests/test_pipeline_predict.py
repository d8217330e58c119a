"""``csstflux predict-catalog`` end to end on a small demo release.

Against a session-scoped local cluster (two worker processes) and, in the slow test, against a
real multi-process cluster (``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1) with
one worker killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from lamost_files import write

from csstflux.cli.main import cli
from csstflux.demo.release import build_demo_release
from csstflux.flags import Flag
from csstflux.grids import OUTPUT_GRID
from csstflux.io.formats.lamost_photometry import HEADER_BANDS
from csstflux.io.stores.predictions import open_predictions, read_failures
from csstflux.model.calibrate import apply_reference_sigma
from csstflux.model.card import save_model
from csstflux.model.network import build_uaranet
from csstflux.pipeline.predict import single_process_predictions
from csstflux.pipeline.tasks import done_chunks, marker_dir
from csstflux.sky.crossmatch import angular_separation


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_demo_release(tmp_path_factory.mktemp("release"), n_stars=90, seed=4)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(build_uaranet(seed=5), path)
    return str(path)


def run_cli(*args):
    res = CliRunner().invoke(cli, ["predict-catalog", *map(str, args), "--json"])
    return res, (json.loads(res.output[res.output.index("{"):]) if "{" in res.output else None)


def common(release, model, out):
    return ["--catalog", release.catalog, "--root", release.root, "--model", model,
            "--out", out, "--chunk-stars", 16, "--batch-size", 8,
            "--max-failed-fraction", 0.5]


@pytest.fixture(scope="module")
def finished(release, model, tmp_path_factory, dask_scheduler_address):
    out = tmp_path_factory.mktemp("out") / "pred.zarr"
    res, summary = run_cli(*common(release, model, out), "--scheduler",
                           dask_scheduler_address)
    assert res.exit_code == 0, res.output
    return out, summary


def test_store_equals_single_process(finished, release, model):
    out, summary = finished
    ds = open_predictions(out)
    assert summary["n_stars"] == ds.sizes["star"] == release.n_stars
    assert sorted(ds["obsid"].values.tolist()) == sorted(
        int(x) for x in np.loadtxt(release.catalog, delimiter=",", skiprows=1,
                                   usecols=0, dtype=np.int64))
    assert len(set(ds["obsid"].values.tolist())) == release.n_stars  # no duplicates
    files = ds["source_file"].values.tolist()
    z = np.full(len(files), np.nan)
    rv = ds["rv"].values.astype(float)
    beta = rv / 299792.458
    z = np.where(np.isfinite(rv), np.sqrt((1 + beta) / (1 - beta)) - 1, np.nan)
    sed, err = single_process_predictions(files, z, model, batch_size=8)
    np.testing.assert_allclose(ds["sed"].values, sed, rtol=1e-5, atol=2e-5, equal_nan=True)
    np.testing.assert_allclose(ds["sed_err"].values, err, rtol=1e-5, atol=2e-5,
                               equal_nan=True)
    assert ds["wavelength"].attrs["units"] == "Angstrom"
    assert ds.attrs["model"]["sha256"] and ds.attrs["input_hash"]


def test_broken_files_flagged_not_fatal(finished, release):
    out, summary = finished
    ds = open_predictions(out)
    flags = dict(zip(ds["obsid"].values.tolist(), ds["flags"].values.tolist(), strict=True))
    files, errors = read_failures(out)
    unusable = {"UNREADABLE", "TRUNCATED", "COVERAGE", "BAD_FORMAT", "BAD_INPUT"}
    obsids = ds["obsid"].values.tolist()
    for p in release.problems:
        assert flags[p.obsid] & int(Flag[p.flag]), (p, Flag(flags[p.obsid]))
        star = obsids.index(p.obsid)
        sed = ds["sed"].isel(star=star).values
        if p.flag in unusable:   # no prediction, and the file is in the failures table
            assert p.path in files and np.isnan(sed).all()
        else:                    # predicted (NaN only where the model gave <= 0), flagged
            n_masked = int(ds["n_masked_sed"][star])
            assert np.isfinite(sed).sum() == OUTPUT_GRID.n - n_masked
    expected = [p for p in release.problems if p.flag in unusable]
    assert summary["n_failed"] == len(files) == len(expected) >= 7
    assert all(e for e in errors)
    # BAD_INPUT failures say what: the junction ratio, the WCS mismatch in pixels
    assert sum("red/blue" in e for e in errors) == sum("212 pixels" in e for e in errors) == 1
    # every flag counted once per star that carries it, in the summary and the store
    values = ds["flags"].values
    want = {f.name: int(np.count_nonzero(values & int(f))) for f in Flag}
    assert summary["flag_counts"] == want == ds.attrs["flag_counts"]
    assert want["BAD_INPUT"] == 2 and want["LOW_SNR_ARM"] >= 1
    # the regular stars: no input flag, and LOW_SNR_ARM exactly where an arm's header S/N
    # is below 20 (the demo's S/N is that of the fainter arm, 15-150)
    from csstflux.io import validate as quality
    from csstflux.io.formats import lamost

    problems = {p.obsid for p in release.problems}
    for i, o in enumerate(obsids):
        if o in problems:
            continue
        assert not values[i] & int(Flag.BAD_INPUT | Flag.COVERAGE | Flag.UNREADABLE)
        low = quality.arm_snr(lamost.read(ds["source_file"].values[i])).low(20.0)
        assert bool(values[i] & Flag.LOW_SNR_ARM) == bool(low), (o, low)


def test_xarray_and_footprint_query(finished):
    out, _ = finished
    ds = xr.open_zarr(out)
    assert ds["sed"].dims == ("star", "wavelength") and ds.sizes["wavelength"] == 574
    assert "sed_err_ref" not in ds          # the model's card has no reference term
    ra0, dec0 = float(ds["ra"][5]), float(ds["dec"][5])
    sub = open_predictions(out, cone=(ra0, dec0, 1.0))
    sep = angular_separation(ds["ra"].values, ds["dec"].values, ra0, dec0) / 3600.0
    assert sorted(sub["obsid"].values.tolist()) == sorted(
        ds["obsid"].values[sep <= 1.0].tolist())


def test_rerun_resumes_and_refuses_changes(finished, release, model, tmp_path,
                                           dask_scheduler_address):
    out, _ = finished
    before = open_predictions(out)["sed"].values.copy()
    # a finished store is left alone
    res, summary = run_cli(*common(release, model, out), "--scheduler", dask_scheduler_address)
    assert res.exit_code == 0 and summary["n_chunks_run"] == 0
    # a changed input list is refused
    res, _ = run_cli(*common(release, model, out), "--limit", 10, "--scheduler",
                     dask_scheduler_address)
    assert res.exit_code == 1 and "different input list" in res.output
    # an interrupted run (two chunks without markers, store not completed) resumes those only
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(out, copy)
    markers = sorted(marker_dir(copy).glob("*.json"))
    for m in markers[:2]:
        m.unlink()
    import zarr

    g = zarr.open_group(str(copy), mode="r+")
    g.attrs["completed"] = None
    g["sed"][:16] = np.nan
    res, summary = run_cli(*common(release, model, copy), "--scheduler",
                           dask_scheduler_address)
    assert res.exit_code == 0, res.output
    assert summary["n_chunks_run"] == 2
    np.testing.assert_array_equal(open_predictions(copy)["sed"].values, before)
    assert len(done_chunks(copy)) == len(markers)


@pytest.mark.slow
def test_killed_worker_gives_identical_store(release, model, finished, tmp_path):
    """Separate `dask scheduler` / `dask worker` processes; one worker is killed mid-run."""
    from netutil import free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for_port("127.0.0.1", port, proc=procs[0])
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(bin_dir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                 "--nworkers", "1", "--no-nanny", "--host", "127.0.0.1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "killed.zarr"
        cmd = [str(bin_dir / "csstflux"), "predict-catalog",
               *map(str, common(release, model, out)), "--scheduler",
               f"tcp://127.0.0.1:{port}", "--json"]
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while time.time() < deadline and len(list(marker_dir(out).glob("*.json"))
                                             if marker_dir(out).exists() else []) < 1:
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)   # one worker dies mid-run
        n_done_at_kill = len(list(marker_dir(out).glob("*.json")))
        stdout, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-3000:]
        n_chunks = -(-release.n_stars // 16)
        assert n_done_at_kill < n_chunks, "the worker was killed after the run had finished"
        assert json.loads(stdout)["n_chunks_run"] == n_chunks
        ref = open_predictions(finished[0])
        got = open_predictions(out)
        np.testing.assert_array_equal(got["obsid"].values, ref["obsid"].values)
        np.testing.assert_array_equal(got["flags"].values, ref["flags"].values)
        np.testing.assert_allclose(got["sed"].values, ref["sed"].values, rtol=1e-6,
                                   equal_nan=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _plugin_readers(dask_worker):
    plugin = dask_worker.plugins["csstflux-predictor"]
    return plugin.readers if plugin.pool is not None else 0


@pytest.mark.slow
def test_reader_processes_give_the_same_store(finished, release, model, tmp_path):
    """Reading in reader processes (the GPU-worker layout: one worker, two chunk tasks at a
    time sharing its reader processes and model) gives the one-thread store."""
    import dask.config

    from csstflux.pipeline.cluster import READER_LAYOUT_THREADS, ClusterSettings, start_cluster

    ref, _ = finished
    out = tmp_path / "pred.zarr"
    with dask.config.set({"distributed.worker.daemon": True}):   # restored afterwards
        handle = start_cluster(ClusterSettings(workers=1, dashboard_address="127.0.0.1:0"),
                               readers=True)
        try:
            res, summary = run_cli(*common(release, model, out), "--scheduler",
                                   handle.client.scheduler.address, "--read-processes", 2)
            # the worker really read through 2 processes, with two task threads
            readers = handle.client.run(_plugin_readers)
            threads = {w["nthreads"] for w in
                       handle.client.scheduler_info()["workers"].values()}
        finally:
            handle.close()
    assert res.exit_code == 0, res.output
    assert summary["n_predicted"] > 0
    assert list(readers.values()) == [2]
    assert threads == {READER_LAYOUT_THREADS} == {2}
    a, b = open_predictions(out), open_predictions(ref)
    np.testing.assert_array_equal(a["obsid"].values, b["obsid"].values)
    np.testing.assert_array_equal(a["flags"].values, b["flags"].values)
    # sub-batches of reader_step(8, 2) = 16 spectra, each padded to 16: other shapes than 8
    np.testing.assert_allclose(a["sed"].values, b["sed"].values, rtol=1e-5, atol=2e-5,
                               equal_nan=True)


def test_reader_step():
    from csstflux.pipeline.tasks import reader_step

    assert [reader_step(2048, 15), reader_step(8, 2), reader_step(256, 1),
            reader_step(256, 300)] == [128, 16, 256, 16]


def test_prepared_in_blocks_equals_one_file_at_a_time(release, monkeypatch):
    """Blocks of PREPARE_BLOCK spectra (here 7, over 90 files with broken ones among them)
    give each file exactly what it gets alone, failures and flags included."""
    from csstflux.pipeline import tasks

    files = sorted(str(p) for p in Path(release.root).rglob("spec-*.fits*"))
    z = np.linspace(-2e-4, 3e-4, len(files))
    monkeypatch.setattr(tasks, "PREPARE_BLOCK", 7)
    whole = tasks._prepare_batch(files, z, 100)
    assert whole.failures and whole.rows.size > 7 * 3
    rows = []
    for i, f in enumerate(files):
        one = tasks._prepare_batch([f], z[i:i + 1], 100 + i)
        assert one.flags[0] == whole.flags[i]
        if one.rows.size:
            k = int(np.flatnonzero(whole.rows == 100 + i)[0])
            np.testing.assert_array_equal(whole.flux[k], one.flux[0])
            np.testing.assert_array_equal(whole.err[k], one.err[0])
            rows.append(100 + i)
    np.testing.assert_array_equal(whole.rows, rows)


def test_header_magnitudes_reach_the_store(model, tmp_path, dask_scheduler_address):
    """Files written with input-catalogue photometry in their headers (SDSS MAGTYPE/MAG1..7
    in the image layout, PS1 MAG_PS_* in the coadd layout), predicted by the whole command
    from a scanned root: ``header_mag`` holds the written values; a file refused for its
    pixels (broken arm) still has its header's; an unreadable (truncated) file stays NaN."""
    root = tmp_path / "root"
    root.mkdir()
    sdss = {"MAGTYPE": "ugriz", "MAG1": 18.78, "MAG2": 17.12, "MAG3": 16.42, "MAG4": 16.15,
            "MAG5": 15.97, "MAG6": 99.0, "MAG7": 99.0}
    ps1 = {"MAG_PS_G": 17.79, "MAG_PS_R": 17.72, "MAG_PS_I": 17.77, "MAG_PS_Z": 17.81,
           "MAG_PS_Y": 17.8}
    gri = {"MAGTYPE": "gri", "MAG1": 14.5, "MAG2": 14.0, "MAG3": 13.75, "MAG4": 99.0}
    nan5 = [np.nan] * 5
    files = {   # name: (write arguments, expected header_mag)
        "spec-1-a_sp01-001.fits.gz": (dict(header=sdss), [*(sdss[f"MAG{i}"] for i in
                                                            range(1, 6)), *nan5]),
        "spec-1-a_sp01-002.fits.gz": (dict(header=ps1, layout="coadd"),
                                      [*nan5, *ps1.values()]),
        "spec-1-a_sp01-003.fits": (dict(header={"MAGTYPE": "Kp", "MAG1": 12.8}), [np.nan] * 10),
        "spec-1-a_sp01-004.fits.gz": (dict(header=gri, red_scale=0.2),
                                      [np.nan, 14.5, 14.0, 13.75, *[np.nan] * 6]),
        "spec-1-a_sp01-005.fits": (dict(header=sdss), [np.nan] * 10),
    }
    for i, (name, (kwargs, _)) in enumerate(files.items()):
        header = {"OBSID": 500 + i, "RA": 10.0 + i, "DEC": 20.0, **kwargs.pop("header")}
        write(root / name, header=header, seed=i, **kwargs)
    truncated = root / "spec-1-a_sp01-005.fits"
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    # a model whose card carries a reference term: the store gets it as sed_err_ref
    rho = np.linspace(0.0, 0.05, 574)
    apply_reference_sigma(model, rho, tmp_path / "m")
    out = tmp_path / "pred.zarr"
    res, summary = run_cli("--root", root, "--model", tmp_path / "m" / "tiny.keras", "--out",
                           out, "--chunk-stars", 2,
                           "--batch-size", 8, "--max-failed-fraction", 0.5, "--scheduler",
                           dask_scheduler_address)
    assert res.exit_code == 0, res.output
    assert summary["n_predicted"] == 3 and summary["n_failed"] == 2
    ds = open_predictions(out, dask=False)
    np.testing.assert_allclose(ds.sed_err_ref.values, rho, rtol=1e-6)
    assert ds.header_band.values.tolist() == list(HEADER_BANDS)
    got = {Path(f).name: row for f, row in zip(ds.source_file.values, ds.header_mag.values,
                                               strict=True)}
    assert sorted(got) == sorted(files)
    for name, (_, expected) in files.items():
        np.testing.assert_array_equal(got[name], np.float32(expected), err_msg=name)
    flags = dict(zip((Path(f).name for f in ds.source_file.values), ds.flags.values,
                     strict=True))
    assert flags["spec-1-a_sp01-004.fits.gz"] & Flag.BAD_INPUT
    assert flags["spec-1-a_sp01-005.fits"] & Flag.UNREADABLE
