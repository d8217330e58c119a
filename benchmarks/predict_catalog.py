"""Speed of ``predict-catalog`` against its parts and a naive loop, with ratios measured in one run.

Usage: ``python benchmarks/predict_catalog.py [--n 2000] [--workdir DIR] [--model PATH]
[--workers N] [--chunk-stars K] [--naive-n 200] [--memory-sizes 10000,100000] [--json]
[--gpu] [--read-processes P] [--batch-size B] [--whole-size N] [--read-only]``.

Spectra per second, on one machine and in one run, for
(a) reading only: the pipeline's per-file path (``tasks._prepare_batch``: ``lamost.read``,
    ``prepare_input``), one Dask task per chunk on the ``LocalCluster`` of (c) (one 1-thread
    worker process per core), after an untimed read per worker; best of two passes, whose
    results stay on the workers. Beside it, in the same passes and the same tasks, its floor:
    ``fitsio.read`` of the same files' data only (no header, no checks, no preparation);
    printed with a / floor (target on CPU: >= 0.6) and the gzip inflater the workers use
    (:mod:`csstflux.io.fits.inflate`). ``--read-only`` stops there;
(b) model only: each worker's predictor (the pipeline's ``PredictorPlugin``, one thread) on
    the arrays (a) left there, batch 256; second of two passes (the first traces shapes);
    timed with each backend, Keras and the ONNX Runtime predictor (each worker loads the one
    its plugin did not; the ratio ONNX / Keras is printed, target on CPU: >= 3), and the
    plugin's own (``auto``: ONNX on CPU, Keras on a GPU) is the (b) used below;
(c) the whole job: ``run_predict`` into a fresh store on that cluster, with the chunk size
    ``predict-catalog`` itself takes for that many stars (``auto_chunk``; ``--chunk-stars``
    overrides it, as it does for (a) and (b)) (plan, store, model load
    and tracing on each worker, performance report, final attributes; not the cluster's start
    nor the workers' imports: ONNX Runtime workers do not import Keras or TensorFlow);
(d) a naive loop here: ``astropy.io.fits.open`` per file, the same ``prepare_input``, one
    ``keras.Model.predict`` call per spectrum (TensorFlow's default threads), first
    ``--naive-n`` files.

Reader-process layout (``--read-processes P``, and ``--gpu``, where P defaults to cores - 1):
the job's GPU layout, one worker (``--gpu``: the ``LocalCUDACluster`` of ``predict-catalog
--gpu``, one worker per GPU) whose ``P`` reader processes read and prepare while it predicts.
Then (a) is the worker's reader processes alone (``tasks._batches``, no model), (b) its
predictor alone on what (a) left there, with the job's call (sub-batches of
``tasks.reader_step`` spectra, every call padded to that one shape; first pass compiles), and
(c) ``run_predict`` with ``read_processes=P`` (two chunk tasks at a time per worker, as
``predict-catalog`` runs this layout). Where the reader processes and each worker's model fit
on their own cores (``--gpu``, or workers x (P + 1) <= cores) the two parts share nothing and
the ceiling printed for (c) is min(a, b). With ``--whole-size N`` (c) runs on a release of
N stars (the built one repeated, as for memory) so that its fixed cost (model load, reader
start, the GPU's compilation of the one shape) is spread as it is in a real release.

(e) the domain model (``csstflux.library.domain``: parameters and novelty numbers from the
    input alone) on the same arrays, as every chunk of the job runs it after the network.

Targets: c >= 0.8 min(a, b) and c >= 10 d. On CPU only, reading and the model share the cores,
so c <= ab/(a+b) (printed; target c >= 0.9 ab/(a+b) at 100,000 stars, ``--whole-size
100000``). The job also runs (e) for every spectrum, so its real ceiling is 1/(1/a + 1/b +
1/e) on the CPU (printed beside it, with the job's fixed cost: what (c) loses to planning,
writing and the tail of the last chunks). Memory (``--memory-sizes``): peak RSS of
the whole job per size, each on a fresh cluster: the sum over this process (client, in-process
scheduler) and its descendants (nannies, workers), sampled every 0.1 s by a psutil thread;
shared library pages count once per process, so the ratio between sizes is what matters
(target: 100,000 / 10,000 <= 1.2; both at 2000 stars per chunk).
Larger releases repeat the built one's files: ``rep-{size}/r{k}`` are symlinks to it and the
catalogue lists each file once per copy with new obsids (same bytes: same work per spectrum,
though the page cache helps reading). The release (no broken files) and the untrained model
(used when no model is shipped or given) are cached in ``--workdir``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _release(workdir: Path, n: int) -> Path:
    """Catalogue of a clean demo release of ``n`` stars, built once under ``workdir``."""
    from csstflux.demo.release import build_demo_release

    root = workdir / f"release-{n}"
    if not (root / "done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        build_demo_release(root, n_stars=n, seed=0, broken=False)
        (root / "done").write_text("")
        print(f"built demo release of {n} stars in {time.perf_counter() - t0:.0f} s: {root}")
    return root / "catalog.csv"


def _repeated(workdir: Path, base_catalog: Path, size: int) -> Path:
    """A catalogue of ``size`` stars whose files are the base release's, repeated."""
    out = workdir / f"rep-{size}"
    if (cat := out / "catalog.csv").is_file():
        return cat
    from csstflux.io.formats import lamost_catalog

    base = lamost_catalog.read(base_catalog, root=base_catalog.parent)
    out.mkdir(parents=True, exist_ok=True)
    root = str(base_catalog.parent.resolve())
    rows = []
    for k in range(math.ceil(size / len(base.obsid))):
        link = out / f"r{k:03d}"
        if not link.exists():
            link.symlink_to(root, target_is_directory=True)
        for i in range(len(base.obsid)):
            if len(rows) == size:
                break
            rel = os.path.relpath(os.path.abspath(base.path[i]), root)
            rows.append([int(base.obsid[i]) + k * 10**9, base.ra[i], base.dec[i], base.snrg[i],
                         base.teff[i], base.logg[i], base.feh[i], base.rv[i], base.class_[i],
                         str(link / rel)])
    with open(cat, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["obsid", "ra", "dec", "snrg", "teff", "logg", "feh", "rv", "class", "path"])
        w.writerows(rows)
    return cat


def _model(workdir: Path, model: str | None) -> str:
    from csstflux.errors import ModelFileError
    from csstflux.model.card import default_model_path

    if model:
        return model
    try:
        return str(default_model_path())
    except ModelFileError:
        path = workdir / "untrained" / "untrained.keras"
        if not path.is_file():
            from csstflux.model.card import save_model
            from csstflux.model.network import build_uaranet

            save_model(build_uaranet(seed=0), path)
        return str(path)


def _read_task(paths: list[str], z: np.ndarray) -> Any:
    from csstflux.pipeline.tasks import _prepare_batch
    return _prepare_batch(paths, z, 0)


def _read_task_readers(paths: list[str], z: np.ndarray, batch_size: int) -> list[Any]:
    """(a) in the reader-process layout: the worker's reader processes, no model."""
    from csstflux.pipeline.tasks import _batches
    from csstflux.pipeline.worker import worker_plugin

    plugin = worker_plugin()
    return list(_batches(paths, z, batch_size, plugin.pool, plugin.readers))


def _data_hdus(paths: list[str]) -> list[int]:
    """The HDU holding each LAMOST file's spectrum: 0 (image layout) or 1 (COADD table)."""
    from csstflux.io.fits.decode import card_value, head_cards

    return [0 if card_value(head_cards(p, max_hdus=1)[0], "NAXIS", int) else 1 for p in paths]


def _floor_task(paths: list[str], hdus: list[int]) -> int:
    """The floor of (a): ``fitsio.read`` of each file's data, no header, nothing else."""
    import fitsio

    for path, hdu in zip(paths, hdus, strict=True):
        fitsio.read(path, ext=hdu)
    return len(paths)


def _floor_task_readers(paths: list[str], hdus: list[int], batch_size: int) -> int:
    """The floor in the reader-process layout: ``fitsio.read`` on the reader processes, in
    sub-batches of the size (a) uses (the data come back, as (a)'s prepared arrays do)."""
    import fitsio

    from csstflux.pipeline.tasks import reader_step
    from csstflux.pipeline.worker import worker_plugin

    plugin = worker_plugin()
    step = reader_step(batch_size, plugin.readers)
    return sum(1 for _ in plugin.pool.map(fitsio.read, paths, hdus, chunksize=step))


def _inflater() -> str:
    from csstflux.io.fits.inflate import INFLATER
    return INFLATER.name


def _backend_predictor(backend: str | None) -> Any:
    """The worker's predictor (``backend`` None or the plugin's), else one with ``backend``
    loaded once per worker beside it (kept on the plugin object)."""
    from csstflux.pipeline.worker import worker_plugin

    plugin = worker_plugin()
    if backend is None or backend == plugin.predictor.backend:
        return plugin.predictor
    extra = plugin.__dict__.setdefault("benchmark_predictors", {})
    if backend not in extra:
        from csstflux.model.predictor import load_predictor

        extra[backend] = load_predictor(plugin.model_path, backend=backend)
    return extra[backend]


def _worker_backend() -> str:
    from csstflux.pipeline.worker import worker_predictor
    return str(worker_predictor().backend)


def _model_task(preps: Any, call: dict[str, Any], backend: str | None = None) -> int:
    """(b): the worker's predictor on prepared arrays, called as the job calls it."""
    predictor = _backend_predictor(backend)
    n = 0
    for prep in preps if isinstance(preps, list) else [preps]:
        if prep.rows.size:
            predictor(prep.flux, prep.err, **call)
            n += int(prep.rows.size)
    return n


def _domain_task(preps: Any) -> int:
    """(e): the domain model's parameters and novelty numbers on prepared arrays, as each
    chunk computes them after the network (``tasks.run_chunk``)."""
    from csstflux.pipeline.tasks import shipped_domain_model

    model = shipped_domain_model()           # loaded once per worker, as the job loads it
    n = 0
    for prep in preps if isinstance(preps, list) else [preps]:
        if prep.rows.size:
            model.flags(model.estimate(prep.flux, prep.err, color=prep.color))
            n += int(prep.rows.size)
    return n


class PeakRSS:
    """Peak of the summed RSS of this process and all its descendants, sampled in a thread;
    beside it each process's own peak (``by_process``: "client" for this one, which holds the
    scheduler too, else the pid), to tell the client's growth from the workers'."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self._proc, self._interval, self.peak = psutil.Process(), interval, 0
        self.by_process: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                rss = p.memory_info().rss
                total += rss
                key = "client" if p.pid == self._proc.pid else str(p.pid)
                self.by_process[key] = max(self.by_process.get(key, 0), rss)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _whole_job(catalog: Path, model: str, out: Path, handle: Any, chunk: int,
               batch_size: int = 256, read_processes: int = 0) -> float:
    from csstflux.pipeline.predict import PredictOptions, run_predict
    opts = PredictOptions(out=str(out), model=model, catalog=str(catalog),
                          root=str(catalog.parent), chunk_stars=chunk, overwrite=True,
                          batch_size=batch_size, read_processes=read_processes)
    t0 = time.perf_counter()
    if run_predict(opts, handle).n_failed:
        print("warning: some files failed in the whole job")
    return time.perf_counter() - t0


def _naive(paths: list[str], model: str) -> float:
    """Seconds per spectrum of the naive loop (astropy per file, one model call each)."""
    import warnings

    from astropy.io import fits

    from csstflux.containers import Resolution
    from csstflux.model.predictor import load_predictor
    from csstflux.spectra.degrade import ResolutionWarning
    from csstflux.spectra.prepare import prepare_input

    predictor = load_predictor(model, backend="keras")

    def one(path: str) -> None:
        with fits.open(path) as hdul:
            hdr = hdul[0].header
            if hdr["NAXIS"] == 0:
                row = hdul["COADD"].data[0]
                flux, ivar, wave, andmask = (np.asarray(row[c], np.float64) for c in
                                             ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK"))
            else:
                flux, ivar, wave, andmask = np.asarray(hdul[0].data[:4], np.float64)
            z = float(hdr.get("Z", 0.0))
        good = np.isfinite(ivar) & (ivar > 0)
        err = np.where(good, 1.0 / np.sqrt(np.where(good, ivar, 1.0)), np.nan)
        mask = ~(good & np.isfinite(flux) & (andmask == 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResolutionWarning)
            f, e, m = prepare_input(wave, flux, err, mask, Resolution(resolving_power=1800.0),
                                    z=z)
        # the plain Keras call a first script would use, one spectrum at a time
        predictor.model.predict({"flux": np.where(m, 1.0, f)[None].astype(np.float32),
                                 "flux_err": np.where(m, 1.0, e)[None].astype(np.float32)},
                                verbose=0)

    one(paths[0])                                           # warm-up: tracing
    t0 = time.perf_counter()
    list(map(one, paths))
    return (time.perf_counter() - t0) / len(paths)


def _cluster(args: argparse.Namespace) -> Any:
    """The cluster of (a)-(c): one GPU worker per GPU, or ``--workers`` CPU workers."""
    from csstflux.pipeline.cluster import ClusterSettings, start_cluster
    settings = (ClusterSettings(cluster="gpu", dashboard_address="127.0.0.1:0") if args.gpu
                else ClusterSettings(workers=args.workers or 0,
                                     dashboard_address="127.0.0.1:0"))
    return start_cluster(settings, readers=args.read_processes > 0)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="stars of the demo release (<= 24000)")
    ap.add_argument("--workdir", help="cache for the release, model and stores (default: temp)")
    ap.add_argument("--model", help="model archive/card (default: shipped, else untrained)")
    ap.add_argument("--workers", type=int,
                    help="CPU workers (default: one per core; 1 with --read-processes)")
    ap.add_argument("--chunk-stars", type=int, help="stars per task (default: 256 k <= 2048)")
    ap.add_argument("--naive-n", type=int, default=200, help="files timed in the naive loop")
    ap.add_argument("--memory-sizes", default="", help="e.g. 10000,100000 (default: skip)")
    ap.add_argument("--gpu", action="store_true",
                    help="the job's GPU layout: dask-cuda worker(s) with reader processes")
    ap.add_argument("--read-processes", type=int,
                    help="reader processes per worker (default: 0; cores - 1 with --gpu)")
    ap.add_argument("--batch-size", type=int,
                    help="spectra per model call (default: 256; 2048 with --gpu)")
    ap.add_argument("--whole-size", type=int, help="stars of (c) (default: --n)")
    ap.add_argument("--read-only", action="store_true",
                    help="(a) and its floor only: no model, no whole job, no naive loop")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    return ap


def _print_read(res: dict[str, Any]) -> None:
    """(a), its floor and their ratio."""
    r = res["a_over_floor"]
    print(f"  {'(a) read + prepare':22s} {res['a_read']:9.1f} spectra/s  (gzip inflater "
          f"{res['inflater']})")
    print(f"  {'    floor':22s} {res['a_floor']:9.1f} spectra/s  (fitsio.read, data only)")
    print(f"  (a) / floor = {r:.2f}  (target >= 0.6 on CPU: {'PASS' if r >= 0.6 else 'FAIL'})")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.gpu:     # CPU numbers, even on a GPU machine (set before any backend import)
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if args.read_processes is None:
        args.read_processes = max(1, (os.cpu_count() or 2) - 1) if args.gpu else 0
    if args.workers is None:
        args.workers = 1 if args.read_processes else (os.cpu_count() or 1)
    batch = args.batch_size or (2048 if args.gpu else 256)
    tmp = tempfile.TemporaryDirectory()                 # used when there is no --workdir
    (workdir := Path(args.workdir or tmp.name)).mkdir(parents=True, exist_ok=True)
    from distributed import wait

    from csstflux.io.formats import lamost_catalog
    from csstflux.pipeline.tasks import reader_step
    from csstflux.pipeline.worker import PredictorPlugin
    catalog = _release(workdir, args.n)
    # (the reader processes of --read-processes belong to the worker's model plugin)
    model = ("" if args.read_only and not args.read_processes
             else str(Path(_model(workdir, args.model)).resolve()))
    cat = lamost_catalog.read(catalog, root=catalog.parent)
    paths, z = [str(p) for p in cat.path], cat.rv / 299792.458
    chunk = args.chunk_stars or 256 * max(1, min(8, args.n // (1024 * args.workers)))
    readers = args.read_processes
    # the job's model call: in the reader layout one shape, every call padded to it
    call: dict[str, Any] = ({"batch_size": reader_step(batch, readers), "pad_to_batch": True}
                            if readers else {"batch_size": batch})
    res: dict[str, Any] = {"n": args.n, "workers": args.workers, "chunk_stars": chunk,
                           "cpus": os.cpu_count(), "model": model, "gpu": args.gpu,
                           "read_processes": readers, "batch_size": batch,
                           "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow")}

    mem: dict[str, float] = {}
    sizes = [] if args.read_only else [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    for size in sizes:
        big = _repeated(workdir, catalog, size)
        handle = _cluster(args)
        try:
            with PeakRSS() as peak:
                dt = _whole_job(big, model, workdir / f"mem-{size}.zarr", handle, 2000, batch,
                                readers)
        finally:
            handle.close()
        mem[str(size)] = peak.peak / 2**20
        procs = {k: v / 2**20 for k, v in peak.by_process.items() if v > 64 * 2**20}
        res.setdefault("peak_rss_by_process_mib", {})[str(size)] = procs
        others = sorted(v for k, v in procs.items() if k != "client")
        print(f"memory: {size:7d} spectra: peak RSS {mem[str(size)]:8.0f} MiB "
              f"({size / dt:.0f} spectra/s, chunk 2000); each process's own peak: client "
              f"{procs.get('client', 0):.0f}, others {', '.join(f'{v:.0f}' for v in others)} MiB")
    res["peak_rss_mib"] = mem
    handle = _cluster(args)
    try:
        client = handle.client
        groups = [(paths[i:i + chunk], z[i:i + chunk]) for i in range(0, len(paths), chunk)]
        if readers:          # the reader processes belong to the plugin: register it first
            client.register_plugin(PredictorPlugin(model, readers=readers),
                                   name="csstflux-predictor")
            client.submit(_read_task_readers, paths[:2], z[:2], batch, pure=False).result()
        else:
            client.run(_read_task, paths[:2], z[:2])             # warm-up: imports
        hdus = _data_hdus(paths)
        floor_groups = [(paths[i:i + chunk], hdus[i:i + chunk]) for i in range(0, len(paths),
                                                                                  chunk)]
        best, best_floor = np.inf, np.inf
        for _ in range(2):                                   # best of two (shared machines)
            t0 = time.perf_counter()
            wait([client.submit(_floor_task_readers, p, h, batch, pure=False) if readers
                  else client.submit(_floor_task, p, h, pure=False) for p, h in floor_groups])
            best_floor = min(best_floor, time.perf_counter() - t0)
            t0 = time.perf_counter()
            preps = [client.submit(_read_task_readers, p, zz, batch, pure=False) if readers
                     else client.submit(_read_task, p, zz, pure=False) for p, zz in groups]
            wait(preps)
            best = min(best, time.perf_counter() - t0)
        res["a_read"], res["a_floor"] = args.n / best, args.n / best_floor
        res["a_over_floor"] = res["a_read"] / res["a_floor"]
        res["inflater"] = client.submit(_inflater, pure=False).result()
        if args.read_only:
            print(f"\n{args.n} spectra, {args.workers} worker(s), {readers} reader processes, "
                  f"chunk {chunk}, {os.cpu_count()} CPUs")
            _print_read(res)
            if args.json:
                print(json.dumps(res, indent=2))
            tmp.cleanup()
            return 0

        if not readers:
            client.register_plugin(PredictorPlugin(model), name="csstflux-predictor")
        res["predictor_backend"] = client.submit(_worker_backend, pure=False).result()
        for backend in (("keras",) if args.gpu else ("keras", "onnx")):
            for _ in range(2):                               # first pass: tracing, compiling
                t0 = time.perf_counter()
                counts = client.gather([client.submit(_model_task, f, call, backend,
                                                      pure=False) for f in preps])
            res[f"b_model_{backend}"] = sum(counts) / (time.perf_counter() - t0)
        res["b_model"] = res[f"b_model_{res['predictor_backend']}"]
        if "b_model_onnx" in res:
            res["onnx_over_keras"] = res["b_model_onnx"] / res["b_model_keras"]
        for _ in range(2):                                   # first pass: loading the model
            t0 = time.perf_counter()
            counts = client.gather([client.submit(_domain_task, f, pure=False) for f in preps])
        res["e_domain"] = sum(counts) / (time.perf_counter() - t0)
        del preps
        whole_n = args.whole_size or args.n
        whole_cat = catalog if whole_n == args.n else _repeated(workdir, catalog, whole_n)
        # the job's own chunk size for a release of this size, as predict-catalog picks it
        from csstflux.pipeline.predict import auto_chunk
        whole_chunk = args.chunk_stars or auto_chunk(whole_n)
        dt = _whole_job(whole_cat, model, workdir / "whole.zarr", handle, whole_chunk, batch,
                        readers)
        res["whole_n"], res["c_whole"], res["whole_chunk_stars"] = whole_n, whole_n / dt, \
            whole_chunk
    finally:
        handle.close()
    res["d_naive"] = 1.0 / _naive(paths[:args.naive_n], model)

    a, b, c, d = (float(res[k]) for k in ("a_read", "b_model", "c_whole", "d_naive"))
    res["c_over_min_ab"], res["c_over_d"] = c / min(a, b), c / d
    layout = (f"{'1 GPU worker' if args.gpu else f'{args.workers} worker(s)'} with {readers} "
              "reader processes" if readers else f"{args.workers} workers x 1 thread")
    print(f"\n{args.n} spectra ((c): {res['whole_n']}, chunk {res['whole_chunk_stars']}), "
          f"{layout}, chunk {chunk}, batch "
          f"{call['batch_size']}, {os.cpu_count()} CPUs, {res['keras_backend']}; "
          f"model {Path(model).name}, predictor backend {res['predictor_backend']}")
    _print_read(res)
    for key, label in (("b_model_keras", "(b) model, Keras"), ("b_model_onnx", "(b) model, ONNX"),
                       ("e_domain", "(e) domain estimate"), ("c_whole", "(c) whole job"),
                       ("d_naive", "(d) naive loop")):
        if key in res:
            print(f"  {label:22s} {res[key]:9.1f} spectra/s")
    if "onnx_over_keras" in res:
        r = res["onnx_over_keras"]
        print(f"  (b) ONNX / Keras = {r:.2f}  (target >= 3 on CPU: {'PASS' if r >= 3 else 'FAIL'})")
    if args.gpu:     # readers on the CPU cores, the model on the GPU: nothing shared
        ceiling, how = min(a, b), "min(a, b) (reading on CPUs, model on the GPU)"
    elif readers and args.workers * (readers + 1) <= (os.cpu_count() or 1):
        ceiling, how = min(a, b), "min(a, b) (reader processes and models on their own cores)"
    else:            # read and model sharing the same cores, no idle time
        ceiling, how = a * b / (a + b), "ab/(a+b) (reading and model share the cores)"
    res["c_ceiling"] = ceiling
    whole_n = res["whole_n"]
    res["c_over_ceiling"] = c / ceiling
    print(f"  ceiling {how} {ceiling:9.1f} spectra/s (c reaches {c / ceiling:.2f} of it, "
          f"target >= 0.9 at 100,000 stars: {'PASS' if c >= 0.9 * ceiling else 'FAIL'})")
    # every chunk also runs the domain model (parameters, novelty) after the network: on the
    # CPU it shares the cores with both, on a GPU worker it runs beside the model's calls
    e = float(res["e_domain"])
    full = (min(a, 1 / (1 / b + 1 / e)) if (args.gpu or readers and
                                             args.workers * (readers + 1) <= (os.cpu_count() or 1))
            else 1 / (1 / a + 1 / b + 1 / e))
    res["c_ceiling_with_domain"], res["c_over_ceiling_with_domain"] = full, c / full
    fixed = whole_n / c - whole_n / full
    print(f"  ceiling with (e), the job's whole per-spectrum work {full:9.1f} spectra/s (c "
          f"reaches {c / full:.2f} of it); fixed cost of (c) ~ {fixed:.1f} s")
    ok1, ok2 = c >= 0.8 * min(a, b), c >= 10 * d
    print(f"  c / min(a, b) = {c / min(a, b):.2f}  (target >= 0.8: {'PASS' if ok1 else 'FAIL'})")
    print(f"  c / d         = {c / d:.1f}  (target >= 10: {'PASS' if ok2 else 'FAIL'})")
    sizes = sorted(mem, key=int)
    for lo, hi in zip(sizes, sizes[1:], strict=False):     # each size against the next smaller
        r = mem[hi] / mem[lo]
        res[f"memory_ratio_{hi}_{lo}"] = r
        per_star = (mem[hi] - mem[lo]) * 2**20 / (int(hi) - int(lo))
        verdict = (f"  (target <= 1.2: {'PASS' if r <= 1.2 else 'FAIL'})"
                   if (int(hi), int(lo)) == (100000, 10000) else "")
        print(f"  peak RSS {hi} / {lo} = {r:.2f}, {per_star:.0f} bytes per added star{verdict}")
    if args.json:
        print(json.dumps(res, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
