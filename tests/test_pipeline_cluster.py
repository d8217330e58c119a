"""Cluster options are validated before anything starts, with clear errors."""

import pytest

from csstflux.errors import ConfigError
from csstflux.pipeline.cluster import start_cluster


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


def test_local_cluster_dashboard_on_loopback():
    handle = start_cluster(n_workers=1, dashboard_port=0)
    try:
        assert handle.kind == "local"
        assert handle.dashboard is not None and "127.0.0.1" in handle.dashboard
        assert handle.client.run(lambda: 1)  # the worker answers
    finally:
        handle.close()
