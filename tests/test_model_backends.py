"""The network uses keras.ops only: on the JAX backend it gives TensorFlow's predictions; and
the device query that keeps GPU workers on Keras sees no accelerator where none is visible."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from csstflux import grids
from csstflux.model.card import save_model
from csstflux.model.network import build_uaranet

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax not installed")
against_tf = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="compares against TF")

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from csstflux.model.loss import pack_targets, uaranet_loss, uaranet_loss_numpy
    from csstflux.model.network import build_uaranet, count_params_table1
    from csstflux.model.predictor import load_predictor

    d = sys.argv[1]
    data = np.load(f"{d}/inputs.npz")
    drawn = []
    draw = keras.initializers.HeNormal.__call__
    keras.initializers.HeNormal.__call__ = lambda s, *a, **k: drawn.append(1) or draw(s, *a, **k)
    predictor = load_predictor(f"{d}/m.keras", backend="keras")
    assert not drawn     # no random initial weights (each a JAX compilation) before loading
    import jax
    # TF32 off: with JAX's default precision an H100 gave up to 39 % errors in sed
    assert jax.config.jax_default_matmul_precision == "highest"
    out = np.asarray(predictor.model.predict_on_batch(
        {"flux": data["flux"], "flux_err": data["err"]}))
    sed, sed_err = predictor(data["flux"], data["err"])
    np.savez(f"{d}/jax.npz", out=out, sed=sed, sed_err=sed_err)

    # threads sharing the predictor (a worker's two chunk tasks): same results, no failure
    import threading
    want = [predictor(data["flux"][i:i + 4], data["err"][i:i + 4], batch_size=2)[0]
            for i in range(4)]
    got = [None] * 4
    def call(i):
        got[i] = predictor(data["flux"][i:i + 4], data["err"][i:i + 4], batch_size=2)[0]
    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for i in range(4):
        assert np.array_equal(got[i], want[i]), i

    # the same architecture and loss on this backend (a fit would add ~10 s of XLA compile)
    assert build_uaranet(seed=0).count_params() == count_params_table1()
    y_true = pack_targets(np.abs(out[:, 0]) + 0.5)
    lj = float(uaranet_loss(y_true, out))
    assert abs(lj - uaranet_loss_numpy(y_true, out)) <= 1e-5 * max(1.0, abs(lj)), lj
""")


@pytest.mark.slow
@needs_jax
@against_tf
def test_jax_predictions_match_tensorflow(tmp_path):
    model = build_uaranet(seed=21)
    save_model(model, tmp_path / "m.keras")
    rng = np.random.default_rng(4)
    n = 8
    flux = (1 + 0.05 * rng.normal(size=(n, grids.INPUT_GRID.n))).astype(np.float32)
    err = np.full_like(flux, 0.05)
    np.savez(tmp_path / "inputs.npz", flux=flux, err=err)
    want = np.asarray(model.predict_on_batch({"flux": flux, "flux_err": err}))

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    got = np.load(tmp_path / "jax.npz")
    np.testing.assert_allclose(got["out"], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["sed"], want[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["sed_err"], want[:, 1] * np.abs(want[:, 0]), rtol=1e-4,
                               atol=1e-4)



@pytest.mark.slow
def test_hidden_gpus_make_auto_choose_onnx():
    """With every GPU hidden (as the CPU benchmarks hide them) the backend sees no accelerator,
    so ``load_predictor(backend="auto")`` takes ONNX Runtime for the shipped model."""
    pytest.importorskip("onnxruntime")
    code = ("from csstflux.model.backend import accelerator_visible\n"
            "from csstflux.model.card import default_model_path\n"
            "from csstflux.model.predictor import load_predictor\n"
            "print(accelerator_visible(), load_predictor(default_model_path()).backend)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["False", "onnx"]
