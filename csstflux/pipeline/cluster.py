"""Getting a Dask client: a local cluster, an existing scheduler, a batch system or GPUs.

- default: a ``LocalCluster`` with one single-threaded worker process per core, its dashboard
  bound to 127.0.0.1 unless ``dashboard_host`` says otherwise;
- ``scheduler="tcp://host:port"`` (or ``tls://``): join a running cluster, optionally with a
  ``distributed.security.Security`` built from Dask's TLS configuration;
- ``cluster="slurm"|"pbs"``: a dask-jobqueue cluster configured by Dask's ``jobqueue.slurm`` /
  ``jobqueue.pbs`` settings (``deploy/jobqueue.yaml``), scaled to ``jobs`` jobs;
- ``gpu=True``: a dask-cuda ``LocalCUDACluster`` (one worker per GPU), refused with a clear
  error where dask-cuda or a GPU is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from distributed import Client, LocalCluster

from csstflux.errors import ConfigError


@dataclass
class ClusterHandle:
    """A client and, when we started it, the cluster (closed by :meth:`close`)."""

    client: Client
    cluster: Any
    kind: str

    @property
    def dashboard(self) -> str | None:
        try:
            return str(self.client.dashboard_link)
        except Exception:  # noqa: BLE001 - no dashboard (bokeh missing or disabled)
            return None

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() not in ("", "-1")])
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:  # noqa: BLE001 - no NVML: no usable GPU
        return 0


def start_cluster(*, scheduler: str | None = None, cluster: str | None = None,
                  gpu: bool = False, n_workers: int | None = None, jobs: int = 1,
                  dashboard_host: str = "127.0.0.1", dashboard_port: int = 8787,
                  security: Any = None) -> ClusterHandle:
    """Start or join the cluster described by the options (validated first)."""
    if sum(bool(x) for x in (scheduler, cluster, gpu)) > 1:
        raise ConfigError("choose at most one of --scheduler, --cluster and --gpu")
    if scheduler:
        return ClusterHandle(Client(scheduler, security=security), None, "existing")
    if cluster:
        kind = cluster.lower()
        if kind not in ("slurm", "pbs"):
            raise ConfigError(f"unknown --cluster {cluster!r}", expected="slurm or pbs",
                              found=cluster)
        try:
            import dask_jobqueue
        except ImportError as exc:
            raise ConfigError("--cluster needs dask-jobqueue: pip install 'csstflux[jobqueue]'"
                              ) from exc
        cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
        c = cls(scheduler_options={"dashboard_address": f"{dashboard_host}:{dashboard_port}"})
        c.scale(jobs=jobs)
        return ClusterHandle(Client(c), c, kind)
    if gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise ConfigError("--gpu needs dask-cuda and a CUDA build: "
                              "pip install 'csstflux[gpu]'") from exc
        if _gpu_count() == 0:
            raise ConfigError("--gpu was given but no NVIDIA GPU is visible on this machine")
        c = LocalCUDACluster(dashboard_address=f"{dashboard_host}:{dashboard_port}")
        return ClusterHandle(Client(c), c, "gpu")
    n = n_workers or (os.cpu_count() or 1)
    try:
        c = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                         dashboard_address=f"{dashboard_host}:{dashboard_port}")
    except OSError:  # port taken: let the OS pick one
        c = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                         dashboard_address=f"{dashboard_host}:0")
    return ClusterHandle(Client(c), c, "local")
