"""The loss is eq. (17), averaged over the valid pixels, and a masked pixel contributes nothing."""

import keras
import numpy as np
import pytest

from csstflux.model.loss import pack_targets, uaranet_loss, uaranet_loss_numpy


def _keras_loss(y_true, y_pred):
    return float(keras.ops.convert_to_numpy(uaranet_loss(np.asarray(y_true, np.float32),
                                                         np.asarray(y_pred, np.float32))))


def test_hand_computed_case_with_masked_pixel():
    # Y = (1, 2, masked with Y = 0), mu = (1.1, 2, 3), sigma = (0.1, 0.5, 1)
    # pixel 1: r = 0.1, r^2/(2 sigma^2) = 0.01/0.02 = 0.5, log sigma = ln 0.1, log Y = 0
    # pixel 2: r = 0, log sigma + log Y = ln 0.5 + ln 2 = 0
    # mean over the 2 valid pixels: (0.5 + ln 0.1) / 2 = -0.90129254649...
    y_true = [[[1.0, 2.0, 0.0], [1.0, 1.0, 0.0]]]
    y_pred = [[[1.1, 2.0, 3.0], [0.1, 0.5, 1.0]]]
    expected = (0.5 + np.log(0.1)) / 2
    assert expected == pytest.approx(-0.9012925465, abs=1e-10)
    assert uaranet_loss_numpy(y_true, y_pred) == pytest.approx(expected, rel=1e-12)
    assert _keras_loss(y_true, y_pred) == pytest.approx(expected, rel=1e-6)


def test_matches_numpy_reference_on_random_batch():
    rng = np.random.default_rng(11)
    n, m = 6, 574
    y = rng.uniform(0.2, 3.0, size=(n, m))
    w = (rng.uniform(size=(n, m)) > 0.1).astype(float)
    w[0, :7] = 0.5                                       # fractional weights: a weighted mean
    mu = y * (1 + 0.05 * rng.normal(size=(n, m)))
    sigma = rng.uniform(0.01, 0.2, size=(n, m))
    y_true, y_pred = np.stack([y, w], 1), np.stack([mu, sigma], 1)
    ref = uaranet_loss_numpy(y_true, y_pred)
    assert _keras_loss(y_true, y_pred) == pytest.approx(ref, rel=1e-5)


def test_masked_pixels_change_nothing():
    rng = np.random.default_rng(3)
    y = rng.uniform(0.5, 2.0, size=(2, 20))
    mu, sigma = y * 1.02, np.full_like(y, 0.05)
    w = np.ones_like(y)
    base = _keras_loss(np.stack([y[:, :15], w[:, :15]], 1), np.stack([mu[:, :15],
                                                                      sigma[:, :15]], 1))
    w[:, 15:] = 0
    y_bad = y.copy()
    y_bad[0, 15:] = [0.0, -1.0, np.nan, np.inf, 1e-30]   # garbage under the mask
    mu_bad = mu.copy()
    mu_bad[1, 15:] = 1e30
    got = _keras_loss(np.stack([y_bad, w], 1), np.stack([mu_bad, sigma], 1))
    assert got == pytest.approx(base, rel=1e-6)


def test_all_masked_gives_zero():
    y_true = np.zeros((1, 2, 4))
    y_pred = np.ones((1, 2, 4))
    assert _keras_loss(y_true, y_pred) == 0.0
    assert uaranet_loss_numpy(y_true, y_pred) == 0.0


def test_pack_targets_layout():
    sed = np.array([[1.0, np.nan, 2.0, -1.0]])
    t = pack_targets(sed)
    assert t.shape == (1, 2, 4) and t.dtype == np.float32
    np.testing.assert_array_equal(t[0, 1], [1, 0, 1, 0])
    np.testing.assert_array_equal(t[0, 0], [1, 1, 2, 1])
    t2 = pack_targets(sed, valid=np.array([True, False, True, True]))
    np.testing.assert_array_equal(t2[0, 1], [1, 0, 1, 1])


def test_loss_is_serialisable():
    name = keras.saving.get_registered_name(uaranet_loss)
    assert name == "csstflux>uaranet_loss"
    assert keras.saving.get_registered_object(name) is uaranet_loss


def test_beta_nll_weights_each_pixel_by_sigma_to_two_beta():
    """β-NLL: the hand case with each pixel's ℓ times σ^(2β); β = 0 is eq. (17); the loss
    object survives Keras serialisation with its β."""
    from csstflux.model.loss import BetaNLL, make_loss

    y_true = [[[1.0, 2.0, 0.0], [1.0, 1.0, 0.0]]]
    y_pred = [[[1.1, 2.0, 3.0], [0.1, 0.5, 1.0]]]
    # pixel 1: (0.5 + ln 0.1) · 0.1^(2β); pixel 2: 0 · 0.5^(2β)
    for beta in (0.5, 1.0):
        expected = (0.5 + np.log(0.1)) * 0.1 ** (2 * beta) / 2
        assert uaranet_loss_numpy(y_true, y_pred, beta) == pytest.approx(expected, rel=1e-12)
        got = BetaNLL(beta)(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32))
        assert float(keras.ops.convert_to_numpy(got)) == pytest.approx(expected, rel=1e-5)
    assert make_loss(0.0) is uaranet_loss
    back = keras.losses.deserialize(keras.losses.serialize(BetaNLL(0.5)))
    assert isinstance(back, BetaNLL) and back.beta == 0.5
    with pytest.raises(ValueError):
        BetaNLL(1.5)
