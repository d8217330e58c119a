"""Getting a Dask client: a local cluster, an existing scheduler, a batch system or GPUs.

- default: a ``LocalCluster`` with one single-threaded worker process per core, its dashboard
  bound to 127.0.0.1 unless ``dashboard_host`` says otherwise;
- ``scheduler="tcp://host:port"`` (or ``tls://``): join a running cluster, optionally with a
  ``distributed.security.Security`` built from Dask's TLS configuration;
- ``cluster="slurm"|"pbs"``: a dask-jobqueue cluster configured by Dask's ``jobqueue.slurm`` /
  ``jobqueue.pbs`` settings (``deploy/jobqueue.yaml``), scaled to ``jobs`` jobs;
- ``gpu=True``: a dask-cuda ``LocalCUDACluster`` (one worker per GPU), refused with a clear
  error where dask-cuda or a GPU is missing.

Worker memory allocator. Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), which returns freed memory to the system promptly;
but setting any glibc malloc threshold switches off glibc's adaptive mmap threshold, so every
array above 128 KiB is then a fresh ``mmap`` whose pages fault in on first write. Reading and
preparing spectra (many temporaries of a few MB) ran 1.6x slower that way, measured on 1000
demo files in one thread: 1.7 s, 2.7 s with Dask's setting, 1.9 s with both it and
:data:`WORKER_ENVIRON`. So the clusters csstflux starts (local, GPU) give their workers
:data:`WORKER_ENVIRON` (the largest mmap threshold glibc accepts, 32 MiB); tasks keep their
arrays below it (``tasks.PREPARE_BLOCK``). A value in the Dask configuration is kept, but by
Dask's rule for these variables one in the environment of the process that starts the cluster
wins over it, and Dask's nannies write the value they use into that environment: to set your
own, export ``MALLOC_MMAP_THRESHOLD_`` before starting csstflux. Batch-system workers get it
from the job script prologue (``deploy/dask/jobqueue.yaml``).

Monitoring. The scheduler's HTTP server (the dashboard's address, bound to 127.0.0.1 by
default) serves the dashboard at ``/status`` and Prometheus metrics at ``/metrics``; each
worker serves its own ``/metrics``. The metrics are on whenever ``prometheus_client`` is
installed (a csstflux dependency). ``prometheus=False`` switches them off for the clusters
csstflux starts, ``prometheus=True`` insists on them (an error when ``prometheus_client`` is
missing) and ``None`` leaves Dask's configuration alone: the ``/metrics`` routes are the
modules ``distributed.http.scheduler.prometheus`` and ``distributed.http.worker.prometheus``
in Dask's ``distributed.scheduler.http.routes`` and ``distributed.worker.http.routes`` lists,
so a Dask configuration file (``~/.config/dask/*.yaml``) that leaves them out switches them
off everywhere, a running scheduler's included (:func:`prometheus_config`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
from distributed import Client, LocalCluster

from csstflux.errors import ConfigError, StoreError

#: Environment for the worker processes of the clusters csstflux starts (module docstring).
WORKER_ENVIRON: dict[str, int] = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


def worker_environ_config() -> dict[str, Any]:
    """Dask settings that add :data:`WORKER_ENVIRON` to the nannies' ``pre-spawn-environ``
    where the configuration does not set those variables already."""
    have = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()
            if k not in have}


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

    @property
    def metrics(self) -> str | None:
        """URL of the scheduler's Prometheus ``/metrics`` (None without an HTTP server)."""
        link = self.dashboard
        if not link:
            return None
        from urllib.parse import urlsplit

        u = urlsplit(link)
        return f"{u.scheme}://{u.netloc}/metrics"

    @contextlib.contextmanager
    def performance_report(self, path: str | os.PathLike[str]) -> Iterator[None]:
        """A Dask performance report (HTML, self-contained) of the work done inside, written
        to ``path``.

        When the work fails the report is best effort: its own failure must not hide the
        error that stopped the job, and it is not written at all when the output refused
        writes (a :class:`StoreError`: writing it would fail too); otherwise a failure to write
        it is a :class:`StoreError`.
        """
        from distributed import performance_report

        # the report's deep profiles trip dask's size estimate: harmless, but noisy
        logging.getLogger("distributed.sizeof").setLevel(logging.ERROR)
        # mode="inline": Bokeh's JavaScript inside the page, so it opens offline (with the
        # default "cdn" mode the page is blank without internet)
        report = performance_report(filename=os.fspath(path), mode="inline")
        report.__enter__()
        try:
            yield
        except StoreError:
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):
                report.__exit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            report.__exit__(None, None, None)
        except OSError as exc:
            raise StoreError.from_os_error(exc, "the performance report", path) from exc

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


#: Dask configuration key → the module that adds ``/metrics`` to that server's routes.
PROMETHEUS_ROUTES = {
    "distributed.scheduler.http.routes": "distributed.http.scheduler.prometheus",
    "distributed.worker.http.routes": "distributed.http.worker.prometheus",
}


def prometheus_config(enabled: bool | None) -> dict[str, list[str]]:
    """Dask configuration that switches the Prometheus ``/metrics`` routes on or off.

    ``None``: ``{}`` (Dask's own setting: on when ``prometheus_client`` is installed).
    ``True`` raises :class:`ConfigError` when ``prometheus_client`` cannot be imported.
    Apply it with ``dask.config.set(...)`` around the creation of the scheduler and workers.
    """
    if enabled is None:
        return {}
    if enabled:
        try:
            import prometheus_client  # noqa: F401
        except ImportError as exc:
            raise ConfigError("Prometheus metrics need prometheus_client: "
                              "pip install prometheus-client") from exc
    out = {}
    for key, module in PROMETHEUS_ROUTES.items():
        routes = [r for r in dask.config.get(key, default=[]) if r != module]
        out[key] = [module, *routes] if enabled else routes
    return out


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


def load_dask_config(path: str | os.PathLike[str]) -> None:
    """Merge a Dask YAML file into this process's Dask configuration (``--dask-config``).

    The same merge as a file in ``DASK_CONFIG``, but after it, so these values win; the
    cluster started next (jobqueue, dask-cuda) and the client's TLS ``Security`` read them.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("--dask-config: not valid YAML (" + " ".join(str(exc).split()) + ")",
                          path=path) from exc
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError("--dask-config: expected a mapping of Dask settings", path=path,
                          expected="mapping", found=type(data).__name__)
    dask.config.update(dask.config.config, data, priority="new")


#: Threads of a worker that reads through reader processes: two chunk tasks in flight, so
#: one task's reading overlaps the other's last model call, store write and start.
READER_LAYOUT_THREADS = 2


def start_cluster(*, scheduler: str | None = None, cluster: str | None = None,
                  gpu: bool = False, n_workers: int | None = None, jobs: int = 1,
                  dashboard_host: str = "127.0.0.1", dashboard_port: int = 8787,
                  security: Any = None, prometheus: bool | None = None,
                  readers: bool | None = None) -> ClusterHandle:
    """Start or join the cluster described by the options (validated first).

    ``prometheus``: switch the ``/metrics`` routes of a cluster started here on or off (module
    docstring); it cannot change a running scheduler's.

    ``readers``: the workers will read through reader processes (``--read-processes``; None:
    with ``gpu``). A local or GPU cluster started here then has non-daemonic workers (reader
    processes are their children) with :data:`READER_LAYOUT_THREADS` threads each: with one
    thread, each chunk's store write and the start of the next left the readers idle.
    """
    if sum(bool(x) for x in (scheduler, cluster, gpu)) > 1:
        raise ConfigError("choose at most one of --scheduler, --cluster and --gpu")
    if scheduler:
        if prometheus is not None:
            raise ConfigError("the Prometheus switch applies to clusters csstflux starts; a "
                              "running scheduler's /metrics is set by its own Dask "
                              "configuration (distributed.scheduler.http.routes)")
        return ClusterHandle(Client(scheduler, security=security), None, "existing")
    with dask.config.set({**prometheus_config(prometheus), **worker_environ_config()}):
        return _start_new(cluster=cluster, gpu=gpu, n_workers=n_workers, jobs=jobs,
                          dashboard_host=dashboard_host, dashboard_port=dashboard_port,
                          readers=gpu if readers is None else readers)


def _start_new(*, cluster: str | None, gpu: bool, n_workers: int | None, jobs: int,
               dashboard_host: str, dashboard_port: int, readers: bool) -> ClusterHandle:
    """A new cluster: batch system, GPUs or local processes (:func:`start_cluster`)."""
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
        _reader_layout(readers)
        c = LocalCUDACluster(dashboard_address=f"{dashboard_host}:{dashboard_port}",
                             threads_per_worker=READER_LAYOUT_THREADS if readers else 1)
        return ClusterHandle(Client(c), c, "gpu")
    n = n_workers or (os.cpu_count() or 1)
    threads = READER_LAYOUT_THREADS if readers else 1
    _reader_layout(readers)
    try:
        local = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                             dashboard_address=f"{dashboard_host}:{dashboard_port}")
    except OSError:  # port taken: let the OS pick one
        local = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                             dashboard_address=f"{dashboard_host}:0")
    return ClusterHandle(Client(local), local, "local")


def _reader_layout(readers: bool) -> None:
    """Workers that will have reader processes (their children: PredictorPlugin readers) must
    not be daemonic. Set for the rest of this process, not just while the cluster starts: a
    nanny reads the setting again whenever it restarts a worker."""
    if readers:
        dask.config.set({"distributed.worker.daemon": False})
