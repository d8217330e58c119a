"""A tiny UaRA-net trained for a few dozen Adam steps lowers its loss (masked targets included)."""

import keras
import numpy as np

from csstflux.model.loss import pack_targets, uaranet_loss
from csstflux.model.network import build_uaranet


def _synthetic(rng, n, n_in, n_out):
    """Inputs whose line depth sets the slope of a positive target SED."""
    depth = rng.uniform(0.0, 0.5, size=(n, 1))
    x_in = np.linspace(-1, 1, n_in)
    flux = 1 - depth * np.exp(-0.5 * (x_in / 0.1) ** 2)
    err = np.full_like(flux, 0.02)
    flux = flux + err * rng.normal(size=flux.shape)
    sed = 1 + depth * np.linspace(-1, 1, n_out)
    valid = np.ones_like(sed, dtype=bool)
    valid[::5, :3] = False
    sed[~valid] = np.nan                      # masked pixels carry garbage
    inputs = {"flux": flux.astype(np.float32), "flux_err": err.astype(np.float32)}
    return inputs, pack_targets(sed, valid)


def test_thirty_adam_steps_lower_the_loss():
    rng = np.random.default_rng(5)
    n_in, n_out = 128, 16
    x, y = _synthetic(rng, 128, n_in, n_out)
    model = build_uaranet(n_in, n_out, seed=0)
    # jit_compile=False skips an XLA compile; building the optimizer first saves fit() a second
    # trace of the train step (on TensorFlow the trace, not the 32 steps, dominates: ~15 s)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=uaranet_loss,
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    before = model.evaluate(x, y, batch_size=128, verbose=0)
    hist = model.fit(x, y, batch_size=32, epochs=8, shuffle=False, verbose=0)  # 32 steps
    after = model.evaluate(x, y, batch_size=128, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert after < before - 0.1, (before, after)
