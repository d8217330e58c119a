"""Exported UaRA-net graphs: made with Keras' exporter, vouched for by a record, cached.

A model's network is exported once with Keras' own exporter (``model.export(format="onnx")``:
tf2onnx under TensorFlow, jax2onnx under JAX) and checked against Keras
(:mod:`csstflux.model.onnx_session`); :mod:`csstflux.model.onnx_predictor` runs it.

A graph is an ``.onnx`` file and a JSON record beside it (:class:`GraphRecord`): the graph's
SHA-256, the SHA-256 of the archive it was exported from, what exported it, and the largest
relative difference to Keras measured on probe spectra when it was exported. For a model the
graph is looked for

1. beside the archive, ``<stem>.onnx`` with its record ``<stem>.onnx.record`` (JSON; the
   shipped model has them, so users need no exporter);
2. in the cache, ``{cache}/onnx/<archive sha256>.onnx.record`` naming its graph
   ``<archive sha256>-<first 12 hex digits of the graph's sha256>.onnx`` (content-addressed, so
   two workers exporting at once cannot mix their files); the cache is ``$CSSTFLUX_CACHE`` or
   ``~/.cache/csstflux``, and keeps the :data:`CACHE_KEEP` newest graphs;
3. else it is exported now into the cache (needs tf2onnx: ``pip install csstflux[onnx-export]``)
   and used only if it matches Keras on
   :func:`~csstflux.model.onnx_session.probe_inputs` within
   :data:`~csstflux.model.onnx_session.EXPORT_RTOL`. One
   process exports, under a lock file ``<archive sha256>.exporting``; the other workers of a
   cluster wait for its graph (at most :data:`EXPORT_WAIT` s).

A record whose source checksum differs from the archive's is refused with
:class:`~csstflux.errors.ModelFileError` naming both checksums, as is a graph whose bytes differ
from its record: a graph is never used for a model it was not exported from.
:func:`export_beside` writes the files of step 1 (how the shipped graph was made).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.config import from_dict
from csstflux.errors import ConfigError, ModelFileError
from csstflux.grids import INPUT_GRID
from csstflux.io.atomic import write_bytes, write_text
from csstflux.model.backend import backend_info
from csstflux.model.card import ModelCard, load_model, read_card
from csstflux.model.onnx_session import (
    EXPORT_RTOL,
    BackendWarning,
    OnnxUnavailableError,
    make_session,
    probe_inputs,
    relative_difference,
    require_onnxruntime,
    run_session,
)

__all__ = ["GraphRecord", "read_graph", "find_graph", "export_graph", "export_to_cache",
           "export_beside", "RECORD_SUFFIX", "CACHE_KEEP", "EXPORT_WAIT"]

log = logging.getLogger(__name__)

#: Graphs kept in the cache (the newest; each about 1.5 MB).
CACHE_KEEP: int = 32
#: Seconds a process waits for another one exporting the same model (an export takes 5-10 s
#: on 2 cores); a lock older than this is stale.
EXPORT_WAIT: float = 120.0
#: Version of the graph record's JSON layout.
GRAPH_RECORD_FORMAT: int = 1
#: Suffix of a graph record (JSON; not ``.json``, which would make a second model card in the
#: model's folder); the graph itself ends in ``.onnx``.
RECORD_SUFFIX: str = ".onnx.record"


@dataclass(frozen=True)
class GraphRecord:
    """What vouches for an exported graph, stored as JSON beside it."""

    graph: str
    """File name of the graph, relative to the record."""
    graph_sha256: str
    """SHA-256 hex digest of the graph file."""
    source_sha256: str
    """SHA-256 of the ``.keras`` archive the graph was exported from."""
    source_model_id: str
    """``model_id`` of that archive's card."""
    exporter: str
    """What exported it (Keras version and backend, converter and version)."""
    opset: int
    """ONNX opset of the default domain (0: not known)."""
    onnxruntime: str
    """ONNX Runtime version that checked it against Keras."""
    max_rel_diff: float
    """:func:`relative_difference` to Keras on :func:`probe_inputs`, at export."""
    created: str
    """Export time, ISO 8601 UTC."""
    record_format: int = GRAPH_RECORD_FORMAT
    """Version of this JSON layout."""

    def to_json(self) -> str:
        """The record as indented JSON text."""
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _GraphMissing(ModelFileError):
    """A graph record, or the graph it names, is not there."""


def read_graph(record_path: str | os.PathLike[str],
               archive_sha256: str) -> tuple[bytes, GraphRecord]:
    """Read a graph and its record, refusing one not exported from ``archive_sha256``.

    Raises
    ------
    ModelFileError
        The record is missing or malformed, names another source archive (both checksums in
        the message), or its graph is missing or differs from the recorded checksum.
    """
    path = Path(record_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = from_dict(GraphRecord, data)
    except FileNotFoundError as exc:
        raise _GraphMissing("exported-graph record not found", path=path) from exc
    except (json.JSONDecodeError, ConfigError, TypeError) as exc:
        raise ModelFileError(f"invalid exported-graph record: {exc}", path=path) from exc
    if record.source_sha256 != archive_sha256:
        raise ModelFileError(
            f"exported graph was made from another model archive: its record names archive "
            f"sha256 {record.source_sha256}, the model's archive is {archive_sha256}; delete "
            f"{path.name} and its graph or re-export them (export_beside)", path=path,
            expected=archive_sha256, found=record.source_sha256)
    graph = path.parent / Path(record.graph).name
    try:
        blob = graph.read_bytes()
    except FileNotFoundError as exc:
        raise _GraphMissing("exported graph named by its record is missing",
                            path=graph) from exc
    digest = _sha256(blob)
    if digest != record.graph_sha256:
        raise ModelFileError("exported graph does not match its record's checksum (tampered "
                             "or corrupt)", path=graph, expected=record.graph_sha256,
                             found=digest)
    return blob, record


def _beside(archive: Path) -> Path:
    return archive.with_name(archive.stem + RECORD_SUFFIX)


def _cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None:
        from csstflux.demo.release import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "onnx"


def find_graph(card: ModelCard, archive: Path, cache_dir: str | os.PathLike[str] | None = None
               ) -> tuple[bytes, GraphRecord, Path] | None:
    """The graph of ``archive``: beside it, else in the cache; None where there is none.

    Returns the graph's bytes, its record and the record's path. A cache entry whose graph is
    gone (pruned, deleted) counts as none. Raises :class:`~csstflux.errors.ModelFileError`
    for a graph of another archive or one that differs from its record (see
    :func:`read_graph`), beside the archive or in the cache, and for a record beside the
    archive whose graph is missing.
    """
    beside = _beside(archive)
    if beside.is_file():
        return (*read_graph(beside, card.archive_sha256), beside)
    cached = _cache_folder(cache_dir) / f"{card.archive_sha256}{RECORD_SUFFIX}"
    try:
        return (*read_graph(cached, card.archive_sha256), cached)
    except _GraphMissing as exc:
        log.debug("no cached graph: %s", exc)
        return None


def _exporter() -> str:
    """The converter Keras' ONNX export needs on this backend, with its version; raises
    :class:`OnnxUnavailableError` where it is missing."""
    backend = backend_info()["backend"]
    need = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnxscript"}.get(backend)
    if need is None:
        raise OnnxUnavailableError(f"Keras cannot export to ONNX on the {backend} backend")
    if importlib.util.find_spec(need) is None:
        raise OnnxUnavailableError(f"exporting the graph needs {need}, which is not installed "
                                   "(pip install 'csstflux[onnx-export]')")
    return f"{need} {importlib.metadata.version(need)}"


def _opset(blob: bytes) -> int:
    try:
        onnx: Any = importlib.import_module("onnx")
    except ImportError:
        return 0
    return next((int(o.version) for o in onnx.load_from_string(blob).opset_import
                 if o.domain in ("", "ai.onnx")), 0)


def export_graph(model: Any, card: ModelCard) -> tuple[bytes, GraphRecord]:
    """Export a loaded network with Keras' exporter and check it against Keras.

    Parameters
    ----------
    model : keras.Model
        The network of ``card``'s archive (as :func:`~csstflux.model.card.load_model` gives).
    card : ModelCard
        Its card: the archive checksum the record vouches for.

    Returns
    -------
    graph : bytes
        The ONNX graph.
    record : GraphRecord
        Its record, ``graph`` still empty (the writer names the file).

    Raises
    ------
    OnnxUnavailableError
        ONNX Runtime or the exporter is missing, the export failed, or the graph differs from
        Keras by more than :data:`EXPORT_RTOL` on :func:`probe_inputs`.
    """
    ort = require_onnxruntime()
    exporter = _exporter()
    import keras

    spec = [{name: keras.InputSpec(shape=(None, INPUT_GRID.n), dtype="float32", name=name)
             for name in ("flux", "flux_err")}]
    with tempfile.TemporaryDirectory(prefix="csstflux-onnx-") as tmp:
        target = Path(tmp) / "graph.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # the converters' deprecation noise
                model.export(str(target), format="onnx", verbose=False, input_signature=spec)
            blob = target.read_bytes()
        except Exception as exc:     # converters raise anything
            raise OnnxUnavailableError(f"Keras could not export the graph ({exporter}): "
                                       f"{type(exc).__name__}: {exc}") from exc
    session, output, _ = make_session(blob, threads=1, where="<exported graph>")
    flux, err = probe_inputs()
    want = np.asarray(keras.ops.convert_to_numpy(
        model.predict_on_batch({"flux": flux, "flux_err": err})))
    diff = relative_difference(run_session(session, output, flux, err), want)
    if not diff <= EXPORT_RTOL:
        raise OnnxUnavailableError(f"the exported graph differs from Keras by {diff:.2e} "
                                   f"(relative, tolerance {EXPORT_RTOL:.0e})")
    info = backend_info()
    record = GraphRecord(graph="", graph_sha256=_sha256(blob),
                         source_sha256=card.archive_sha256, source_model_id=card.model_id,
                         exporter=f"keras {info['keras']} ({info['backend']}), {exporter}",
                         opset=_opset(blob), onnxruntime=str(ort.__version__),
                         max_rel_diff=diff,
                         created=datetime.now(UTC).isoformat(timespec="seconds"))
    return blob, record


def _write(blob: bytes, record: GraphRecord, graph_path: Path, record_path: Path) -> GraphRecord:
    """Graph first, then the record that vouches for it, each written atomically."""
    record = dataclasses.replace(record, graph=graph_path.name)
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(graph_path, blob)
    write_text(record_path, record.to_json())
    return record


def _prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Remove all but the ``keep`` newest records of the cache, and every graph no record
    names (older than a minute: one being written has no record yet)."""
    records = sorted(folder.glob(f"*{RECORD_SUFFIX}"), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    for old in records[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
    named = set()
    for rec in records[:keep]:
        with contextlib.suppress(OSError, ValueError, KeyError):
            named.add(json.loads(rec.read_text(encoding="utf-8"))["graph"])
    now = datetime.now(UTC).timestamp()
    for graph in folder.glob("*.onnx"):
        with contextlib.suppress(OSError):
            if graph.name not in named and now - graph.stat().st_mtime > 60:
                graph.unlink()


def _take_export_lock(lock: Path) -> bool:
    """Take ``lock`` (created exclusively); where another process holds it, wait until it is
    gone or older than :data:`EXPORT_WAIT` seconds (stale: taken over). False where the cache
    cannot hold a lock (the export then runs unlocked)."""
    deadline = time.monotonic() + EXPORT_WAIT
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - lock.stat().st_mtime > EXPORT_WAIT:
                    lock.unlink()           # left by a process that died while exporting
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        except OSError:
            return False


def export_to_cache(card: ModelCard, archive: Path, cache_dir: str | os.PathLike[str] | None
                     ) -> tuple[bytes, GraphRecord, Path]:
    """Export ``archive``'s network into the cache, once: a process that finds another one
    exporting the same archive waits for its graph (in memory only where the cache is not
    writable)."""
    exporter = _exporter()          # before loading anything
    folder = _cache_folder(cache_dir)
    lock = folder / f"{card.archive_sha256}.exporting"
    held = _take_export_lock(lock)
    try:
        found = find_graph(card, archive, cache_dir)       # made while this one waited
        if found is not None:
            return found
        model, _ = load_model(archive, for_inference=True)
        log.info("exporting %s to ONNX with %s (once per model)", archive.name, exporter)
        blob, record = export_graph(model, card)
        record_path = folder / f"{card.archive_sha256}{RECORD_SUFFIX}"
        graph_path = folder / f"{card.archive_sha256}-{record.graph_sha256[:12]}.onnx"
        try:
            record = _write(blob, record, graph_path, record_path)
            _prune(folder)
        except OSError as exc:
            warnings.warn(f"exported graph not cached ({exc}); it will be exported again "
                          "next time", BackendWarning, stacklevel=3)
            record = dataclasses.replace(record, graph=graph_path.name)
        return blob, record, record_path
    finally:
        if held:
            with contextlib.suppress(OSError):
                lock.unlink()


def export_beside(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Export a model's graph beside its archive: ``<stem>.onnx`` and ``<stem>.onnx.record``.

    This is how the graph shipped with csstflux was made; ``load_predictor`` then finds it
    without an exporter. Returns the record's path. Raises
    :class:`~csstflux.errors.ModelFileError` where the files exist and ``overwrite`` is
    False, and :class:`OnnxUnavailableError` as :func:`export_graph`.
    """
    model, card = load_model(path, for_inference=True)
    _, _, archive = read_card(path)
    record_path = _beside(archive)
    graph_path = archive.with_suffix(".onnx")
    if not overwrite:
        for p in (graph_path, record_path):
            if p.exists():
                raise ModelFileError("exported graph exists; pass overwrite=True to replace it",
                                     path=p)
    blob, record = export_graph(model, card)
    _write(blob, record, graph_path, record_path)
    return record_path
