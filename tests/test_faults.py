"""Faults tried on purpose (issue 7, "fault tolerance, tested"), against the real command.

- the whole ``predict-catalog`` job SIGKILLed (its process group: client, nanny, workers) once
  some chunks are done, then rerun: it resumes and the store equals an uninterrupted run, bit
  for bit;
- the output disk full or refusing writes part-way (ENOSPC / EACCES raised by Zarr's chunk
  writes in-process, and a real EFBIG from the kernel under ``RLIMIT_FSIZE`` in a subprocess):
  exit 1 with one ``error:`` line naming the store and the system's reason, done markers only
  for the chunks written, and a rerun once the fault is gone equal to an uninterrupted run;
- an output folder that is missing, not a folder or read-only: refused before any worker starts;
- a tampered model (one flipped bit) or a corrupt one whose card was rewritten to match:
  refused before any worker starts, no store written;
- a misspelt configuration key (top level, inside ``[train]``, inside a ``[[sets]]`` entry) or
  table: exit 1 with a message naming it and the nearest valid one.

Elsewhere: a worker SIGKILLed mid-run against separate ``dask scheduler`` / ``dask worker``
processes (``test_pipeline_predict.py::test_killed_worker_gives_identical_store``), resuming
chunks without markers (``::test_rerun_resumes_and_refuses_changes``), tampered and truncated
archives at the library level (``test_model_card.py``), unknown keys in ``load_config``
(``test_config.py``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
import zarr.storage._local
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.demo.release import build_demo_release
from csstflux.errors import StoreError
from csstflux.io.stores.predictions import check_output_location, read_attrs
from csstflux.model.card import default_model_path
from csstflux.pipeline.tasks import done_chunks, marker_dir, write_marker
from csstflux.pipeline.worker import THREAD_VARS

N_STARS, CHUNK, BATCH = 200, 16, 8
N_CHUNKS = -(-N_STARS // CHUNK)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_demo_release(tmp_path_factory.mktemp("release"), n_stars=N_STARS, seed=7)


def options(release, out) -> list[str]:
    """The same options for every run (the plan's hash covers them), shipped model."""
    return ["predict-catalog", "--catalog", str(release.catalog), "--root", str(release.root),
            "--out", str(out), "--chunk-stars", str(CHUNK), "--batch-size", str(BATCH),
            "--max-failed-fraction", "0.5", "--json"]


def command(release, out) -> list[str]:
    return [sys.executable, "-m", "csstflux", *options(release, out), "--workers", "1"]


def run(cmd, tmp_path, name, **kw) -> tuple[int, str, str]:
    """Run ``cmd`` with stdout and stderr in files (a pipe could fill and block the job)."""
    out, err = tmp_path / f"{name}.stdout", tmp_path / f"{name}.stderr"
    with out.open("w") as fo, err.open("w") as fe:
        rc = subprocess.run(cmd, stdout=fo, stderr=fe, timeout=600, **kw).returncode
    return rc, out.read_text(), err.read_text()


def n_markers(store) -> int:
    d = marker_dir(store)
    return len(list(d.glob("*.json"))) if d.is_dir() else 0


def arrays(store) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {k: np.asarray(g[k][:]) for k in ("obsid", "source_file", "flags", "sed", "sed_err")}


def assert_same_store(got, ref, rows: slice = slice(None), exact: bool = True) -> None:
    """Same stars in the same order, same flags, SEDs and errors equal bit for bit (in
    ``rows``); ``exact=False``: to float32 rounding (predictions made in this test process,
    whose math-library thread pools earlier tests may have set up differently, against the
    reference made in a fresh process)."""
    a, b = arrays(got), arrays(ref)
    assert len(np.unique(a["obsid"])) == a["obsid"].size == N_STARS     # none twice or lost
    for k in ("obsid", "source_file", "flags"):
        np.testing.assert_array_equal(a[k][rows], b[k][rows], err_msg=k)
    for k in ("sed", "sed_err"):
        if exact:
            np.testing.assert_array_equal(a[k][rows].view(np.uint32),
                                          b[k][rows].view(np.uint32), err_msg=k)
        else:
            np.testing.assert_allclose(a[k][rows], b[k][rows], rtol=2e-5, atol=1e-6,
                                       err_msg=k)   # SEDs are ~1 in the scaling window


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def reference(release, tmp_path_factory):
    """An uninterrupted run of the command."""
    d = tmp_path_factory.mktemp("reference")
    out = d / "pred.zarr"
    rc, stdout, stderr = run(command(release, out), d, "reference")
    assert rc == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["n_chunks_run"] == N_CHUNKS and summary["n_stars"] == N_STARS
    assert read_attrs(out)["completed"]
    return out


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if the command starts a cluster (checks must come first)."""
    def refuse(*args, **kw):
        raise AssertionError("a cluster was started before the options were checked")

    monkeypatch.setattr("csstflux.pipeline.cluster.start_cluster", refuse)


@pytest.fixture(scope="module")
def threads_scheduler():
    """A cluster inside this process (one worker thread), so that a fault patched into Zarr
    here reaches the tasks."""
    from distributed import LocalCluster

    with pytest.MonkeyPatch.context() as mp:
        for var in THREAD_VARS:     # the predictor plugin sets them in this process
            mp.setenv(var, os.environ.get(var, "1"))
        # an explicit port 0: a busy 8787 would leak tornado's failed socket (ResourceWarning)
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                               dashboard_address="127.0.0.1:0")
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    summary = json.loads(res.stdout) if res.exit_code == 0 and "--json" in args else None
    return res, summary


# --- the whole job killed and resumed ------------------------------------------------------


def _wait_group_gone(pgid: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {pgid} still alive: {alive}")


@pytest.mark.slow
def test_killed_job_resumes_to_identical_store(release, reference, tmp_path):
    out = tmp_path / "pred.zarr"
    cmd = command(release, out)
    with (tmp_path / "killed.stderr").open("w") as fe:
        job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fe,
                               start_new_session=True)
        try:
            deadline = time.time() + 300
            while n_markers(out) < 2 and job.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            assert job.poll() is None, "the job ended before it could be killed"
        finally:
            with contextlib.suppress(ProcessLookupError):   # (the group is gone if it ended)
                os.killpg(job.pid, signal.SIGKILL)    # client, nanny and worker at once
            job.wait()
    _wait_group_gone(job.pid)
    done_at_kill = n_markers(out)
    assert 2 <= done_at_kill < N_CHUNKS, done_at_kill
    assert read_attrs(out)["completed"] is None

    rc, stdout, stderr = run(cmd, tmp_path, "resumed")
    assert rc == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["n_chunks_skipped"] == done_at_kill
    assert summary["n_chunks_run"] == N_CHUNKS - done_at_kill
    assert sorted(done_chunks(out)) == list(range(N_CHUNKS))
    assert read_attrs(out)["completed"]
    assert_same_store(out, reference)


# --- the output refuses writes part-way ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
def test_write_failure_stops_cleanly_and_resumes(code, release, reference, threads_scheduler,
                                                 tmp_path, monkeypatch):
    """Chunks 3 and later cannot be written (Zarr's chunk writes raise, as the OS would)."""
    out = tmp_path / "pred.zarr"
    real_put = zarr.storage._local._put
    first_bad = 3

    def put(path, value, exclusive=False):
        key = Path(path).relative_to(out).parts if out in Path(path).parents else ()
        if len(key) == 4 and key[:2] == ("sed", "c") and int(key[2]) >= first_bad:
            if code == errno.EACCES:   # refused when the file is opened: the OS names it
                raise PermissionError(code, os.strerror(code), str(path))
            raise OSError(code, os.strerror(code))   # a write() that finds the disk full
        return real_put(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr.storage._local, "_put", put)
    args = [*options(release, out), "--scheduler", threads_scheduler]
    res, _ = invoke(*args)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    (line,) = error_lines(res.stderr)
    assert str(out) in line and f"[Errno {code}] {os.strerror(code)}" in line, line
    assert "rerun the same command to resume" in line
    done = done_chunks(out)
    assert done and max(done) < first_bad, sorted(done)   # no marker for a failed chunk
    for i in done:                                       # and the marked ones are intact
        assert_same_store(out, reference, slice(i * CHUNK, (i + 1) * CHUNK), exact=False)
    assert read_attrs(out)["completed"] is None

    monkeypatch.setattr(zarr.storage._local, "_put", real_put)   # the fault is gone
    res, summary = invoke(*args)
    assert res.exit_code == 0, res.output
    assert summary["n_chunks_skipped"] == len(done)
    assert summary["n_chunks_run"] == N_CHUNKS - len(done)
    assert_same_store(out, reference, exact=False)


@pytest.mark.slow
def test_file_size_limit_real_efbig(release, tmp_path):
    """Every process of the job under RLIMIT_FSIZE: the kernel refuses the chunk files (the
    rerun once the fault is gone is the test above's)."""
    out = tmp_path / "pred.zarr"
    limit = 8192    # the store's metadata and columns fit; no SED chunk does

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # write() fails with EFBIG instead

    rc, stdout, stderr = run(command(release, out), tmp_path, "efbig", preexec_fn=small_files)
    assert rc == 1
    assert "Traceback (most recent call last)" not in stderr, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert stderr.rstrip().endswith(line)     # the last word is ours
    assert str(out) in line and "[Errno 27] File too large" in line, line
    assert n_markers(out) == 0 and read_attrs(out)["completed"] is None
    assert not list(out.parent.glob("*.performance.html"))


# --- the output location, checked before any work ------------------------------------------


def test_output_folder_problems_are_found_before_any_work(release, tmp_path, no_cluster):
    (tmp_path / "a-file").write_text("not a folder")
    cases = [(tmp_path / "missing" / "pred.zarr", tmp_path / "missing",
              "the folder of the output store does not exist"),
             (tmp_path / "a-file" / "pred.zarr", tmp_path / "a-file",
              "the output store would lie under something that is not a folder"),
             (tmp_path / "a-file", tmp_path / "a-file", "output exists and is not a folder")]
    for out, named, message in cases:
        res, _ = invoke(*options(release, out))
        assert res.exit_code == 1, res.output
        (line,) = error_lines(res.stderr)
        assert line.startswith(f"error: {named}: {message}"), line
        assert "Traceback" not in res.output
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through a read-only folder")
def test_read_only_output_folder_is_refused(release, tmp_path, no_cluster):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        res, _ = invoke(*options(release, folder / "pred.zarr"))
    finally:
        folder.chmod(0o755)
    assert res.exit_code == 1
    (line,) = error_lines(res.stderr)
    assert str(folder) in line and "[Errno 13] Permission denied" in line, line


def test_output_check_uses_the_system_reason(tmp_path, monkeypatch):
    """A folder that refuses new files (read-only file system, quota) is refused with the
    system's reason, whatever the permission bits say (as root too)."""
    def refuse(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    with pytest.raises(StoreError, match=r"\[Errno 30\] Read-only file system") as err:
        check_output_location(tmp_path / "pred.zarr")
    assert err.value.path == str(tmp_path)


def test_marker_write_failure_leaves_no_marker(tmp_path, monkeypatch):
    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StoreError, match=r"done marker of chunk 4.*\[Errno 28\]"):
        write_marker(tmp_path, 4, {"chunk": 4})
    assert not list(marker_dir(tmp_path).iterdir())


def test_unreadable_marker_counts_as_not_done(tmp_path):
    write_marker(tmp_path, 0, {"chunk": 0})
    write_marker(tmp_path, 1, {"chunk": 1})
    (marker_dir(tmp_path) / "0000001.json").write_text('{"chunk": ')   # a crash mid-write
    assert list(done_chunks(tmp_path)) == [0]


# --- tampered or corrupt model ------------------------------------------------------------


@pytest.fixture
def model_copy(tmp_path):
    shipped = default_model_path()
    d = tmp_path / "model"
    d.mkdir()
    for p in (shipped, shipped.with_suffix(".json")):
        shutil.copy(p, d / p.name)
    return d / shipped.name


def _rewrite_card(archive: Path) -> None:
    """Make the card vouch for the damaged archive (the checksum no longer catches it)."""
    card = archive.with_suffix(".json")
    doc = json.loads(card.read_text())
    doc["archive_sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    card.write_text(json.dumps(doc))


@pytest.mark.slow
def test_tampered_model_is_refused_by_the_command(release, model_copy, tmp_path):
    data = bytearray(model_copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_copy.write_bytes(bytes(data))
    out = tmp_path / "pred.zarr"
    rc, _, stderr = run([*command(release, out), "--model", str(model_copy)], tmp_path, "t")
    assert rc == 1
    (line,) = error_lines(stderr)
    assert "checksum" in line and str(model_copy) in line, line
    assert "Traceback" not in stderr and "Worker plugin" not in stderr
    assert not out.exists() and not list(tmp_path.glob("pred.zarr*"))


@pytest.mark.parametrize(("damage", "message"), [
    ("truncate", "not a readable .keras (zip) file, truncated or corrupt"),
    ("flip", "fails its CRC check")], ids=["truncated", "bad-crc"])
def test_corrupt_model_with_matching_card_is_refused(damage, message, release, model_copy,
                                                      tmp_path, no_cluster):
    data = model_copy.read_bytes()
    if damage == "truncate":
        model_copy.write_bytes(data[:len(data) // 2])
    else:
        b = bytearray(data)
        b[len(b) // 2] ^= 0xFF
        model_copy.write_bytes(bytes(b))
    _rewrite_card(model_copy)
    out = tmp_path / "pred.zarr"
    res, _ = invoke(*options(release, out), "--model", model_copy)
    assert res.exit_code == 1
    (line,) = error_lines(res.stderr)
    assert message in line and str(model_copy) in line, line
    assert "Traceback" not in res.output
    assert not out.exists()


# --- unknown configuration keys -----------------------------------------------------------


@pytest.mark.parametrize(("command_", "toml", "wanted"), [
    ("train", '[train]\ntrainset = "t.zarr"\nrun_dir = "r"\nbatch_sise = 8\n',
     "unknown configuration key 'train.batch_sise'; did you mean 'batch_size'?"),
    ("finetune", '[finetune]\ntrainset = "t.zarr"\nrun_dir = "r"\nlearning_rat = 1e-4\n',
     "unknown configuration key 'finetune.learning_rat'; did you mean 'learning_rate'?"),
    ("train", '[trian]\ntrainset = "t.zarr"\nrun_dir = "r"\n',
     "configuration has no [train] table; is [trian] a misspelling of it?"),
    ("build-trainset", '[trainset]\not = "o.zarr"\n[[trainset.sets]]\nkind = "grid"\npath = "."\n',
     "unknown configuration key 'trainset.ot'; did you mean 'out'?"),
    ("build-trainset",
     '[trainset]\nout = "o.zarr"\n[[trainset.sets]]\nkind = "grid"\npath = "."\n'
     '[[trainset.sets]]\nkind = "miles"\npth = "."\n',
     "unknown configuration key 'trainset.sets[1].pth'; did you mean 'path'?"),
], ids=["train-key", "finetune-key", "train-table", "trainset-key", "trainset-nested-key"])
def test_unknown_configuration_key_names_nearest(command_, toml, wanted, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)    # the configurations' relative paths
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    res = CliRunner().invoke(cli, [command_, "--config", str(cfg)])
    assert res.exit_code == 2, res.output   # a configuration error
    (line,) = error_lines(res.stderr)
    assert line.startswith(f"error: {cfg}: ") and wanted in line, line
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]    # nothing written
