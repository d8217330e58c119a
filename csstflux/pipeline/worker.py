"""The model, loaded once per worker by a Dask worker plugin, and the task that uses it."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker
from numpy.typing import NDArray

from csstflux.errors import StoreError
from csstflux.pipeline.tasks import run_chunk

PLUGIN_NAME = "csstflux-predictor"
#: Thread counts of the math libraries, capped by :class:`PredictorPlugin` (``threads``).
THREAD_VARS = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class PredictorPlugin(WorkerPlugin):
    """Loads the predictor when a worker starts (or joins) and keeps it for every task.

    ``threads`` caps the math-library threads of each worker process (one per core is the
    default layout, so one thread each avoids oversubscription); it must be set before the
    deep-learning backend is imported, which happens here.
    """

    name = PLUGIN_NAME

    def __init__(self, model_path: str, threads: int | None = 1) -> None:
        self.model_path = model_path
        self.threads = threads
        self.predictor: Any = None

    def setup(self, worker: Any) -> None:
        if self.threads:
            for var in THREAD_VARS:
                os.environ.setdefault(var, str(self.threads))
        from csstflux.model.predictor import load_predictor

        self.predictor = load_predictor(self.model_path)


def worker_predictor() -> Any:
    """The predictor of the worker running the current task."""
    plugin: Any = get_worker().plugins[PLUGIN_NAME]
    return plugin.predictor


def predict_chunk_task(store: str, index: int, start: int, stop: int, paths: list[str],
                       z: NDArray[np.float64], base_flags: NDArray[np.uint32],
                       batch_size: int) -> dict[str, Any]:
    """Dask task: one chunk with the worker's predictor; returns the chunk summary.

    When the output refuses the chunk's writes (disk full, permission) the
    :class:`~csstflux.errors.StoreError` is returned, not raised, as ``{"chunk": index,
    "store_error": error}`` (no marker is written): the job then stops with one message,
    where a raised error would be retried by Dask and logged with its traceback by every
    worker.
    """
    predictor = worker_predictor()
    try:
        return run_chunk(store, index, start, stop, paths, z, base_flags,
                         lambda f, e: predictor(f, e, batch_size=batch_size), batch_size)
    except StoreError as exc:
        return {"chunk": index, "store_error": exc}


def read_headers_task(paths: list[str]) -> list[dict[str, Any] | None]:
    """Dask task: header metadata of many files (scan mode)."""
    from csstflux.io.lamost import read_header

    return [read_header(p) for p in paths]
