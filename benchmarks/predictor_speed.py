"""CPU throughput of the predictor with Keras and with ONNX Runtime, and their ratio, in one run.

Usage::

    python benchmarks/predictor_speed.py [MODEL] [--untrained] [--n 4096] [--repeat 5]
                                         [--batch 256,2048] [--threads 1] [--json]

MODEL defaults to the model shipped with csstflux (its ONNX graph is shipped beside it);
``--untrained`` builds an untrained UaRA-net instead (same architecture, so the same speed; its
graph is exported into a temporary cache first). ``--threads T`` caps the math libraries'
threads before anything imports them, as a csstflux Dask worker does (T = 1, the default: one
worker per core); ``--threads 0`` leaves every library its own default (one process using the
whole machine).

Each (backend, batch size) is warmed up once (Keras traces each shape), then the timed runs of
``n`` spectra are interleaved, every backend once per repeat, so that a busy neighbour slows
both alike; the best time counts. Printed: spectra per second and per CPU-second, the ratio
ONNX / Keras per batch size (target on 2 cores: >= 3 at batch 256), the ratio 2048/256 per
backend, and the largest relative difference between the two backends' outputs
(``csstflux.model.onnx_session.relative_difference``, promise 1e-5).

The ceiling (needs the ``onnx`` package, ``pip install 'csstflux[onnx-export]'``): the
network's floating-point operations per spectrum, counted on the exported graph (2 per
multiply-add of every convolution and matrix product, 1 per output element of the other
nodes), against this machine's single-threaded float32 matrix product (numpy, 1024², one
thread) as the most a core can do. Printed: the GFLOP/s each backend reaches per CPU-second,
its fraction of that peak, and the rate per core the 3x target would need in GFLOP/s: a
ratio above 1 there means the target asks for more than the core's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")      # CPU numbers, even on a GPU machine

import numpy as np  # noqa: E402

from csstflux.grids import INPUT_GRID  # noqa: E402

#: Variables a csstflux Dask worker caps (``csstflux.pipeline.worker.THREAD_VARS``, repeated
#: here so that setting them does not import Dask first).
THREAD_VARS = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BACKENDS = ("keras", "onnx")


def _predictors(model: str | None, untrained: bool, tmp: str) -> dict[str, Any]:
    from csstflux.model.card import default_model_path, save_model
    from csstflux.model.predictor import load_predictor

    if untrained:
        from csstflux.model.network import build_uaranet

        model = os.path.join(tmp, "untrained.keras")
        save_model(build_uaranet(seed=0), model)
    path = model if model is not None else default_model_path()
    return {b: load_predictor(path, backend=b, cache_dir=os.path.join(tmp, "cache"))
            for b in BACKENDS}


def graph_flops(graph: bytes) -> dict[str, float]:
    """Floating-point operations per spectrum of an exported graph, by kind of node."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load_from_string(graph)
    for inp in model.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = 1            # one spectrum
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output, *model.graph.input)}
    weights = {w.name: numpy_helper.to_array(w).shape for w in model.graph.initializer}
    flops = {"conv": 0.0, "matmul": 0.0, "other": 0.0}
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out:
            continue
        if node.op_type == "Conv" and node.input[1] in weights:
            flops["conv"] += 2.0 * np.prod(out) * np.prod(weights[node.input[1]][1:])
        elif node.op_type in ("MatMul", "Gemm"):
            w = weights.get(node.input[1]) or shapes.get(node.input[1])
            flops["matmul"] += 2.0 * np.prod(out) * (w[-2] if node.op_type == "MatMul" else w[0])
        else:
            flops["other"] += float(np.prod(out))
    return flops


def sgemm_peak() -> float:
    """GFLOP/s of a single-threaded float32 1024² matrix product (numpy), best of 5."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    best = np.inf
    with threadpool_limits(1):
        a @ a
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best / 1e9


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model archive/card (default: the shipped one)")
    ap.add_argument("--untrained", action="store_true", help="time an untrained network")
    ap.add_argument("--n", type=int, default=4096, help="spectra per timed run")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per backend and batch")
    ap.add_argument("--batch", default="256,2048", help="batch sizes, comma-separated")
    ap.add_argument("--threads", type=int, default=1,
                    help="math-library threads per process (0: the libraries' defaults)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads > 0:                    # before TensorFlow or ONNX Runtime is imported
        for var in THREAD_VARS:
            os.environ[var] = str(args.threads)
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    rng = np.random.default_rng(0)
    flux = (1.0 + 0.02 * rng.standard_normal((args.n, INPUT_GRID.n))).astype(np.float32)
    err = np.full_like(flux, 0.02)
    from csstflux.model.onnx_session import relative_difference

    wall: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        predictors = _predictors(args.model, args.untrained, tmp)
        for b in BACKENDS:
            for batch in batches:
                predictors[b](flux[:batch], err[:batch], batch_size=batch)      # warm-up
                wall[b, batch] = cpu[b, batch] = np.inf
        for _ in range(args.repeat):
            for batch in batches:
                for b in BACKENDS:
                    t0, c0 = time.perf_counter(), time.process_time()
                    predictors[b](flux, err, batch_size=batch)
                    wall[b, batch] = min(wall[b, batch], time.perf_counter() - t0)
                    cpu[b, batch] = min(cpu[b, batch], time.process_time() - c0)
        k, o = predictors["keras"], predictors["onnx"]
        diff = relative_difference(o._predict(flux[:512], err[:512], 256),
                                   k._predict(flux[:512], err[:512], 256))
        onnx_info = o.provenance
    res: dict[str, Any] = {"n": args.n, "threads": args.threads, "cpus": os.cpu_count(),
                           "max_rel_diff": diff, "onnx": onnx_info, "rates": {}}
    print(f"{args.n} spectra, best of {args.repeat}, {os.cpu_count()} CPUs, threads "
          f"{args.threads or 'library defaults'}; ONNX Runtime {onnx_info['onnxruntime']} "
          f"({onnx_info['intra_op_threads'] or 'default'} intra-op threads, "
          f"{onnx_info['graph_optimization']}), {k!r}")
    for batch in batches:
        for b in BACKENDS:
            rate, per_cpu = args.n / wall[b, batch], args.n / cpu[b, batch]
            res["rates"][f"{b}_{batch}"] = rate
            print(f"  {b:5s} batch {batch:5d}: {rate:8.0f} spectra/s  {per_cpu:8.0f} per CPU-s")
    for batch in batches:
        r = wall["keras", batch] / wall["onnx", batch]
        res[f"onnx_over_keras_{batch}"] = r
        verdict = f" (target >= 3: {'PASS' if r >= 3 else 'FAIL'})" if batch == 256 else ""
        print(f"ratio onnx/keras at batch {batch}: {r:.2f}{verdict}")
    if len(batches) >= 2:
        lo, hi = batches[0], batches[-1]
        for b in BACKENDS:
            print(f"ratio {hi}/{lo} ({b}): {wall[b, lo] / wall[b, hi]:.2f}")
    print(f"max relative difference onnx vs keras: {diff:.1e} (promise 1e-5)")
    try:
        from csstflux.model.onnx_graph import read_graph

        flops = graph_flops(read_graph(o.graph_path, o.record.source_sha256)[0])
    except ImportError:
        print("ceiling: not measured (pip install 'csstflux[onnx-export]' for the onnx package)")
    else:
        per = sum(flops.values())
        peak = sgemm_peak()
        res["mflop_per_spectrum"], res["sgemm_gflops_1thread"] = per / 1e6, peak
        print(f"ceiling: {per / 1e6:.2f} MFLOP per spectrum (convolutions "
              f"{flops['conv'] / 1e6:.2f}, matrix products {flops['matmul'] / 1e6:.2f}, other "
              f"{flops['other'] / 1e6:.2f}); one core's float32 matrix product: "
              f"{peak:.0f} GFLOP/s")
        lo = batches[0]
        for b in BACKENDS:
            g = per * args.n / cpu[b, lo] / 1e9
            print(f"  {b:5s} batch {lo}: {g:5.1f} GFLOP/s per CPU-second, {g / peak:.2f} of it")
        need = 3 * per * args.n / cpu["keras", lo] / 1e9
        res["gflops_needed_for_3x"] = need
        print(f"  3x Keras would need {need:.0f} GFLOP/s per CPU-second: {need / peak:.2f} of "
              "the core's peak")
    if args.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
