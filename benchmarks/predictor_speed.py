"""CPU throughput of the predictor at batch 256 and 2048, and their ratio, measured in one run.

Usage::

    python benchmarks/predictor_speed.py [MODEL] [--untrained] [--n 4096] [--repeat 3]

MODEL defaults to the model shipped with csstflux; ``--untrained`` builds an untrained UaRA-net
instead (same architecture, so the same speed). Each batch size is warmed up once (tracing and
compilation), then ``n`` spectra are predicted ``repeat`` times; the best time counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")      # CPU numbers, even on a GPU machine

import numpy as np  # noqa: E402

from csstflux.grids import INPUT_GRID  # noqa: E402


def _predictor(model: str | None, untrained: bool, tmp: str):  # type: ignore[no-untyped-def]
    from csstflux.model.card import default_model_path, save_model
    from csstflux.model.predictor import load_predictor

    if untrained:
        from csstflux.model.network import build_uaranet

        save_model(build_uaranet(seed=0), os.path.join(tmp, "untrained.keras"))
        return load_predictor(os.path.join(tmp, "untrained.keras"))
    return load_predictor(model if model is not None else default_model_path())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model archive/card (default: the shipped one)")
    ap.add_argument("--untrained", action="store_true", help="time an untrained network")
    ap.add_argument("--n", type=int, default=4096, help="spectra per timed run")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per batch size")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    flux = (1.0 + 0.02 * rng.standard_normal((args.n, INPUT_GRID.n))).astype(np.float32)
    err = np.full_like(flux, 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = _predictor(args.model, args.untrained, tmp)
        rates = {}
        for batch in (256, 2048):
            predictor(flux[:batch], err[:batch], batch_size=batch)          # warm-up
            best = np.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                predictor(flux, err, batch_size=batch)
                best = min(best, time.perf_counter() - t0)
            rates[batch] = args.n / best
            print(f"batch {batch:5d}: {rates[batch]:8.0f} spectra/s "
                  f"({args.n} spectra in {best:.2f} s, best of {args.repeat})")
    print(f"ratio 2048/256: {rates[2048] / rates[256]:.2f}  ({predictor!r}, "
          f"{os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
