"""One ClusterSettings for every Dask command: checked before anything starts, the same from a
job file's table and from the command line, TLS by default on a batch system."""

import os
import socket
import warnings
from typing import Any

import click
import dask
import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster
from distributed.security import Security

from csstflux.cli.options import cluster_options, cluster_settings
from csstflux.config import load_job
from csstflux.errors import ConfigError
from csstflux.pipeline.cluster import (
    WORKER_ENVIRON,
    ClusterSettings,
    cluster_security,
    free_dashboard_address,
    start_cluster,
    worker_environ_config,
    worker_profile_config,
)
from csstflux.pipeline.nightly import NightlyConfig
from csstflux.pipeline.predict import PredictJob


@pytest.mark.parametrize("kw, message", [
    ({"scheduler": "tcp://127.0.0.1:1", "cluster": "gpu"}, "either a running scheduler"),
    ({"cluster": "lsf"}, "local, slurm, pbs, gpu"),
    ({"jobs": 4}, "batch jobs of a slurm or pbs cluster"),
    ({"cluster": "slurm", "workers": 4}, "jobqueue configuration"),
    ({"scheduler": "tcp://h:1", "memory": "2GiB"}, "running scheduler's workers"),
    ({"memory": "lots"}, "a size such as 2.5GiB"),
    ({"dashboard_address": "8787"}, "host:port"),
    ({"tls_cert": "c.pem"}, "go together"),
    ({"tls_ca_file": "ca.pem"}, "tls:// scheduler or a slurm or pbs cluster"),
    ({"insecure": True}, "slurm or pbs cluster without TLS"),
    ({"scheduler": "tcp://h:1", "prometheus": False}, "running scheduler"),
])
def test_settings_refused_before_anything_starts(kw, message):
    with pytest.raises(ValueError, match=message):
        ClusterSettings(**kw)
    with pytest.raises(ConfigError, match=message):   # the same, from a file or the CLI
        cluster_settings(kw)


def test_gpu_without_dask_cuda_or_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="dask-cuda|GPU"):
        start_cluster(ClusterSettings(cluster="gpu"))


# ---------------------------------------------------------------- one table, one set of options

@click.command()
@cluster_options
def _probe(cluster_flags: dict[str, Any]) -> None:
    click.echo(repr(cluster_flags))
    _probe.seen = cluster_flags  # type: ignore[attr-defined]


def _flags(args: list[str]) -> dict[str, Any]:
    res = CliRunner().invoke(_probe, args)
    assert res.exit_code == 0, res.output
    return _probe.seen  # type: ignore[attr-defined,no-any-return]


def test_toml_table_equals_command_line_flags(tmp_path, monkeypatch):
    """The same settings from a job file's cluster table and from the options; relative paths
    of the file from its folder, of the command line from the working directory."""
    for name in ("ca.pem", "me.pem", "me.key", "jq.yaml"):
        (tmp_path / name).write_text("x")
    job = tmp_path / "job.toml"
    job.write_text('[nightly]\nexposures_root = "e"\npredictions = "p"\noutput_root = "o"\n'
                   '[nightly.cluster]\ncluster = "slurm"\njobs = 8\n'
                   'dashboard_address = "0.0.0.0:9999"\ntls_ca_file = "ca.pem"\n'
                   'tls_cert = "me.pem"\ntls_key = "me.key"\ndask_config = ["jq.yaml"]\n'
                   "prometheus = false\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from_toml = load_job(job, NightlyConfig, "nightly").cluster
    monkeypatch.chdir(tmp_path)
    from_flags = cluster_settings(_flags([
        "--cluster", "slurm", "--jobs", "8", "--dashboard-address", "0.0.0.0:9999",
        "--tls-ca-file", "ca.pem", "--tls-cert", "me.pem", "--tls-key", "me.key",
        "--dask-config", "jq.yaml", "--no-prometheus"]))
    resolved = {k: getattr(from_flags, k) for k in ("tls_ca_file", "tls_cert", "tls_key")}
    assert {k: v.resolve() for k, v in resolved.items()} == {
        k: getattr(from_toml, k) for k in resolved}
    assert [p.resolve() for p in from_flags.dask_config] == list(from_toml.dask_config)
    assert from_toml == ClusterSettings(
        cluster="slurm", jobs=8, dashboard_address="0.0.0.0:9999", prometheus=False,
        tls_ca_file=tmp_path / "ca.pem", tls_cert=tmp_path / "me.pem",
        tls_key=tmp_path / "me.key", dask_config=(tmp_path / "jq.yaml",))
    # a local cluster, every field
    job.write_text('[predict]\n[predict.cluster]\nworkers = 3\nthreads = 2\nmemory = "2GiB"\n'
                   'dashboard_address = "127.0.0.1:0"\nprometheus = true\n')
    assert load_job(job, PredictJob, "predict").cluster == cluster_settings(_flags(
        ["--workers", "3", "--threads", "2", "--memory", "2GiB", "--dashboard-address",
         "127.0.0.1:0", "--prometheus"])) == ClusterSettings(
        workers=3, threads=2, memory="2GiB", dashboard_address="127.0.0.1:0", prometheus=True)
    assert cluster_settings(_flags([])) == ClusterSettings()


def test_command_line_wins_over_the_table_and_old_spellings_work():
    base = ClusterSettings(cluster="slurm", jobs=8)
    assert cluster_settings(_flags(["--jobs", "2"]), base) == ClusterSettings(cluster="slurm",
                                                                              jobs=2)
    assert cluster_settings(_flags([]), base) == base     # defaults do not override the file
    assert cluster_settings(_flags(["--gpu"])) == ClusterSettings(cluster="gpu")
    assert cluster_settings(_flags(["--dashboard-host", "0.0.0.0"])) == ClusterSettings(
        dashboard_address="0.0.0.0:8787")
    with pytest.raises(ConfigError, match="--gpu is --cluster gpu"):
        cluster_settings(_flags(["--gpu", "--cluster", "pbs"]))
    with pytest.raises(ConfigError, match="give one"):
        cluster_settings(_flags(["--dashboard-host", "h", "--dashboard-address", "h:1"]))
    res = CliRunner().invoke(_probe, ["--help"])
    assert "--gpu" not in res.output and "--dashboard-host" not in res.output  # hidden


def test_every_dask_command_takes_the_same_cluster_options():
    from csstflux.cli.main import cli

    def options(cmd: click.Command) -> set[str]:
        return {o for p in cmd.params for o in p.opts + p.secondary_opts}

    want = options(_probe)
    assert {"--scheduler", "--cluster", "--jobs", "--workers", "--threads", "--memory",
            "--dashboard-address", "--tls-ca-file", "--tls-cert", "--tls-key", "--insecure",
            "--dask-config", "--prometheus", "--gpu", "--dashboard-host"} <= want
    for name in ("predict-catalog", "anchor", "demo-field", "build-flat", "nightly"):
        assert want <= options(cli.commands[name]), name


# --------------------------------------------------------------------------- TLS

def test_batch_systems_use_tls_by_default(tmp_path):
    """slurm and pbs: a temporary certificate unless one is configured; plain tcp only with
    insecure, which warns. A local cluster stays on loopback, plain."""
    for kind in ("slurm", "pbs"):
        sec = cluster_security(ClusterSettings(cluster=kind))
        assert isinstance(sec, Security) and sec.require_encryption
        assert "BEGIN CERTIFICATE" in sec.tls_ca_file and "PRIVATE KEY" in sec.tls_worker_key
        assert sec.get_connection_args("client")["require_encryption"]
    with pytest.warns(UserWarning, match="anyone who can reach its port can run code"):
        assert cluster_security(ClusterSettings(cluster="pbs", insecure=True)) is None
    assert cluster_security(ClusterSettings()) is None
    assert cluster_security(ClusterSettings(scheduler="tls://h:1")) is None   # Dask's config
    files = {k: tmp_path / f"{k}.pem" for k in ("ca", "cert", "key")}
    given = ClusterSettings(cluster="slurm", tls_ca_file=files["ca"], tls_cert=files["cert"],
                            tls_key=files["key"])
    sec = cluster_security(given)
    assert sec.tls_ca_file == str(files["ca"]) and sec.require_encryption
    assert sec.tls_scheduler_cert == sec.tls_worker_cert == sec.tls_client_cert == str(
        files["cert"])
    with dask.config.set({"distributed.comm.tls.ca-file": "/etc/ca.pem",
                          "distributed.comm.tls.worker.cert": "/etc/w.pem"}):
        sec = cluster_security(ClusterSettings(cluster="slurm"))
        assert sec.tls_ca_file == "/etc/ca.pem" and sec.tls_worker_cert == "/etc/w.pem"


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _refused(port: int) -> None:
    """A plain tcp:// client to ``port`` cannot connect (a short timeout)."""
    with pytest.raises(OSError):
        Client(f"tcp://127.0.0.1:{port}", timeout=3,
               security=Security(require_encryption=False))


@pytest.mark.timeout(120)
def test_plain_tcp_client_refused_by_the_tls_scheduler():
    """A scheduler started with the batch-system settings' Security accepts a client with the
    certificate and refuses a plain tcp one."""
    sec = cluster_security(ClusterSettings(cluster="slurm"))
    with LocalCluster(n_workers=0, processes=False, security=sec, protocol="tls://",
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with Client(cluster, timeout=10) as client:
            assert client.scheduler_info()["address"].startswith("tls://")
        _refused(_port(cluster.scheduler_address))


@pytest.mark.timeout(120)
def test_slurm_cluster_is_tls_and_refuses_plain_tcp(tmp_path, monkeypatch):
    """``--cluster slurm`` as csstflux starts it (no job submitted): a tls:// scheduler, job
    scripts with the workers' certificate files (in the shared folder, owner-only), and a
    plain tcp client refused; ``--insecure`` gives tcp and warns."""
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)
    cfg = {"jobqueue.slurm.cores": 1, "jobqueue.slurm.memory": "1GiB",
           "jobqueue.slurm.interface": "lo", "jobqueue.slurm.log-directory": None,
           "jobqueue.slurm.shared-temp-directory": str(tmp_path)}
    with dask.config.set(cfg):
        handle = start_cluster(ClusterSettings(cluster="slurm", jobs=0,
                                               dashboard_address="127.0.0.1:0"))
        try:
            address = handle.cluster.scheduler_address
            assert handle.kind == "slurm" and address.startswith("tls://")
            script = handle.cluster.job_script()
            assert "--protocol tls://" in script and "--tls-key" in script
            dumped = sorted(tmp_path.glob(".dask-jobqueue.worker.*"))
            assert dumped and all(p.stat().st_mode & 0o077 == 0 for p in dumped)
            assert handle.client.scheduler_info()["workers"] == {}
            _refused(_port(address))
        finally:
            handle.close()
        with pytest.warns(UserWarning, match="plain tcp"):
            handle = start_cluster(ClusterSettings(cluster="slurm", jobs=0, insecure=True,
                                                   dashboard_address="127.0.0.1:0"))
        try:
            assert handle.cluster.scheduler_address.startswith("tcp://")
            assert "--tls-key" not in handle.cluster.job_script()
        finally:
            handle.close()


# --------------------------------------------------------------------------- local cluster

def clear_mmap_env(monkeypatch):
    """No MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ here: Dask's nannies copy their
    pre-spawn variables into the launching process's environment (an earlier cluster of this
    process leaves them set), and a value there wins over the configuration; the originals
    are restored after the test."""
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.setenv(key, "0")
        monkeypatch.delenv(key)


def test_local_cluster_dashboard_on_loopback(monkeypatch):
    clear_mmap_env(monkeypatch)
    handle = start_cluster(ClusterSettings(workers=1, threads=2, memory="1GiB",
                                           dashboard_address="127.0.0.1:0"))
    try:
        assert handle.kind == "local"
        assert handle.dashboard is not None and "127.0.0.1" in handle.dashboard
        assert handle.client.run(lambda: 1)  # the worker answers
        (w,) = handle.client.scheduler_info()["workers"].values()
        assert w["nthreads"] == 2 and w["memory_limit"] == 2**30
        assert handle.client.scheduler.address.startswith("tcp://127.0.0.1:")
        # workers get the mmap threshold, and a trim threshold instead of Dask's own
        (env,) = handle.client.run(lambda: {k: os.environ.get(k) for k in
                                            ("MALLOC_MMAP_THRESHOLD_",
                                             "MALLOC_TRIM_THRESHOLD_")}).values()
        assert env == {k: str(v) for k, v in WORKER_ENVIRON.items()}
        assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20)
        # the worker's profiler samples every 100 ms and cycles every 10 s (Dask: 10 ms, 1 s)
        (ms,) = handle.client.run(lambda dask_worker: {
            k: dask_worker.periodic_callbacks[k].callback_time
            for k in ("profile", "profile-cycle")}).values()
        assert ms == {"profile": 100.0, "profile-cycle": 10000.0}
    finally:
        handle.close()
    # the settings were for that cluster only
    assert dask.config.get("distributed.worker.profile.interval") == "10ms"
    spawn = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_MMAP_THRESHOLD_" not in spawn
    assert str(spawn["MALLOC_TRIM_THRESHOLD_"]) == "65536"



def test_dashboard_port_in_use_is_replaced():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert free_dashboard_address(f"127.0.0.1:{taken}") == "127.0.0.1:0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert free_dashboard_address("127.0.0.1:0") == "127.0.0.1:0"


def test_worker_profile_leaves_a_configured_value_alone():
    assert worker_profile_config() == {"distributed.worker.profile.interval": "100ms",
                                       "distributed.worker.profile.cycle": "10s"}
    with dask.config.set({"distributed.worker.profile.interval": "20ms"}):
        assert worker_profile_config() == {"distributed.worker.profile.cycle": "10s"}
    with dask.config.set({"distributed.worker.profile.cycle": "1000 ms"}):   # Dask's own
        assert worker_profile_config() == {"distributed.worker.profile.interval": "100ms",
                                           "distributed.worker.profile.cycle": "10s"}


def test_worker_environ_leaves_a_configured_value_alone(monkeypatch):
    clear_mmap_env(monkeypatch)
    assert worker_environ_config() == {
        f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 65536}):
        assert worker_environ_config() == {   # Dask's own trim threshold is replaced
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 64 * 2**20}
        handle = start_cluster(ClusterSettings(workers=1, dashboard_address="127.0.0.1:0"))
        try:
            (value,) = handle.client.run(os.environ.get, "MALLOC_MMAP_THRESHOLD_").values()
        finally:
            handle.close()
    assert value == "65536"
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1234}):
        assert worker_environ_config() == {
            "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


def _slow_square(x: int) -> int:
    import time
    time.sleep(0.01)
    return x * x


def test_submit_windowed_keeps_a_window_and_cancels_the_rest():
    """One worker thread: at most MIN_WINDOW tasks submitted but not yet handed back, every
    item exactly once; closing the generator early cancels what is still in flight."""
    import contextlib

    from csstflux.pipeline.cluster import MIN_WINDOW, submit_windowed

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        submitted = []

        def submit(i):
            fut = client.submit(_slow_square, i, key=f"sq-{i}", pure=False)
            submitted.append(fut)
            return fut

        got = {}
        for item, fut in submit_windowed(client, range(40), submit):
            assert len(submitted) - len(got) <= MIN_WINDOW
            got[item] = fut.result()
            fut.release()
        assert got == {i: i * i for i in range(40)} and len(submitted) == 40

        submitted.clear()
        gen = submit_windowed(client, range(100, 140), submit)
        with contextlib.closing(gen):
            first = [next(gen) for _ in range(2)]
        assert len(first) == 2 and len(submitted) <= MIN_WINDOW + 2
        assert any(f.status == "cancelled" for f in submitted)
