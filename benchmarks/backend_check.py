"""The shipped model on another Keras backend or device: agreement with a reference, and speed.

Usage::

    # on the reference machine (TensorFlow, CPU): write the reference outputs
    python benchmarks/backend_check.py --write-reference ref.npz
    # anywhere else, e.g. a GPU machine with KERAS_BACKEND=jax or torch
    KERAS_BACKEND=jax python benchmarks/backend_check.py --reference ref.npz

Inputs are emulated LAMOST-like spectra (the package's compact input emulator at seeded
stellar parameters, with eq.-(1) noise), so the comparison covers the model's real operating
range. The report gives the largest relative difference of ``sed`` and ``sed_err`` against the
reference, and spectra per second at several batch sizes on the backend's default device
(each batch size warmed up once, best of ``--repeat``), all in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from csstflux.library.emulator import load_emulator

    rng = np.random.default_rng(seed)
    emu = load_emulator()
    teff = rng.uniform(5200, 9500, n)
    logg = rng.uniform(3.0, 4.8, n)
    feh = rng.uniform(-1.5, 0.3, n)
    flux, _, _ = emu(teff, logg, feh)
    snr = rng.uniform(20, 80, n)[:, None]
    err = np.abs(flux) / snr
    flux = flux + err * rng.standard_normal(flux.shape)
    return flux.astype(np.float32), err.astype(np.float32)


def _device() -> str:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return f"jax {jax.devices()[0].device_kind}"
        if backend == "torch":
            import torch

            return ("torch " + torch.cuda.get_device_name(0)) if torch.cuda.is_available() \
                else "torch cpu"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return "tensorflow " + ("gpu" if gpus else "cpu")
    except Exception as exc:  # noqa: BLE001 - report only
        return f"{backend} ({exc})"
    return backend


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-reference", metavar="NPZ", help="write reference outputs here")
    ap.add_argument("--reference", metavar="NPZ", help="compare against these outputs")
    ap.add_argument("--n", type=int, default=512, help="spectra in the agreement test")
    ap.add_argument("--speed-n", type=int, default=16384, help="spectra per timed run")
    ap.add_argument("--batches", default="256,2048,8192", help="batch sizes to time")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = ap.parse_args(argv)

    from csstflux.model.card import default_model_path
    from csstflux.model.predictor import load_predictor

    predictor = load_predictor(default_model_path())
    flux, err = _inputs(args.n)
    sed, sed_err = predictor(flux, err, batch_size=256)
    report: dict[str, object] = {"device": _device(), "model": predictor.card.model_id,
                                 "n_agreement": args.n}
    print(f"device: {report['device']}; model {predictor!r}")
    if args.write_reference:
        np.savez(args.write_reference, flux=flux, err=err, sed=sed, sed_err=sed_err)
        print(f"reference written: {args.write_reference}")
    if args.reference:
        ref = np.load(args.reference)
        if not (np.array_equal(ref["flux"], flux) and np.array_equal(ref["err"], err)):
            print("inputs differ from the reference's: not comparable", file=sys.stderr)
            return 1
        d_sed = float(np.max(np.abs(sed - ref["sed"]) / np.abs(ref["sed"])))
        d_err = float(np.max(np.abs(sed_err - ref["sed_err"]) / np.abs(ref["sed_err"])))
        report.update(max_rel_diff_sed=d_sed, max_rel_diff_sed_err=d_err)
        print(f"agreement with the reference over {args.n} spectra x 574 pixels: "
              f"max |Δsed|/sed = {d_sed:.2e}, max |Δσ|/σ = {d_err:.2e}")
    rng = np.random.default_rng(1)
    idx = rng.integers(0, args.n, args.speed_n)
    fx, ex = flux[idx], err[idx]
    rates = {}
    for b in (int(s) for s in args.batches.split(",")):
        predictor(fx[:b], ex[:b], batch_size=b)               # warm-up: tracing, compilation
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            predictor(fx, ex, batch_size=b)
            best = min(best, time.perf_counter() - t0)
        rates[b] = args.speed_n / best
        print(f"batch {b:5d}: {rates[b]:9.0f} spectra/s ({args.speed_n} in {best:.3f} s)")
    report["spectra_per_s"] = rates
    report["cpus"] = os.cpu_count()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
