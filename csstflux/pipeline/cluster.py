"""Getting a Dask client: a local cluster, an existing scheduler, a batch system or GPUs.

Every Dask command takes one :class:`ClusterSettings`, from the same command-line options
(:func:`csstflux.cli.options.cluster_options`) and from the same table of a job file
(``[predict.cluster]``, ``[nightly.cluster]``, keys the field names), and
:func:`start_cluster` turns it into a client:

- default (``cluster="local"``): a ``LocalCluster`` of worker processes on this machine
  (``workers``, one per core by default, single-threaded), its scheduler and dashboard on
  127.0.0.1 unless ``dashboard_address`` says otherwise;
- ``scheduler="tcp://host:port"`` (or ``tls://``): join a running cluster; over TLS with the
  certificates of ``tls_ca_file``, ``tls_cert`` and ``tls_key``, else those of Dask's TLS
  configuration (``distributed.comm.tls.*``, ``deploy/dask/tls.yaml``);
- ``cluster="slurm"|"pbs"``: a dask-jobqueue cluster configured by Dask's ``jobqueue.slurm`` /
  ``jobqueue.pbs`` settings (``deploy/dask/jobqueue.yaml``), scaled to ``jobs`` batch jobs;
- ``cluster="gpu"``: a dask-cuda ``LocalCUDACluster`` (one worker per GPU), refused with a
  clear error where dask-cuda or a GPU is missing.

Security. A batch-system cluster's scheduler listens on the head node's network interface,
where the workers reach it: with plain ``tcp://`` anyone who can reach that port could run
code on the workers. So ``slurm`` and ``pbs`` use TLS (:func:`cluster_security`): with the
certificates of the ``tls_*`` settings, else with Dask's TLS configuration when it names a CA,
else with a temporary self-signed certificate made for the run
(``distributed.Security.temporary()``), which dask-jobqueue writes for the workers into
``jobqueue.<system>.shared-temp-directory`` (the working directory when unset; a folder the
compute nodes see, files readable by the owner only, removed when the cluster closes).
Connections without the certificate are refused. Plain ``tcp://`` only with
``insecure=True`` (``--insecure``), which warns. A local or GPU cluster stays on 127.0.0.1.

Worker memory allocator. Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), which returns freed memory to the system promptly;
but setting any glibc malloc threshold switches off glibc's adaptive mmap threshold, so every
array above 128 KiB is then a fresh ``mmap`` whose pages fault in on first write. Reading and
preparing spectra (many temporaries of a few MB) ran 1.6x slower that way, measured on 1000
demo files in one thread: 1.7 s, 2.7 s with Dask's setting, 1.9 s with both it and a 32 MiB
mmap threshold. The 64 KiB trim threshold still costs: the heap is given back and taken again
around every temporary above it; with glibc's own adaptive rule instead (trim at twice the
mmap threshold) reading and preparing took 0.73 ms a spectrum against 0.92 ms (1000 demo files,
one process, shared 2-core AMD EPYC). So the clusters csstflux starts (local, GPU) give their
workers :data:`WORKER_ENVIRON`: the largest mmap threshold glibc accepts, 32 MiB, and a trim
threshold of 64 MiB (a worker keeps at most that much freed memory); tasks keep their arrays
below the first (``tasks.PREPARE_BLOCK``). A value in the Dask configuration is kept (Dask's
own 64 KiB trim threshold is replaced), but by Dask's rule for these variables one in the
environment of the process that starts the cluster wins over it, and Dask's nannies write the
value they use into that environment: to set your own, export ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` before starting csstflux. Batch-system workers get them from the
job script prologue (``deploy/dask/jobqueue.yaml``).

Worker profiler. Dask's workers sample every running task's stack every 10 ms and start a new
profile every second, keeping up to ``distributed.admin.low-level-log-length`` (1000) of them
for the dashboard and the performance report. In a survey job that sampling is paid on every
spectrum: on 2 shared cores, 100,000 demo stars ran at 399 spectra/s with Dask's setting, 571/s
sampling every 100 ms and 601/s without the profiler (``benchmarks/predict_catalog.py``, three
runs in a row; docs/operations.md). The clusters csstflux starts (local, GPU) therefore
sample every 100 ms and cycle every 10 s (:data:`WORKER_PROFILE`): the performance report
keeps its profile, a tenth as finely sampled. Values set in the Dask configuration (a YAML
file, ``--dask-config``, the environment) are kept; ``distributed.worker.profile.enabled:
false`` switches the profiler off.

Monitoring. The scheduler's HTTP server (``dashboard_address``, 127.0.0.1:8787 by default; a
port in use is replaced by one the OS picks) serves the dashboard at ``/status`` and
Prometheus metrics at ``/metrics``; each worker serves its own ``/metrics``. The metrics are on
whenever ``prometheus_client`` is installed (a csstflux dependency). ``prometheus=False``
switches them off for the clusters csstflux starts, ``prometheus=True`` insists on them (an
error when ``prometheus_client`` is missing) and ``None`` leaves Dask's configuration alone:
the ``/metrics`` routes are the modules ``distributed.http.scheduler.prometheus`` and
``distributed.http.worker.prometheus`` in Dask's ``distributed.scheduler.http.routes`` and
``distributed.worker.http.routes`` lists, so a Dask configuration file
(``~/.config/dask/*.yaml``) that leaves them out switches them off everywhere, a running
scheduler's included (:func:`prometheus_config`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
from dask.utils import parse_bytes
from distributed import Client, LocalCluster, as_completed
from distributed.security import Security

from csstflux.errors import ConfigError, StoreError
from csstflux.logs import quiet_dask_noise, verbose
from csstflux.pipeline.worker import QuietNoisePlugin

log = logging.getLogger(__name__)

#: ``ClusterSettings.cluster``: the clusters csstflux starts.
CLUSTER_KINDS: tuple[str, ...] = ("local", "slurm", "pbs", "gpu")
#: The batch systems among them (dask-jobqueue).
BATCH_SYSTEMS: tuple[str, ...] = ("slurm", "pbs")


@dataclass(frozen=True)
class ClusterSettings:
    """Where a job's Dask tasks run (module docstring): the cluster options of every Dask
    command and the ``cluster`` table of a job file."""

    scheduler: str = ""
    """Address of a running Dask scheduler (tcp://host:8786 or tls://host:8786); empty:
    start the cluster named by cluster."""
    cluster: str = "local"
    """The cluster to start: local (worker processes on this machine), slurm or pbs (batch
    jobs of workers through dask-jobqueue, over TLS; deploy/jobqueue.md) or gpu (dask-cuda,
    one worker per GPU; deploy/gpu.md)."""
    jobs: int = 1
    """Batch jobs to submit (slurm, pbs)."""
    workers: int = 0
    """Worker processes of a local or gpu cluster (0: one per core, or one per GPU)."""
    threads: int = 0
    """Threads per worker of a local or gpu cluster (0: 1, or 2 when the workers have reader
    processes)."""
    memory: str = "auto"
    """Memory limit per worker of a local or gpu cluster, e.g. 2.5GiB (auto: the machine's
    memory shared among the workers)."""
    dashboard_address: str = "127.0.0.1:8787"
    """host:port of the dashboard and Prometheus metrics of a cluster started here (a port in
    use: one the OS picks; port 0: always)."""
    tls_ca_file: Path | None = None
    """CA certificate (PEM) for TLS: joining a tls:// scheduler, or a slurm/pbs cluster's
    connections (default: Dask's TLS configuration, else a temporary certificate)."""
    tls_cert: Path | None = None
    """This side's certificate (PEM), with tls_key; for slurm/pbs also the scheduler's and the
    workers'."""
    tls_key: Path | None = None
    """The private key (PEM) of tls_cert."""
    insecure: bool = False
    """slurm, pbs: plain tcp instead of TLS (warns: anyone who can reach the head node's port
    could run code on the workers)."""
    dask_config: tuple[Path, ...] = ()
    """Dask YAML files (jobqueue, TLS, ...) merged into the configuration before the cluster
    starts, over DASK_CONFIG and ~/.config/dask; later files win (deploy/dask/)."""
    prometheus: bool | None = None
    """Serve Prometheus /metrics on the dashboard address of a cluster started here (default:
    when prometheus_client is installed)."""

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTER_KINDS:
            raise ValueError(f"cluster must be one of {', '.join(CLUSTER_KINDS)}, not "
                             f"{self.cluster!r}")
        if self.scheduler and self.cluster != "local":
            raise ValueError(f"choose either a running scheduler ({self.scheduler}) or a "
                             f"cluster to start ({self.cluster}), not both")
        batch = self.cluster in BATCH_SYSTEMS
        if self.jobs < 0 or self.workers < 0 or self.threads < 0:
            raise ValueError("jobs, workers and threads must be >= 0")
        if self.jobs != 1 and not batch:
            raise ValueError(f"jobs is the number of batch jobs of a slurm or pbs cluster, "
                             f"not of a {self.cluster} one")
        sized = [k for k, v in (("workers", self.workers), ("threads", self.threads),
                                ("memory", self.memory != "auto")) if v]
        if sized and (self.scheduler or batch):
            raise ValueError(f"{', '.join(sized)} size a local or gpu cluster started here; "
                             + ("a running scheduler's workers are its own" if self.scheduler
                                else "a batch system's workers are set by its jobqueue "
                                "configuration (deploy/dask/jobqueue.yaml)"))
        if self.memory != "auto":
            try:
                parse_bytes(self.memory)
            except ValueError:
                raise ValueError(f"memory must be a size such as 2.5GiB or 'auto', not "
                                 f"{self.memory!r}") from None
        split_address(self.dashboard_address)
        tls = [k for k in ("tls_ca_file", "tls_cert", "tls_key") if getattr(self, k)]
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if tls and not (batch or self.scheduler.startswith("tls://")):
            raise ValueError(f"{', '.join(tls)}: TLS settings apply to a tls:// scheduler or "
                             "a slurm or pbs cluster")
        if self.insecure and (tls or not batch):
            raise ValueError("insecure (plain tcp) applies to a slurm or pbs cluster without "
                             "TLS settings")
        if self.scheduler and self.prometheus is not None:
            raise ValueError("the Prometheus switch applies to clusters csstflux starts; a "
                             "running scheduler's /metrics is set by its own Dask "
                             "configuration (distributed.scheduler.http.routes)")


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` dashboard address (an empty host: every
    interface); ValueError otherwise."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"dashboard_address must be host:port (127.0.0.1:8787), not "
                         f"{address!r}")
    return host.strip("[]"), int(port)


def cluster_security(settings: ClusterSettings) -> Security | None:
    """The TLS settings of the connections of ``settings``'s cluster (module docstring,
    "Security"); None: Dask's own configuration (a running scheduler) or plain tcp (a local
    or gpu cluster, or ``insecure``)."""
    s = settings
    files = {k: str(v) for k, v in (("tls_ca_file", s.tls_ca_file),
                                    ("cert", s.tls_cert), ("key", s.tls_key)) if v}
    if s.scheduler:
        if not files:
            return None
        return Security(require_encryption=True, tls_ca_file=files.get("tls_ca_file"),
                        tls_client_cert=files.get("cert"), tls_client_key=files.get("key"))
    if s.cluster not in BATCH_SYSTEMS:
        return None
    if s.insecure:
        warnings.warn(f"--insecure: the {s.cluster} cluster's scheduler accepts plain tcp "
                      "connections on the head node's network: anyone who can reach its port "
                      "can run code on the workers", UserWarning, stacklevel=2)
        return None
    if files:
        roles = {f"tls_{role}_{part}": files.get(part)
                 for role in ("client", "scheduler", "worker") for part in ("cert", "key")}
        return Security(require_encryption=True, tls_ca_file=files.get("tls_ca_file"),
                        **roles)
    if dask.config.get("distributed.comm.tls.ca-file", default=None):
        return Security(require_encryption=True)   # the deployment's certificates
    try:
        return Security.temporary()
    except ImportError as exc:
        raise ConfigError(f"the {s.cluster} cluster's temporary TLS certificate needs "
                          "cryptography (pip install 'csstflux[jobqueue]'); or give "
                          "certificates (--tls-ca-file, --tls-cert, --tls-key, or Dask's TLS "
                          "configuration)") from exc


#: Environment for the worker processes of the clusters csstflux starts (module docstring).
WORKER_ENVIRON: dict[str, int] = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
                                  "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}
#: Dask's own ``pre-spawn-environ`` values (``distributed.yaml``) that :data:`WORKER_ENVIRON`
#: replaces; any other value in the configuration is kept.
_DASK_DEFAULTS: dict[str, int] = {"MALLOC_TRIM_THRESHOLD_": 65536}


#: Dask's statistical profiler in the workers of the clusters csstflux starts (module
#: docstring, "Worker profiler"): a stack sample every 100 ms and a new profile every 10 s.
WORKER_PROFILE: dict[str, str] = {"interval": "100ms", "cycle": "10s"}
#: Dask's own values (``distributed.yaml``) that :data:`WORKER_PROFILE` replaces.
_DASK_PROFILE_DEFAULTS: dict[str, str] = {"interval": "10ms", "cycle": "1000ms"}


def worker_profile_config() -> dict[str, str]:
    """Dask settings that give the workers :data:`WORKER_PROFILE` where the configuration
    still holds Dask's own values (a value set in a Dask YAML file or ``--dask-config``, or
    ``distributed.worker.profile.enabled: false``, is kept)."""
    out = {}
    for k, v in WORKER_PROFILE.items():
        key = f"distributed.worker.profile.{k}"
        have = dask.config.get(key, default=_DASK_PROFILE_DEFAULTS[k])
        if str(have).replace(" ", "") == _DASK_PROFILE_DEFAULTS[k]:
            out[key] = v
    return out


def worker_environ_config() -> dict[str, Any]:
    """Dask settings that add :data:`WORKER_ENVIRON` to the nannies' ``pre-spawn-environ``
    where the configuration does not set those variables already (to other values than
    Dask's own defaults)."""
    have = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()
            if k not in have or str(have[k]) == str(_DASK_DEFAULTS.get(k))}


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

        # the report's deep profiles trip dask's size estimate: harmless, but noisy (-v shows
        # it)
        quiet_dask_noise(restore=verbose())
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
            # dask-jobqueue's copies of a temporary certificate for the workers' job scripts
            # (open temporary files it keeps as attributes): closed, so removed, now
            for name, value in list(vars(self.cluster).items()):
                if name.startswith("_job_") and hasattr(value, "close"):
                    value.close()


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
    except OSError as exc:
        raise ConfigError(f"--dask-config: cannot read the file ({exc.strerror or exc})",
                          path=path) from exc
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


def start_cluster(settings: ClusterSettings | None = None, *,
                  readers: bool | None = None) -> ClusterHandle:
    """Start or join the cluster of ``settings`` (None: a local cluster; module docstring).

    The ``dask_config`` files are merged into Dask's configuration first.

    ``readers``: the workers will read through reader processes (``--read-processes``; None:
    with a gpu cluster). A local or GPU cluster started here then has non-daemonic workers
    (reader processes are their children) with :data:`READER_LAYOUT_THREADS` threads each
    unless ``threads`` says otherwise: with one thread, each chunk's store write and the start
    of the next left the readers idle.
    """
    s = settings or ClusterSettings()
    for path in s.dask_config:
        load_dask_config(path)
    if s.scheduler:
        handle = ClusterHandle(Client(s.scheduler, security=cluster_security(s)), None,
                               "existing")
    else:
        with dask.config.set({**prometheus_config(s.prometheus), **worker_environ_config(),
                              **worker_profile_config()}):
            handle = _start_new(s, readers=s.cluster == "gpu" if readers is None else readers)
    # TensorFlow's start-up lines, the nanny's "still alive ... killing" and the size-estimate
    # warnings kept out of every worker's output (-v lets them through)
    handle.client.register_plugin(QuietNoisePlugin(verbose()), name=QuietNoisePlugin.name)
    return handle


def _start_new(s: ClusterSettings, *, readers: bool) -> ClusterHandle:
    """A new cluster: batch system, GPUs or local processes (:func:`start_cluster`)."""
    dashboard = free_dashboard_address(s.dashboard_address)
    if s.cluster in BATCH_SYSTEMS:
        try:
            import dask_jobqueue
        except ImportError as exc:
            raise ConfigError(f"a {s.cluster} cluster needs dask-jobqueue: "
                              "pip install 'csstflux[jobqueue]'") from exc
        cls = dask_jobqueue.SLURMCluster if s.cluster == "slurm" else dask_jobqueue.PBSCluster
        security = cluster_security(s)
        kw: dict[str, Any] = {"scheduler_options": {"dashboard_address": dashboard}}
        if security is not None:
            kw.update(security=security, shared_temp_directory=dask.config.get(
                f"jobqueue.{s.cluster}.shared-temp-directory", default=None) or os.getcwd())
        c = cls(**kw)
        c.scale(jobs=s.jobs)
        return ClusterHandle(Client(c), c, s.cluster)
    threads = s.threads or (READER_LAYOUT_THREADS if readers else 1)
    _reader_layout(readers)
    if s.cluster == "gpu":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise ConfigError("a gpu cluster needs dask-cuda and a CUDA build: "
                              "pip install 'csstflux[gpu]'") from exc
        if _gpu_count() == 0:
            raise ConfigError("a gpu cluster was asked for but no NVIDIA GPU is visible on "
                              "this machine")
        c = LocalCUDACluster(n_workers=s.workers or None, threads_per_worker=threads,
                             memory_limit=s.memory, dashboard_address=dashboard)
        return ClusterHandle(Client(c), c, "gpu")
    local = LocalCluster(n_workers=s.workers or (os.cpu_count() or 1), threads_per_worker=threads,
                         processes=True, memory_limit=s.memory, dashboard_address=dashboard)
    return ClusterHandle(Client(local), local, "local")


#: Tasks in flight per worker thread for :func:`submit_windowed`, and the least in flight.
WINDOW_PER_THREAD = 4
MIN_WINDOW = 8


def submit_windowed(client: Client, items: Iterable[Any], submit: Callable[[Any], Any]
                    ) -> Generator[tuple[Any, Any], None, None]:
    """Submit ``submit(item)`` for every item, keeping at most :data:`WINDOW_PER_THREAD`
    tasks per worker thread in flight (at least :data:`MIN_WINDOW`); yield ``(item, future)``
    as each finishes, in the order they finish.

    A release has thousands of chunks, and each chunk's task carries its stars' file paths:
    submitted all at once, every path of the release would sit in the client and the
    scheduler until its chunk ran (at 1,000,000 demo stars the client peaked at 1,529 MiB that
    way and at 1,263 MiB with the window). The window keeps that to
    what the workers can take next, and it widens as workers join (a batch-system cluster
    scales up after the first submissions). A finished future is released once the caller has
    it: keep its result, not the future. Closing the generator (an error in the caller)
    cancels the tasks still in flight.
    """
    pending = iter(items)
    inflight: dict[str, tuple[Any, Any]] = {}
    done = as_completed()

    def window() -> int:
        threads = sum(client.nthreads().values())
        return max(MIN_WINDOW, WINDOW_PER_THREAD * threads)

    def fill() -> None:
        limit = window()
        while len(inflight) < limit:
            try:
                item = next(pending)
            except StopIteration:
                return
            fut = submit(item)
            inflight[fut.key] = (item, fut)
            done.add(fut)

    try:
        fill()
        while inflight:
            fut = next(done)
            item, _ = inflight.pop(fut.key)
            yield item, fut
            fill()
    finally:
        if inflight:
            client.cancel([f for _, f in inflight.values()])


def free_dashboard_address(address: str) -> str:
    """``address`` (host:port), or the same host with port 0 (the OS picks one) when the port
    is in use: Dask would take another port too, with a warning."""
    host, port = split_address(address)
    if port:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host or "", port))
            except OSError:
                log.info("dashboard port %d is in use; the OS picks another", port)
                port = 0
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reader_layout(readers: bool) -> None:
    """Workers that will have reader processes (their children: PredictorPlugin readers) must
    not be daemonic. Set for the rest of this process, not just while the cluster starts: a
    nanny reads the setting again whenever it restarts a worker."""
    if readers:
        dask.config.set({"distributed.worker.daemon": False})
