"""Cluster options are validated before anything starts, with clear errors."""

import os

import dask
import pytest

from csstflux.errors import ConfigError
from csstflux.pipeline.cluster import WORKER_ENVIRON, start_cluster, worker_environ_config


def test_conflicting_options_refused():
    with pytest.raises(ConfigError, match="at most one"):
        start_cluster(scheduler="tcp://127.0.0.1:1", gpu=True)


def test_gpu_without_dask_cuda_or_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="dask-cuda|GPU"):
        start_cluster(gpu=True)


def test_unknown_batch_system_refused():
    with pytest.raises(ConfigError, match="slurm or pbs"):
        start_cluster(cluster="lsf")


def clear_mmap_env(monkeypatch):
    """No MALLOC_MMAP_THRESHOLD_ here: Dask's nannies copy their pre-spawn variables into the
    launching process's environment (an earlier cluster of this process leaves it set), and a
    value there wins over the configuration; the original is restored after the test."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "0")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")


def test_local_cluster_dashboard_on_loopback(monkeypatch):
    clear_mmap_env(monkeypatch)
    handle = start_cluster(n_workers=1, dashboard_port=0)
    try:
        assert handle.kind == "local"
        assert handle.dashboard is not None and "127.0.0.1" in handle.dashboard
        assert handle.client.run(lambda: 1)  # the worker answers
        # workers get the mmap threshold beside Dask's own trim threshold
        (env,) = handle.client.run(lambda: {k: os.environ.get(k) for k in
                                            ("MALLOC_MMAP_THRESHOLD_",
                                             "MALLOC_TRIM_THRESHOLD_")}).values()
        assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20)
        assert env["MALLOC_TRIM_THRESHOLD_"] is not None
    finally:
        handle.close()
    # the setting was for that cluster only
    assert "MALLOC_MMAP_THRESHOLD_" not in dask.config.get("distributed.nanny.pre-spawn-environ")


def test_worker_environ_leaves_a_configured_value_alone(monkeypatch):
    clear_mmap_env(monkeypatch)
    assert worker_environ_config() == {
        f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 65536}):
        assert worker_environ_config() == {}
        handle = start_cluster(n_workers=1, dashboard_port=0)
        try:
            (value,) = handle.client.run(os.environ.get, "MALLOC_MMAP_THRESHOLD_").values()
        finally:
            handle.close()
    assert value == "65536"
