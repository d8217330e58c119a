"""UaRA-net is built exactly after Table 1; its custom layers do what eqs. (4)–(6) say."""

import keras
import numpy as np
import pytest

from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.model.layers import GaussianHead, SoftThresholdAttention, SubUnit
from csstflux.model.network import build_uaranet, count_params_table1

# Table 1 of the paper: SED-branch output widths (pixels) and channels
TABLE1_SED = {
    "conv0": (1119, 4),
    "subunit1": (560, 4), "subunit2": (560, 4),
    "subunit3": (280, 8), "subunit4": (280, 8),
    "subunit5": (140, 16), "subunit6": (140, 16),
}
TABLE1_DENSE = {"gap": 16, "fc1": 100, "fc2": 200, "fc3": 300, "fc4": 574,
                "err_fc1": 16, "concat": 32, "err_fc2": 64, "err_fc3": 574}


@pytest.fixture(scope="module")
def model():
    return build_uaranet(seed=7)


@pytest.fixture
def rng():
    return np.random.default_rng(20240501)


def test_inputs_and_output_shapes(model):
    assert {t.name for t in model.inputs} == {"flux", "flux_err"}
    assert all(tuple(t.shape) == (None, INPUT_GRID.n) for t in model.inputs)
    assert tuple(model.outputs[0].shape) == (None, 2, OUTPUT_GRID.n)


def test_table1_widths(model):
    for name, (width, channels) in TABLE1_SED.items():
        assert tuple(model.get_layer(name).output.shape) == (None, width, channels), name
    for name, width in TABLE1_DENSE.items():
        assert tuple(model.get_layer(name).output.shape) == (None, width), name


def test_count_params_equals_analytic_count(model):
    assert model.count_params() == count_params_table1() == 345_220
    n_trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert n_trainable == count_params_table1(trainable_only=True)
    small = build_uaranet(n_in=100, n_out=10, seed=0)
    assert small.count_params() == count_params_table1(100, 10)


def test_sigma_positive_and_outputs_finite(model, rng):
    n = 5
    flux = 1 + 0.1 * rng.normal(size=(n, INPUT_GRID.n)).astype(np.float32)
    err = np.abs(rng.normal(size=(n, INPUT_GRID.n))).astype(np.float32) * [[0], [0.01], [0.1],
                                                                           [1], [100]]
    out = keras.ops.convert_to_numpy(model({"flux": flux, "flux_err": err}, training=False))
    assert out.shape == (n, 2, OUTPUT_GRID.n) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert (out[:, 1] > 0).all()


def test_same_seed_same_weights():
    a, b = build_uaranet(32, 4, seed=3), build_uaranet(32, 4, seed=3)
    c = build_uaranet(32, 4, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(),
                                                     strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights(),
                                                         strict=True))


def test_soft_threshold_is_sign_preserving_shrinkage(rng):
    layer = SoftThresholdAttention(3, seed=1)
    x = rng.normal(size=(2, 50, 3)).astype(np.float32)
    x[0, :5] = 0.0
    out = keras.ops.convert_to_numpy(layer(x))
    # eqs. (4)-(6) by hand: M_c from the three ReLU convolutions of |M|, tau = M_c |M|
    m_c = np.abs(x)
    for conv in layer.convs:
        m_c = keras.ops.convert_to_numpy(conv(m_c))
    assert (m_c >= 0).all()
    expected = np.sign(x) * np.maximum(np.abs(x) - m_c * np.abs(x), 0)
    # where M_c >= 1 the threshold reaches |M| and the feature is zeroed
    assert (out[m_c >= 1] == 0).all()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    assert (np.abs(out) <= np.abs(x)).all()
    assert (out[x == 0] == 0).all()
    assert (np.sign(out[out != 0]) == np.sign(x[out != 0])).all()


@pytest.mark.parametrize(("width", "c_in", "filters", "stride"),
                         [(1119, 4, 4, 2), (560, 4, 8, 2), (280, 8, 8, 1), (7, 1, 3, 3)])
def test_subunit_shortcut_is_zero_padded_identity(rng, width, c_in, filters, stride):
    unit = SubUnit(filters, 3, stride, seed=0)
    x = rng.normal(size=(2, width, c_in)).astype(np.float32)
    unit(x)  # build
    for conv in unit.convs:   # silence the main path: out = shortcut exactly
        conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    out = keras.ops.convert_to_numpy(unit(x, training=False))
    out_w = -(-width // stride)
    assert out.shape == (2, out_w, filters) == unit.compute_output_shape((2, width, c_in))
    np.testing.assert_array_equal(out[..., :c_in], x[:, ::stride, :])
    np.testing.assert_array_equal(out[..., c_in:], 0.0)


def test_subunit_refuses_fewer_filters_than_channels():
    with pytest.raises(ValueError, match="at most filters"):
        SubUnit(4, 3, 1)(np.zeros((1, 10, 8), np.float32))


@pytest.mark.parametrize("layer", [SoftThresholdAttention(4, 3, seed=2),
                                   SubUnit(8, 3, 2, seed=5), GaussianHead(1e-5)])
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_gaussian_head_stacks_mu_and_positive_sigma():
    mu = np.array([[1.0, -2.0]], np.float32)
    s = np.array([[-50.0, 0.0]], np.float32)
    out = keras.ops.convert_to_numpy(GaussianHead(1e-6)([mu, s]))
    np.testing.assert_array_equal(out[:, 0], mu)
    np.testing.assert_allclose(out[0, 1], [1e-6, np.log(2) + 1e-6], rtol=1e-6)
