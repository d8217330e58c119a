"""The model, loaded once per worker by a Dask worker plugin, and the task that uses it."""

from __future__ import annotations

import ctypes
import os
import warnings
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker
from numpy.typing import NDArray

from csstflux.errors import StoreError
from csstflux.logs import quiet_worker
from csstflux.pipeline.tasks import reader_pid, reader_step, run_chunk

PLUGIN_NAME = "csstflux-predictor"
#: Thread counts of the math libraries, capped by :class:`PredictorPlugin` (``threads``).
THREAD_VARS = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class PredictorPlugin(WorkerPlugin):
    """Loads the predictor when a worker starts (or joins) and keeps it for every task.

    ``threads`` caps the math-library threads of each worker process (one per core is the
    default layout, so one thread each avoids oversubscription); it must be set before the
    deep-learning backend is imported, which happens here.

    ``readers`` > 0 starts that many reader processes beside the worker (a GPU worker: the
    model outruns one reader by two orders of magnitude, and reading is Python-bound, so
    threads do not help — measured on an H100 host, 15 reader threads were slower than one).
    They read and prepare spectra (no deep-learning import) while the worker predicts; the
    worker process must then not be daemonic (``distributed.worker.daemon: false``, which
    :func:`csstflux.pipeline.cluster.start_cluster` sets for workers with readers).

    Known harmless noise (Dask's, TensorFlow's start-up lines) stays out of the worker's
    output unless ``verbose`` (:func:`csstflux.logs.quiet_worker`).
    """

    name = PLUGIN_NAME

    def __init__(self, model_path: str, threads: int | None = 1, readers: int = 0,
                 verbose: bool = False) -> None:
        self.model_path = model_path
        self.threads = threads
        self.readers = readers
        self.verbose = verbose
        self.predictor: Any = None
        self.pool: Any = None

    def setup(self, worker: Any) -> None:
        quiet_worker(self.verbose)   # before the deep-learning backend is imported
        if self.threads:
            for var in THREAD_VARS:
                os.environ.setdefault(var, str(self.threads))
        if self.readers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(self.readers,
                                       mp_context=multiprocessing.get_context("spawn"))
            try:   # start them now (they import the readers once), not in the first task
                list(pool.map(reader_pid, range(self.readers)))
            except AssertionError as exc:        # "daemonic processes are not allowed ..."
                pool.shutdown(wait=False)
                warnings.warn(f"reader processes unavailable ({exc}); reading in one thread: "
                              "start workers with distributed.worker.daemon: false",
                              stacklevel=2)
                self.readers = 0
            else:
                self.pool = pool
        from csstflux.model.predictor import load_predictor

        self.predictor = load_predictor(self.model_path)

    def teardown(self, worker: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


class QuietNoisePlugin(WorkerPlugin):
    """Keeps known harmless noise out of each worker's output
    (:func:`csstflux.logs.quiet_worker`; ``verbose``: lets it through). For clusters whose
    workers get no :class:`PredictorPlugin` (anchor, flats)."""

    name = "csstflux-quiet-noise"

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def setup(self, worker: Any) -> None:
        quiet_worker(self.verbose)


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``); False where
    there is no glibc.

    The workers keep up to 64 MiB of freed memory between allocations
    (:data:`csstflux.pipeline.cluster.WORKER_ENVIRON`: reading is faster that way), and what
    a long run fragments can stay with the process. Called once per chunk, after its last
    write, it costs milliseconds against the chunk's seconds; the peak of each of two workers
    over 100,000 stars fell from 482–526 to 377–398 MiB with it.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    return bool(_LIBC) and bool(_LIBC.malloc_trim(0) >= 0)


_LIBC: Any = None


def worker_plugin() -> Any:
    """The :class:`PredictorPlugin` of the worker running the current task."""
    return get_worker().plugins[PLUGIN_NAME]


def worker_predictor() -> Any:
    """The predictor of the worker running the current task."""
    return worker_plugin().predictor


def predict_chunk_task(store: str, index: int, start: int, stop: int, paths: list[str],
                       z: NDArray[np.float64], base_flags: NDArray[np.uint32],
                       batch_size: int, catalog_teff: NDArray[np.floating[Any]] | None = None
                       ) -> dict[str, Any]:
    """Dask task: one chunk with the worker's predictor; returns the chunk summary.

    When the output refuses the chunk's writes (disk full, permission) the
    :class:`~csstflux.errors.StoreError` is returned, not raised, as ``{"chunk": index,
    "store_error": error}`` (no marker is written): the job then stops with one message,
    where a raised error would be retried by Dask and logged with its traceback by every
    worker.
    """
    plugin = worker_plugin()
    predictor = plugin.predictor
    # with reader processes: one model shape, every sub-batch padded to the same size
    call: dict[str, Any] = ({"batch_size": reader_step(batch_size, plugin.readers),
                             "pad_to_batch": True} if plugin.pool is not None
                            else {"batch_size": batch_size})
    try:
        return run_chunk(store, index, start, stop, paths, z, base_flags,
                         lambda f, e: predictor(f, e, **call), batch_size,
                         readers=plugin.pool, n_readers=plugin.readers,
                         catalog_teff=catalog_teff,
                         extra={"backend": getattr(predictor, "backend", "keras")})
    except StoreError as exc:
        return {"chunk": index, "store_error": exc}
    finally:
        release_free_memory()


def read_headers_task(paths: list[str]) -> list[dict[str, Any] | None]:
    """Dask task: header metadata of many files (scan mode)."""
    from csstflux.io.formats.lamost import read_header

    return [read_header(p) for p in paths]
