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
    if args.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
