"""The predictor: numpy in, float32 out; one spectrum equals the same spectrum in a batch.

The Keras predictor (``backend="keras"``) is the reference and the one spied on here; the
shape, batch and refusal contracts are checked for the ONNX Runtime predictor too (its
agreement with Keras is tests/test_model_onnx.py's subject).
"""

import numpy as np
import pytest

from csstflux import grids
from csstflux.errors import GridMismatchError
from csstflux.model.card import read_card, save_model
from csstflux.model.network import build_uaranet
from csstflux.model.predictor import (
    MASKED_ERR,
    MASKED_FLUX,
    Predictor,
    fill_masked,
    load_predictor,
    padded_size,
)

N_IN, N_OUT = grids.INPUT_GRID.n, grids.OUTPUT_GRID.n


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("predictor")
    model = build_uaranet(seed=9)
    save_model(model, d / "plain.keras")
    save_model(model, d / "calibrated.keras",
               calibration={"sigma_scale": np.linspace(1.0, 3.0, N_OUT)})
    save_model(model, d / "floored.keras",
               calibration={"sigma_scale": np.linspace(1.0, 3.0, N_OUT),
                            "sigma_floor": np.linspace(0.0, 0.05, N_OUT)})
    save_model(model, d / "floor-only.keras",
               calibration={"sigma_floor": np.full(N_OUT, 0.02)})
    return d


@pytest.fixture(scope="module")
def predictor(model_dir):
    return load_predictor(model_dir / "plain.keras", backend="keras")


@pytest.fixture(scope="module", params=["keras", "onnx"])
def any_predictor(request, model_dir, predictor, tmp_path_factory):
    """The plain model with each backend (the ONNX graph exported into a private cache)."""
    if request.param == "keras":
        return predictor
    pytest.importorskip("onnxruntime")
    return load_predictor(model_dir / "plain.keras", backend="onnx",
                          cache_dir=tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(scope="module")
def spectra():
    rng = np.random.default_rng(2)
    n = 11
    x = np.linspace(-1, 1, N_IN)
    flux = 1 - rng.uniform(0, 0.4, (n, 1)) * np.exp(-0.5 * (x / 0.05) ** 2)
    err = rng.uniform(0.02, 0.06, (n, 1)) * np.ones(N_IN)
    return flux + err * rng.normal(size=flux.shape), err


def test_output_shapes_dtypes_and_positive_errors(any_predictor, predictor, spectra):
    flux, err = spectra
    sed, sed_err = any_predictor(flux, err)
    assert sed.shape == sed_err.shape == (len(flux), N_OUT)
    assert sed.dtype == sed_err.dtype == np.float32
    assert np.isfinite(sed).all() and (sed_err >= 0).all()
    out = np.asarray(predictor.model.predict_on_batch(
        {"flux": flux[:4].astype(np.float32), "flux_err": err[:4].astype(np.float32)}))
    assert (out[:, 1] > 0).all()                                    # σ > 0
    np.testing.assert_allclose(sed[:4], out[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sed_err[:4], out[:, 1] * np.abs(out[:, 0]), rtol=1e-5,
                               atol=1e-5)


def test_single_spectrum_equals_batch(any_predictor, spectra):
    flux, err = spectra
    sed, sed_err = any_predictor(flux, err, batch_size=4)   # batches 4, 4, 3 (Keras: padded)
    for i in range(len(flux)):
        s1, e1 = any_predictor(flux[i], err[i])
        assert s1.shape == e1.shape == (N_OUT,)
        np.testing.assert_allclose(s1, sed[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(e1, sed_err[i], rtol=1e-5, atol=1e-5)


def test_fixed_shape_padding_gives_the_same_predictions(predictor, spectra):
    """pad_to_batch (one compiled shape, for GPU workers) changes nothing but the padding."""
    flux, err = spectra
    want = predictor(flux, err, batch_size=4)
    shapes = []
    real = predictor.model.predict_on_batch

    def spy(x):
        shapes.append(x["flux"].shape[0])
        return real(x)

    predictor.model.predict_on_batch = spy
    try:
        got = predictor(flux, err, batch_size=8, pad_to_batch=True)  # 11 rows: 8 + 3 (→ 8)
        predictor(flux[:3], err[:3], batch_size=8)                   # default: 3 → 4
    finally:
        del predictor.model.predict_on_batch
    assert shapes == [8, 8, 4]
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_threads_share_a_predictor_one_model_call_at_a_time(predictor, spectra):
    """Two chunk tasks of one worker call the same predictor: the network runs one batch at a
    time (Keras' JAX backend fails on concurrent calls) and every thread gets its own result."""
    import threading
    import time

    flux, err = spectra
    want = [predictor(flux[i:i + 3], err[i:i + 3], batch_size=2) for i in range(6)]
    real = predictor.model.predict_on_batch
    inside, most = [0], [0]

    def slow(x):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)              # long enough for the other threads to try to enter
        try:
            return real(x)
        finally:
            inside[0] -= 1

    got: list = [None] * 6
    predictor.model.predict_on_batch = slow
    try:
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(
            i, predictor(flux[i:i + 3], err[i:i + 3], batch_size=2))) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del predictor.model.predict_on_batch
    assert most[0] == 1
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g[0], w[0])
        np.testing.assert_array_equal(g[1], w[1])

def test_calibration_scales_errors_per_pixel(model_dir, predictor, spectra):
    flux, err = spectra
    card, _, _ = read_card(model_dir / "calibrated.keras")
    assert card.sigma_scale == pytest.approx(list(np.linspace(1.0, 3.0, N_OUT)))
    calibrated = Predictor(predictor.model, card)      # same weights: reuse the loaded model
    sed, sed_err = predictor(flux[:2], err[:2])
    sed_c, sed_err_c = calibrated(flux[:2], err[:2])
    np.testing.assert_array_equal(sed_c, sed)
    np.testing.assert_allclose(sed_err_c, sed_err * np.linspace(1.0, 3.0, N_OUT), rtol=1e-6)


def test_scale_and_floor_give_exactly_the_documented_formula(model_dir, predictor, spectra):
    """sed_err = |μ| · sqrt((s σ)² + τ²), in float64 rounded to float32; s = 1 when absent."""
    flux, err = spectra
    x, e = flux[:4].astype(np.float32), err[:4].astype(np.float32)
    raw = predictor._predict(x, e, 256)                 # the network's (μ, σ), as the predictor
    mu, sigma = raw[:, 0].astype(np.float64), raw[:, 1].astype(np.float64)
    s, tau = np.linspace(1.0, 3.0, N_OUT), np.linspace(0.0, 0.05, N_OUT)
    for name, s_, tau_ in (("floored", s, tau), ("floor-only", 1.0, np.full(N_OUT, 0.02))):
        card, _, _ = read_card(model_dir / f"{name}.keras")
        sed_c, sed_err_c = Predictor(predictor.model, card)(x, e)
        np.testing.assert_array_equal(sed_c, raw[:, 0])
        want = (np.abs(mu) * np.sqrt((s_ * sigma) ** 2 + tau_ ** 2)).astype(np.float32)
        np.testing.assert_array_equal(sed_err_c, want)
        assert sed_err_c.dtype == np.float32
    # the floor dominates where σ is small: sed_err ≥ τ|μ|
    card, _, _ = read_card(model_dir / "floored.keras")
    assert np.all(Predictor(predictor.model, card)(x, e)[1] >= (tau * np.abs(mu)).astype(
        np.float32) * (1 - 1e-6))


def test_exposes_card_checksum_and_backend(model_dir, any_predictor):
    predictor = any_predictor
    assert isinstance(predictor, Predictor)
    assert predictor.sha256 == predictor.card.archive_sha256
    assert predictor.card.name == "plain"
    assert predictor.sha256[:12] in repr(predictor)
    assert predictor.backend in ("keras", "onnx")
    assert predictor.provenance["backend"] == predictor.backend


def test_refuses_wrong_grid_and_non_finite_inputs(any_predictor):
    predictor = any_predictor
    with pytest.raises(GridMismatchError, match="input grid"):
        predictor(np.ones((2, N_IN - 1)), np.ones((2, N_IN - 1)))
    with pytest.raises(ValueError, match="differs"):
        predictor(np.ones((2, N_IN)), np.ones((3, N_IN)))
    flux = np.ones(N_IN)
    flux[5] = np.nan
    with pytest.raises(ValueError, match="1 non-finite.*fill_masked"):
        predictor(flux, np.ones(N_IN))


def test_fill_masked_convention():
    flux = np.array([[0.9, np.nan, 1.1, 0.8]])
    err = np.array([[0.05, 0.05, np.inf, -1.0]])
    mask = np.array([[True, False, False, False]])
    f, e = fill_masked(flux, err, mask)
    assert f.dtype == e.dtype == np.float32
    np.testing.assert_array_equal(f, [[MASKED_FLUX, MASKED_FLUX, MASKED_FLUX, MASKED_FLUX]])
    np.testing.assert_array_equal(e, [[MASKED_ERR, MASKED_ERR, MASKED_ERR, MASKED_ERR]])
    assert np.isnan(flux[0, 1])                                     # inputs untouched
    f, e = fill_masked(flux[0, 2:] * 0 + 0.7, np.full(2, 0.1))
    np.testing.assert_array_equal(f, np.float32([0.7, 0.7]))


@pytest.mark.parametrize(("n", "batch", "want"),
                         [(1, 256, 1), (3, 256, 4), (200, 256, 256), (256, 256, 256),
                          (5, 4, 4), (0, 8, 1)])
def test_padded_size(n, batch, want):
    assert padded_size(n, batch) == want


def test_loading_a_model_switches_tf32_off(tmp_path):
    """TF32 products (TensorFlow's default on Ampere+ GPUs) are off once a model is loaded."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks TensorFlow's TF32 switch")
    import tensorflow as tf

    from csstflux.model.backend import use_full_float32
    from csstflux.model.card import save_model
    from csstflux.model.network import build_uaranet
    from csstflux.model.predictor import load_predictor

    save_model(build_uaranet(seed=1), tmp_path / "m.keras")
    tf.config.experimental.enable_tensor_float_32_execution(True)
    load_predictor(tmp_path / "m.keras", backend="keras")
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    assert "tensor_float_32_execution=False" in use_full_float32()
