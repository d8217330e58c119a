"""The exported UaRA-net run by ONNX Runtime on the CPU, behind the predictor's own checks.

:class:`OnnxPredictor` is a :class:`~csstflux.model.predictor.Predictor` whose network call runs
the graph exported from the same ``.keras`` archive (:mod:`csstflux.model.onnx_graph`: shipped
beside the archive, cached, or exported on first use) in an ONNX Runtime session
(:mod:`csstflux.model.onnx_session`: settings and measurements, agreement with Keras). Input
checks, the σ calibration and the output scaling are the predictor's code, unchanged. Build it
with ``load_predictor(path, backend="onnx")``, or ``"auto"``, the default, on CPU machines.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import OUTPUT_GRID
from csstflux.model.card import ModelCard, load_model
from csstflux.model.onnx_graph import GraphRecord, export_to_cache, find_graph
from csstflux.model.onnx_session import (
    GRAPH_OPTIMIZATION,
    ONNX_BATCH,
    import_onnxruntime,
    make_session,
    require_onnxruntime,
    run_session,
)
from csstflux.model.predictor import Predictor

__all__ = ["OnnxPredictor", "load_onnx_predictor"]

log = logging.getLogger(__name__)


class OnnxPredictor(Predictor):
    """A :class:`~csstflux.model.predictor.Predictor` whose network runs with ONNX Runtime.

    Same call, same checks, same error calibration; the graph runs on at most
    :data:`~csstflux.model.onnx_session.ONNX_BATCH` spectra at a time, unpadded (ONNX
    Runtime has no per-shape compilation), so ``pad_to_batch`` changes nothing. Build it with
    :func:`load_onnx_predictor` or ``load_predictor(path, backend="onnx")``.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
        The CPU session.
    record : csstflux.model.onnx_graph.GraphRecord
        The graph's record (its checksum and the archive checksum it was exported from).
    graph_path : Path
        Where the graph's record lies.
    threads : int
        Intra-op threads asked of ONNX Runtime (0: one per core).
    model : keras.Model
        The Keras network of the same archive, loaded on first access (the reference; the
        predictions do not use it).
    """

    backend = "onnx"

    def __init__(self, session: Any, output: str, card: ModelCard, archive: Path,
                 record: GraphRecord, graph_path: Path, threads: int) -> None:
        self._set_card(card)
        self.session, self._output = session, output
        self.archive, self.record, self.graph_path = archive, record, graph_path
        self.threads = threads
        self._model: Any = None

    @property  # type: ignore[override]
    def model(self) -> Any:
        if self._model is None:
            self._model, _ = load_model(self.archive, for_inference=True)
        return self._model

    @property
    def provenance(self) -> dict[str, Any]:
        """What runs the network: backend, ONNX Runtime version, graph checksum and source,
        threads and optimisation level."""
        ort = import_onnxruntime()
        return {"backend": self.backend,
                "onnxruntime": "" if ort is None else str(ort.__version__),
                "graph_sha256": self.record.graph_sha256,
                "graph_source_sha256": self.record.source_sha256,
                "graph_exporter": self.record.exporter,
                "graph_max_rel_diff": self.record.max_rel_diff,
                "intra_op_threads": self.threads,
                "graph_optimization": GRAPH_OPTIMIZATION}

    def _predict(self, x: NDArray[np.float32], e: NDArray[np.float32], batch_size: int,
                 pad_to_batch: bool = False) -> NDArray[np.float32]:
        """Model output (n_spec, 2, 574), ``min(batch_size, ONNX_BATCH)`` spectra per call,
        unpadded."""
        n = x.shape[0]
        step = min(batch_size, ONNX_BATCH)
        out = np.empty((n, 2, OUTPUT_GRID.n), dtype=np.float32)
        for start in range(0, n, step):
            stop = min(start + step, n)
            with self._lock:        # one batch at a time: the session's threads are the budget
                out[start:stop] = run_session(self.session, self._output,
                                              x[start:stop], e[start:stop])
        return out


def load_onnx_predictor(card: ModelCard, archive: Path, *, threads: int | None = None,
                        cache_dir: str | os.PathLike[str] | None = None) -> OnnxPredictor:
    """The ONNX predictor of a verified model (:func:`~csstflux.model.card.verify_model_files`).

    The graph is found beside the archive or in the cache, else exported into the cache
    (:mod:`csstflux.model.onnx_graph`). Raises
    :class:`~csstflux.model.onnx_session.OnnxUnavailableError` where ONNX Runtime is missing
    or no graph can be had, :class:`~csstflux.errors.ModelFileError` for a graph of another
    archive or one that does not load.
    """
    require_onnxruntime()
    found = find_graph(card, archive, cache_dir)
    blob, record, record_path = found or export_to_cache(card, archive, cache_dir)
    session, output, n = make_session(blob, threads, where=record_path)
    log.info("network of %s runs with ONNX Runtime (%s, %s threads)", archive.name,
             record_path, n or "default")
    return OnnxPredictor(session, output, card, archive, record, record_path, n)
