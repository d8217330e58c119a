"""ONNX Runtime sessions of an exported UaRA-net: settings, and how close they are to Keras.

:func:`make_session` opens an exported graph (:mod:`csstflux.model.onnx_graph`) on the CPU with
the settings measured below; :class:`~csstflux.model.onnx_predictor.OnnxPredictor` runs it
behind the predictor's own checks. :func:`relative_difference` is the measure of agreement with
Keras used everywhere (export check, tests, benchmarks).

Agreement with Keras
--------------------
:func:`relative_difference` is ``max |onnx − keras| / max(|keras|, FLOOR · m)`` over the
network's raw outputs ``μ`` and ``σ``, ``m`` being the largest ``|keras|`` of the same spectrum
(of its ``μ``, or of its ``σ``) and :data:`FLOOR` = 0.1: relative where a value is at least a
tenth of its spectrum's largest, absolute in those units below. The floor is needed: float32
rounding leaves absolute differences of about 1e-6 of the spectrum's scale whatever the size of
the value (measured for the shipped model, whose ``μ`` is about 1 in the scaling window: 1.4e-6
at most), so the ultraviolet flux of a cool star at ``μ`` ≈ 1e-4 differs by 5e-4 relative but
4e-8 absolute; untrained networks, whose outputs reach 10-40, differ by up to 2e-5 absolute.
The promise for the shipped model, checked by the tests, is :data:`RTOL` = 1e-5; an export
is refused beyond :data:`EXPORT_RTOL` = 1e-4 (ten untrained networks measured 3e-6 to 1.5e-5:
their outputs span more orders of magnitude). Measured for the shipped model: 4.0e-6 on the
emulator's 311 training stars with noise at S/N 10-100 (plainly relative: 4.1e-6 where ``μ`` ≥
0.1, 9.1e-6 where ``μ`` ≥ 0.01), 1.3e-6 on the four real LAMOST LRS files of
``../shared/data/lamost`` (2.5e-6 plainly relative, every value), 2.5e-6 on
:func:`probe_inputs`; Keras differs from itself by 1.9e-6 between batches of 1 and of 256. The
predictor's ``sed`` keeps the same bound, and ``sed_err / |sed|`` (the calibrated ``σ``) too.

Settings, measured
------------------
On the 2-core AMD EPYC development machine (2 MiB L2 per core), ONNX Runtime 1.32.0 and
TensorFlow-CPU 2.21, the shipped model on normalised spectra. Other people's jobs used up to one
of the two cores throughout, so each number is the best of 5-9 runs interleaved with the others
it is compared with, and ranges are over separate sessions; one process, math libraries capped
to one thread as a csstflux Dask worker caps them, unless said otherwise.

=====================================================  ===========================
the network alone, spectra/s                           measured
=====================================================  ===========================
Keras ``predict_on_batch``, batch 256                  4,600-5,400
ONNX Runtime, batch 32 / 64 / 128 / 256                6,100 / 6,250 / 6,100 / 5,700
ONNX Runtime, batch 1,024 / 2,048                      5,000 / 3,200
ONNX Runtime, optimisation basic / extended / all      6,240 / 6,180 / 5,680 (b 64)
ONNX Runtime, 2 intra-op threads (spinning / not)      2,000-7,600 / 3,300-5,500
Keras, TensorFlow's default threads (2), batch 256     4,200-7,200 (1.7 cores busy)
two processes at once (the 2-worker layout), total:
  Keras, 1 thread each                                 4,100 / 7,600-8,300
  ONNX Runtime, 1 thread each                          5,300-5,900 / 9,400-9,500
  ONNX Runtime, 2 threads each                         2,200
=====================================================  ===========================

Through the whole predictor (``benchmarks/predictor_speed.py``: checks, calibration, output
arrays): Keras 4,590/s, ONNX 5,300/s at batch 256 (ratio 1.16), 4,460/s and 5,040/s at 2,048
(1.13); per CPU-second 4,600 and 5,370. Session creation takes 0.02-0.04 s, and ONNX Runtime
has no per-shape tracing (Keras spends about 1 s on each new batch shape). The largest
relative difference between the two was 2.4e-6.

Chosen: optimisation level :data:`GRAPH_OPTIMIZATION` ``"basic"`` (constant folding and
redundant nodes: as fast as ``"extended"``, and the closest to Keras' arithmetic; ``"all"``'s
blocked layouts are slower for 4-16 channels); at most :data:`ONNX_BATCH` = 64 spectra per
call, whatever the caller's batch size (larger batches leave the L2 cache; no padding);
intra-op threads ``$OMP_NUM_THREADS`` where set (a csstflux worker sets 1), else 1: a second
thread only paid off on an idle machine, and two threads per worker on a one-worker-per-core
layout ran 2.7 times slower (with more than one thread, spinning is switched off, which halved
that loss).

The gain over Keras is small, and no CPU backend can make it 3×. On an idle machine
(``benchmarks/predictor_speed.py``): Keras 6,381/s, ONNX Runtime 6,574/s at batch 256 (1.03×),
5,400/s and 6,541/s at 2,048 (1.21×); inside the 2-worker pipeline
(``benchmarks/predict_catalog.py``, (b)) 8,246/s and 8,533/s (1.03×). The 3× once reported was
most likely against Keras on TensorFlow's default thread pool on a contended machine, which
the table above shows can be slow. Both run the same small convolutions near what a core allows:
the network costs 6.46 MFLOP per spectrum (counted on the exported graph: convolutions 5.13,
matrix products 0.66, the rest 0.67), so 6,574 spectra/s is 42 GFLOP/s, 37 % of one core's
float32 matrix-product peak (114 GFLOP/s, numpy, one thread), and 3× Keras would need
124 GFLOP/s, more than that peak; ``predictor_speed.py`` prints this ceiling. OpenVINO 2026.4
(tried, not kept) ran the same graph at 0.68–0.73× ONNX Runtime on one thread.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import ConfigError, ModelFileError
from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.model.predictor import MASKED_ERR, MASKED_FLUX

__all__ = ["OnnxUnavailableError", "BackendWarning", "import_onnxruntime",
           "require_onnxruntime", "make_session",
           "run_session", "session_threads", "relative_difference", "probe_inputs", "RTOL",
           "EXPORT_RTOL", "FLOOR", "GRAPH_OPTIMIZATION", "ONNX_BATCH"]

#: Relative tolerance the ONNX predictor keeps to Keras for the shipped model (see
#: :func:`relative_difference`; checked by the tests on emulated and real spectra).
RTOL: float = 1e-5
#: An exported graph further than this from Keras on :func:`probe_inputs` is refused: a
#: conversion error, not rounding (untrained networks measured 3e-6 to 1.5e-5).
EXPORT_RTOL: float = 1e-4
#: Below this fraction of its spectrum's largest ``|keras|`` a difference counts absolutely.
FLOOR: float = 0.1
#: ONNX Runtime graph optimisation level (measured: module docstring).
GRAPH_OPTIMIZATION: str = "basic"
#: Most spectra per ONNX Runtime call, whatever the caller's batch size (measured: module
#: docstring; larger batches leave the L2 cache).
ONNX_BATCH: int = 64
class OnnxUnavailableError(ModelFileError):
    """The ONNX path cannot run here: ONNX Runtime or the exporter missing, or an export that
    failed or does not match Keras. ``load_predictor(backend="auto")`` falls back to Keras."""


class BackendWarning(UserWarning):
    """The predictor runs with Keras on a CPU machine where ONNX Runtime was expected."""


def import_onnxruntime() -> Any | None:
    """The ``onnxruntime`` module, or None where it does not import."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        return None


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module; :class:`OnnxUnavailableError` where it does not import."""
    ort = import_onnxruntime()
    if ort is None:
        raise OnnxUnavailableError("ONNX Runtime is not installed (pip install onnxruntime)")
    return ort


def relative_difference(got: NDArray[Any], want: NDArray[Any], floor: float = FLOOR) -> float:
    """``max |got − want| / max(|want|, floor · m)``, ``m`` the largest ``|want|`` of the same
    spectrum (along the last axis: per pixel row of a SED, of ``μ`` or of ``σ``).

    Relative where a value is at least ``floor`` of its spectrum's largest one, absolute in
    those units below. 0.0 for empty arrays.
    """
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if g.size == 0:
        return 0.0
    scale = np.max(np.abs(w), axis=-1, keepdims=True)
    return float(np.max(np.abs(g - w) / np.maximum(np.abs(w), floor * scale)))


def probe_inputs(n: int = 16, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Normalised spectra that exercise the network: continua with absorption lines, S/N 20-100,
    and one spectrum with a masked stretch filled by the predictor's convention.

    Returns
    -------
    flux, err : ndarray, float32, (n, 2238)
        On :data:`~csstflux.grids.INPUT_GRID`.
    """
    rng = np.random.default_rng(seed)
    lam = INPUT_GRID.wavelength
    x = (lam - lam.mean()) / np.ptp(lam)
    flux = 1.0 + rng.uniform(-0.2, 0.2, (n, 1)) * x
    for _ in range(12):
        centre = rng.uniform(lam[0], lam[-1], (n, 1))
        depth, width = rng.uniform(0.05, 0.6, (n, 1)), rng.uniform(1.0, 15.0, (n, 1))
        flux = flux * (1.0 - depth * np.exp(-0.5 * ((lam - centre) / width) ** 2))
    err = flux / rng.uniform(20.0, 100.0, (n, 1))
    flux = flux + err * rng.standard_normal(flux.shape)
    flux[-1, 100:400], err[-1, 100:400] = MASKED_FLUX, MASKED_ERR
    return flux.astype(np.float32), err.astype(np.float32)


def _check_io(session: Any, where: str | os.PathLike[str]) -> str:
    """Refuse a graph without inputs ``flux``/``flux_err`` (N, 2238) and output (N, 2, 574);
    return the output's name."""
    inputs = {i.name: list(i.shape) for i in session.get_inputs()}
    outputs = [list(o.shape) for o in session.get_outputs()]
    ok = (set(inputs) == {"flux", "flux_err"} and len(outputs) == 1
          and all(len(s) == 2 and s[1] == INPUT_GRID.n and not isinstance(s[0], int)
                  for s in inputs.values())
          and len(outputs[0]) == 3 and outputs[0][1:] == [2, OUTPUT_GRID.n]
          and not isinstance(outputs[0][0], int))
    if not ok:
        raise ModelFileError("exported graph has not the predictor's inputs and output",
                             path=where, expected=f"flux, flux_err (N, {INPUT_GRID.n}) -> "
                                                  f"(N, 2, {OUTPUT_GRID.n})",
                             found=f"{inputs} -> {outputs}")
    return str(session.get_outputs()[0].name)


def session_threads(threads: int | None) -> int:
    """Intra-op threads: ``threads`` (0: ONNX Runtime's default, one per core), else
    ``$OMP_NUM_THREADS`` where set, else 1 (measured: module docstring)."""
    if threads is not None:
        if threads < 0:
            raise ConfigError("threads must be >= 0 (0: one per core)", found=threads)
        return threads
    with contextlib.suppress(ValueError):
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    return 1


def make_session(data: bytes, threads: int | None = None,
                 where: str | os.PathLike[str] = "<graph>") -> tuple[Any, str, int]:
    """An ONNX Runtime CPU session of a graph, with the measured settings.

    Returns the session, the name of its output and the intra-op threads asked for (0: one per
    core). Raises :class:`OnnxUnavailableError` without ONNX Runtime, and
    :class:`~csstflux.errors.ModelFileError` when the graph does not load or has the wrong
    inputs or output.
    """
    ort = require_onnxruntime()
    n = session_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[GRAPH_OPTIMIZATION]
    if n != 1:                  # spinning threads starve each other on a shared machine
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:     # onnxruntime raises its own exception types
        raise ModelFileError(f"ONNX Runtime cannot load the graph: {exc}", path=where) from exc
    return session, _check_io(session, where), n


def run_session(session: Any, output: str, flux: NDArray[np.float32],
                err: NDArray[np.float32]) -> NDArray[np.float32]:
    """The network's output ``(n, 2, 574)`` for ``flux``, ``err`` ``(n, 2238)`` float32."""
    return np.asarray(session.run([output], {"flux": flux, "flux_err": err})[0])
