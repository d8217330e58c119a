"""The ONNX Runtime predictor equals the Keras one, falls back cleanly, and refuses a graph
exported from another model.

Tolerance for the shipped model: ``relative_difference(onnx, keras) <= RTOL`` = 1e-5, i.e.
``|onnx − keras| <= 1e-5 · max(|keras|, 0.1 m)`` with ``m`` the spectrum's largest
``|keras|``: relative where a value is at least a tenth of its spectrum's largest, absolute in
those units below (float32 rounding leaves ~1e-6 of the spectrum's scale; see
:mod:`csstflux.model.onnx_session`). It is applied to the raw outputs ``(μ, σ)``, to ``sed``
and to ``sed_err / |sed|`` (the calibrated σ). For an untrained network, whose outputs span
more orders of magnitude, the export's own bound EXPORT_RTOL = 1e-4.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from csstflux import grids
from csstflux.errors import ConfigError, ModelFileError
from csstflux.io.stores.arrays import file_sha256
from csstflux.model import onnx_graph as og
from csstflux.model import onnx_session as ss
from csstflux.model import predictor as predictor_module
from csstflux.model.card import default_model_path, read_card, save_model
from csstflux.model.network import build_uaranet
from csstflux.model.predictor import Predictor, load_predictor

pytestmark = pytest.mark.skipif(ss.import_onnxruntime() is None,
                                reason="onnxruntime not installed")

N_IN = grids.INPUT_GRID.n
LAMOST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lamost"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Exported graphs go to this test's folder, never to the user's cache."""
    monkeypatch.setenv("CSSTFLUX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(predictor_module, "accelerator_visible", lambda: False)


@pytest.fixture(scope="module")
def shipped():
    """The shipped model with both backends (the shipped graph: no export)."""
    path = default_model_path()
    return (load_predictor(path, backend="onnx", cache_dir="/nonexistent"),
            load_predictor(path, backend="keras"))


def assert_same(onnx: Predictor, keras: Predictor, flux, err,
                rtol: float = ss.RTOL) -> dict[str, float]:
    """ONNX and Keras agree within rtol on (μ, σ), sed and sed_err/|sed|; the differences."""
    flux, err = np.asarray(flux, np.float32), np.asarray(err, np.float32)
    diff = {"raw": ss.relative_difference(onnx._predict(flux, err, 256),
                                          keras._predict(flux, err, 256))}
    (so, eo), (sk, ek) = onnx(flux, err), keras(flux, err)
    diff["sed"] = ss.relative_difference(so, sk)
    diff["sigma"] = ss.relative_difference(eo / np.abs(so), ek / np.abs(sk))
    assert max(diff.values()) <= rtol, diff
    return diff


def emulated_spectra(n: int | None = None, seed: int = 1):
    """The emulator's training stars as normalised LAMOST-like spectra, noise at S/N 10-100."""
    from csstflux.library.emulator import load_emulator

    emu = load_emulator()
    x = emu.gp.x_train * emu.gp.x_scale + emu.gp.x_mean
    x = x[:n]
    flux, ok, _ = emu(x[:, 0], x[:, 1], x[:, 2])
    flux = flux[ok]
    rng = np.random.default_rng(seed)
    err = np.abs(flux) / rng.uniform(10.0, 100.0, (len(flux), 1))
    return flux + err * rng.standard_normal(flux.shape), err


def test_shipped_graph_was_exported_from_the_shipped_archive():
    archive = default_model_path()
    card, _, _ = read_card(archive)
    record_path = archive.with_name(archive.stem + og.RECORD_SUFFIX)
    record = json.loads(record_path.read_text())
    assert record["source_sha256"] == card.archive_sha256 == file_sha256(archive)
    assert record["graph_sha256"] == file_sha256(archive.with_suffix(".onnx"))
    assert record["max_rel_diff"] <= ss.RTOL
    blob, rec = og.read_graph(record_path, card.archive_sha256)
    assert rec.source_model_id == card.model_id and len(blob) > 100_000


def test_auto_runs_the_shipped_model_with_onnx(shipped):
    pred = load_predictor(default_model_path())
    assert pred.backend == "onnx" and isinstance(pred, Predictor)
    prov = pred.provenance
    assert prov["backend"] == "onnx" and prov["graph_source_sha256"] == pred.sha256
    assert prov["graph_optimization"] == ss.GRAPH_OPTIMIZATION
    assert shipped[1].backend == shipped[1].provenance["backend"] == "keras"
    assert "backend='onnx'" in repr(pred)


def test_onnx_equals_keras_on_emulated_spectra(shipped):
    flux, err = emulated_spectra()
    assert len(flux) > 300
    assert_same(*shipped, flux, err)


@pytest.mark.skipif(not LAMOST.is_dir(), reason="needs ../shared/data/lamost")
def test_onnx_equals_keras_on_real_lamost_files(shipped):
    """The real files, prepared as the pipeline prepares them (the medium-resolution file is
    refused by the reader and left out)."""
    from csstflux.pipeline.tasks import _prepare_batch

    paths = sorted(str(p) for p in LAMOST.iterdir())
    batch = _prepare_batch(paths, np.full(len(paths), np.nan), 0)
    assert batch.rows.size >= 3
    assert_same(*shipped, batch.flux, batch.err)


def test_one_spectrum_equals_a_batch_and_padding_is_not_needed(shipped):
    onnx, _ = shipped
    flux, err = ss.probe_inputs(11, seed=3)
    sed, sed_err = onnx(flux, err, batch_size=4)
    for i in (0, 5, 10):
        s1, e1 = onnx(flux[i], err[i])
        assert ss.relative_difference(s1, sed[i]) <= ss.RTOL
        assert ss.relative_difference(e1 / np.abs(s1), sed_err[i] / np.abs(sed[i])) <= ss.RTOL
    padded = onnx(flux, err, batch_size=8, pad_to_batch=True)
    np.testing.assert_array_equal(padded[0][:8], onnx(flux[:8], err[:8], batch_size=8)[0])


def test_user_model_is_exported_once_into_the_cache(tmp_path, monkeypatch):
    model_path = tmp_path / "m.keras"
    save_model(build_uaranet(seed=5), model_path,
               calibration={"sigma_scale": np.linspace(1.0, 2.0, grids.OUTPUT_GRID.n)})
    card, _, _ = read_card(model_path)
    pred = load_predictor(model_path)
    assert pred.backend == "onnx"
    record = tmp_path / "cache" / "onnx" / f"{card.archive_sha256}{og.RECORD_SUFFIX}"
    assert pred.graph_path == record and record.is_file()
    assert pred.record.source_sha256 == card.archive_sha256
    assert pred.record.max_rel_diff <= ss.EXPORT_RTOL
    assert (record.parent / pred.record.graph).is_file()
    keras_pred = load_predictor(model_path, backend="keras")
    flux, err = ss.probe_inputs(24, seed=7)
    assert_same(pred, keras_pred, flux, err, rtol=ss.EXPORT_RTOL)   # untrained: see module
    # the second load finds the cached graph: no export
    monkeypatch.setattr(og, "export_graph", lambda *a, **k: pytest.fail("exported again"))
    again = load_predictor(model_path, backend="onnx")
    assert again.record == pred.record
    np.testing.assert_array_equal(again(flux, err)[0], pred(flux, err)[0])
    # the Keras reference network is at hand, loaded on demand
    assert again.model.count_params() == keras_pred.model.count_params()

    # another process exporting the same model: this one waits for its graph, no export
    saved = record.read_bytes()
    record.unlink()
    lock = record.parent / f"{card.archive_sha256}.exporting"
    lock.touch()

    def other_process_finishes():
        record.write_bytes(saved)
        lock.unlink()

    timer = threading.Timer(1.0, other_process_finishes)
    timer.start()
    try:
        waited = load_predictor(model_path, backend="onnx")
    finally:
        timer.join()
    assert waited.record == pred.record and not lock.exists()


def test_a_stale_export_lock_is_taken_over(tmp_path):
    lock = tmp_path / "x.exporting"
    lock.touch()
    old = lock.stat().st_mtime - og.EXPORT_WAIT - 10
    os.utime(lock, (old, old))
    assert og._take_export_lock(lock) and lock.stat().st_mtime > old


def test_graph_of_another_model_is_refused(tmp_path):
    """The shipped graph put beside another archive, and a cache record naming another
    archive: refused with both checksums, in every backend mode but "keras"."""
    other = tmp_path / "other.keras"
    save_model(build_uaranet(seed=6), other)
    card, _, _ = read_card(other)
    shipped = default_model_path()
    shipped_sha = read_card(shipped)[0].archive_sha256
    shutil.copy(shipped.with_suffix(".onnx"), tmp_path / "uaranet-default.onnx")
    shutil.copy(shipped.with_name(shipped.stem + og.RECORD_SUFFIX),
                tmp_path / f"other{og.RECORD_SUFFIX}")
    for backend in ("auto", "onnx"):
        with pytest.raises(ModelFileError, match="another model archive") as info:
            load_predictor(other, backend=backend)
        assert shipped_sha in str(info.value) and card.archive_sha256 in str(info.value)
    assert load_predictor(other, backend="keras").backend == "keras"

    (tmp_path / f"other{og.RECORD_SUFFIX}").unlink()
    cache = tmp_path / "cache" / "onnx"
    cache.mkdir(parents=True)
    shutil.copy(shipped.with_suffix(".onnx"), cache / "uaranet-default.onnx")
    shutil.copy(shipped.with_name(shipped.stem + og.RECORD_SUFFIX),
                cache / f"{card.archive_sha256}{og.RECORD_SUFFIX}")
    with pytest.raises(ModelFileError, match=shipped_sha):
        load_predictor(other)


def test_a_cache_entry_without_its_graph_counts_as_none(tmp_path):
    save_model(build_uaranet(seed=6), tmp_path / "m.keras")
    card, _, archive = read_card(tmp_path / "m.keras")
    cache = tmp_path / "cache"
    record = og.GraphRecord(graph="gone.onnx", graph_sha256="0" * 64,
                            source_sha256=card.archive_sha256, source_model_id=card.model_id,
                            exporter="test", opset=15, onnxruntime="0", max_rel_diff=0.0,
                            created="2026-01-01T00:00:00+00:00")
    (cache / "onnx").mkdir(parents=True)
    (cache / "onnx" / f"{card.archive_sha256}{og.RECORD_SUFFIX}").write_text(record.to_json())
    assert og.find_graph(card, archive, cache) is None
    # beside the archive the same is an error: a shipped graph must be there
    (tmp_path / f"m{og.RECORD_SUFFIX}").write_text(record.to_json())
    with pytest.raises(ModelFileError, match="missing"):
        og.find_graph(card, archive, cache)


def test_tampered_graph_is_refused(tmp_path):
    shipped = default_model_path()
    for p in (shipped, shipped.with_suffix(".json"), shipped.with_suffix(".onnx"),
              shipped.with_name(shipped.stem + og.RECORD_SUFFIX)):
        shutil.copy(p, tmp_path / p.name)
    graph = tmp_path / "uaranet-default.onnx"
    blob = bytearray(graph.read_bytes())
    blob[-1] ^= 0xFF
    graph.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="does not match its record"):
        load_predictor(tmp_path / "uaranet-default.keras")


def test_falls_back_to_keras_without_onnxruntime(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)       # import fails
    assert ss.import_onnxruntime() is None
    with pytest.warns(ss.BackendWarning, match="ONNX Runtime is not installed"):
        pred = load_predictor(default_model_path())
    assert pred.backend == "keras" and type(pred) is Predictor
    flux, err = ss.probe_inputs(3)
    sed, sed_err = pred(flux, err)
    assert sed.shape == sed_err.shape == (3, grids.OUTPUT_GRID.n)
    with pytest.raises(ss.OnnxUnavailableError, match="not installed"):
        load_predictor(default_model_path(), backend="onnx")


def test_falls_back_to_keras_where_the_graph_cannot_be_exported(tmp_path, monkeypatch):
    save_model(build_uaranet(seed=8), tmp_path / "m.keras")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)            # exporter missing
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    with pytest.warns(ss.BackendWarning, match="needs (tf2onnx|jax2onnx)"):
        pred = load_predictor(tmp_path / "m.keras")
    assert pred.backend == "keras"
    with pytest.raises(ss.OnnxUnavailableError):
        load_predictor(tmp_path / "m.keras", backend="onnx")
    assert not (tmp_path / "cache" / "onnx").exists()


def test_a_visible_accelerator_keeps_keras(monkeypatch):
    monkeypatch.setattr(predictor_module, "accelerator_visible", lambda: True)
    assert load_predictor(default_model_path()).backend == "keras"
    assert load_predictor(default_model_path(), backend="onnx").backend == "onnx"


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown predictor backend"):
        load_predictor(default_model_path(), backend="tflite")


def test_threads_follow_the_worker_cap(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert load_predictor(default_model_path(), backend="onnx").threads == 1
    assert load_predictor(default_model_path(), backend="onnx", threads=2).threads == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert load_predictor(default_model_path(), backend="onnx").threads == 1
    assert load_predictor(default_model_path(), backend="onnx", threads=0).threads == 0
    with pytest.raises(ConfigError):
        load_predictor(default_model_path(), backend="onnx", threads=-1)


def test_relative_difference_counts_small_values_against_the_floor():
    want = np.array([1.0, 0.01, 0.0])
    assert ss.relative_difference(want + [1e-6, 0, 0], want) == pytest.approx(1e-6)
    assert ss.relative_difference(want + [0, 1e-6, 0], want) == pytest.approx(1e-5)
    assert ss.relative_difference(want + [0, 0, 1e-7], want) == pytest.approx(1e-6)
    assert ss.relative_difference(np.empty(0), np.empty(0)) == 0.0
    # per spectrum: the floor follows each row's largest value
    rows = np.array([[10.0, 0.1], [1.0, 0.1]])
    assert ss.relative_difference(rows + [[0, 1e-6], [0, 0]], rows) == pytest.approx(1e-6)
    assert ss.relative_difference(rows + [[0, 0], [0, 1e-6]], rows) == pytest.approx(1e-5)


def test_an_onnx_worker_never_imports_keras(tmp_path):
    """A CPU worker's plugin loads the ONNX predictor and predicts without TensorFlow."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "from csstflux.model.card import default_model_path\n"
        "from csstflux.pipeline import predict, tasks, worker\n"
        "plugin = worker.PredictorPlugin(str(default_model_path()))\n"
        "plugin.setup(None)\n"
        f"x = np.ones((3, {N_IN}), np.float32)\n"
        "sed, err = plugin.predictor(x, np.full_like(x, 0.05))\n"
        "assert np.isfinite(sed).all() and (err > 0).all()\n"
        "print(plugin.predictor.backend, sorted(m for m in ('keras', 'tensorflow', 'jax',"
        " 'torch') if m in sys.modules))\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[-2] == "onnx []"


@pytest.mark.parametrize(("cuda", "paths", "expected"), [
    ("", [], False), ("-1", ["/dev/nvidia0"], False), (None, [], False),
    (None, ["/dev/nvidiactl"], True), ("0", ["/dev/accel0"], True)])
def test_accelerator_possible_without_a_backend(monkeypatch, cuda, paths, expected):
    from csstflux.model import backend

    monkeypatch.setattr(backend.sys, "platform", "linux")
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)
    if cuda is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cuda)
    monkeypatch.setattr(backend.os.path, "exists", lambda p: p in paths)
    monkeypatch.setattr(backend.glob, "glob",
                        lambda pattern: [p for p in paths if fnmatch.fnmatch(p, pattern)])
    assert backend.accelerator_possible() is expected
    if not expected:
        assert backend.accelerator_visible() is False
