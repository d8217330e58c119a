"""The predict-catalog benchmark runs in its reader-process layout and its job's store is right."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csstflux.io.stores.predictions import open_predictions
from csstflux.pipeline.predict import single_process_predictions

ROOT = Path(__file__).resolve().parents[1]


def benchmark_module():
    spec = importlib.util.spec_from_file_location(
        "bench_predict_catalog", ROOT / "benchmarks" / "predict_catalog.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def documented_pages() -> list[Path]:
    """README, deploy/*.md and the documentation site's pages (not its build folder)."""
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md")
                  if "_build" not in p.relative_to(ROOT / "docs").parts)
    return [ROOT / "README.md", *sorted((ROOT / "deploy").glob("*.md")), *docs]


def documented_runs() -> list[tuple[str, list[str]]]:
    """Arguments of every ``benchmarks/predict_catalog.py`` command in README, deploy/ and
    docs/: whole lines in fenced blocks, inline code spans elsewhere. ``where`` starts with
    the page's path from the repository root."""
    script = "benchmarks/predict_catalog.py"
    runs = []
    for page in documented_pages():
        fenced = False
        for line in page.read_text().splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            commands = [line] if fenced else re.findall(r"`([^`]*)`", line)
            for cmd in (c for c in commands if script in c):
                tokens = shlex.split(cmd)
                starts = [k for k, t in enumerate(tokens) if t.endswith(script)]
                if not starts:
                    continue
                args = []
                for t in tokens[starts[0] + 1:]:
                    if t in ("|", "&&", ";", ">", ">>", "2>&1"):
                        break
                    args.append(t)
                runs.append((f"{page.relative_to(ROOT).as_posix()}: {cmd.strip()[:60]}", args))
    return runs


def test_documented_benchmark_commands_parse() -> None:
    runs = documented_runs()
    assert any("--gpu" in args for _, args in runs), "deploy/gpu.md shows no --gpu run"
    # the CPU throughput measurement of the survey job's page
    assert any("--memory-sizes" in args for where, args in runs
               if where.startswith("docs/operations.md:"))
    ap = benchmark_module().parser()
    for where, args in runs:
        try:
            ap.parse_args(args)
        except SystemExit as exc:
            raise AssertionError(f"{where}: the benchmark refuses {args}") from exc
    with pytest.raises(SystemExit):         # the check itself catches a wrong option
        ap.parse_args(["--gpus"])


@pytest.mark.slow
def test_predict_catalog_benchmark_reader_layout(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "predict_catalog.py"), "--n", "40",
         "--workdir", str(tmp_path), "--read-processes", "1", "--batch-size", "32",
         "--whole-size", "60", "--naive-n", "2", "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout[proc.stdout.index("\n{\n"):])
    a, b, c, d = (res[k] for k in ("a_read", "b_model", "c_whole", "d_naive"))
    assert min(a, b, c, d) > 0
    # (a)'s floor, fitsio reading the data alone on the same reader processes, and the ratio
    assert res["a_floor"] > 0 and res["a_over_floor"] == pytest.approx(a / res["a_floor"])
    assert res["inflater"] in ("isal", "zlib-ng", "zlib") and "(a) / floor" in proc.stdout
    # the model timed with both backends in one run; the job's own is ONNX on this CPU
    assert res["predictor_backend"] == "onnx"
    assert res["b_model"] == res["b_model_onnx"] > 0 and res["b_model_keras"] > 0
    assert res["onnx_over_keras"] == pytest.approx(res["b_model_onnx"] / res["b_model_keras"])
    assert "(b) ONNX / Keras" in proc.stdout
    assert res["workers"] == 1 and res["read_processes"] == 1 and not res["gpu"]
    # one worker and one reader process: on 2 or more cores they share nothing
    if res["cpus"] >= 2:
        assert res["c_ceiling"] == min(a, b)
        # the domain model runs on the worker beside the network's calls
        e = res["e_domain"]
        assert e > 0 and res["c_ceiling_with_domain"] == pytest.approx(
            min(a, 1 / (1 / b + 1 / e)), rel=1e-12)
    assert res["c_over_min_ab"] == pytest.approx(c / min(a, b), rel=1e-12)
    # (c) ran on the 40 files repeated to 60 stars: every star predicted, equal to one process
    ds = open_predictions(tmp_path / "whole.zarr", dask=False)
    assert ds.sizes["star"] == res["whole_n"] == 60
    assert ds.attrs["config"]["read_processes"] == 1 and ds.attrs["config"]["batch_size"] == 32
    files = ds["source_file"].values.tolist()
    rv = ds["rv"].values.astype(float)
    beta = rv / 299792.458
    z = np.where(np.isfinite(rv), np.sqrt((1 + beta) / (1 - beta)) - 1, np.nan)
    sed, err = single_process_predictions(files, z, res["model"], batch_size=8)
    assert (np.isfinite(sed).sum(1) == sed.shape[1] - ds["n_masked_sed"].values).all()
    np.testing.assert_allclose(ds["sed"].values, sed, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ds["sed_err"].values, err, rtol=1e-5, atol=2e-5)


@pytest.mark.slow
def test_predictor_speed_benchmark_prints_both_backends_and_their_ratio(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "predictor_speed.py"), "--n", "64",
         "--repeat", "1", "--batch", "16,32", "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout[proc.stdout.index("\n{\n"):])
    assert min(res["rates"][f"{b}_{n}"] for b in ("keras", "onnx") for n in (16, 32)) > 0
    assert res["onnx_over_keras_16"] == pytest.approx(res["rates"]["onnx_16"]
                                                      / res["rates"]["keras_16"])
    assert res["onnx"]["backend"] == "onnx" and res["onnx"]["intra_op_threads"] == 1
    assert res["max_rel_diff"] <= 1e-5
    assert "ratio onnx/keras at batch 16" in proc.stdout
