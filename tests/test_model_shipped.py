"""The model shipped in the package: loads, checks out, predicts finite positive SEDs."""

import numpy as np

from csstflux.grids import INPUT_GRID, OUTPUT_GRID, SCALING_WINDOW
from csstflux.library.emulator import load_emulator
from csstflux.model.card import default_model_path, read_card
from csstflux.model.predictor import load_predictor


def test_shipped_model_predicts_finite_positive_seds():
    path = default_model_path()
    card, _, _ = read_card(path)
    assert card.calibration.get("sigma_scale") is not None
    assert card.training_data["stages"], "the card records the pre-training stage"
    pred = load_predictor(path)
    emu = load_emulator()
    x = emu.gp.x_train[:16] * emu.gp.x_scale + emu.gp.x_mean
    flux, ok, _ = emu(x[:, 0], x[:, 1], x[:, 2])
    assert ok.all()
    err = np.abs(flux) / 40.0
    sed, sed_err = pred(flux.astype(np.float32), err.astype(np.float32))
    assert sed.shape == sed_err.shape == (16, OUTPUT_GRID.n)
    assert np.all(np.isfinite(sed)) and np.all(sed > 0)
    assert np.all(np.isfinite(sed_err)) and np.all(sed_err > 0)
    # scaled SEDs: mean ≈ 1 in the scaling window
    window = OUTPUT_GRID.window(*SCALING_WINDOW)
    np.testing.assert_allclose(sed[:, window].mean(axis=1), 1.0, atol=0.03)
    # hotter stars are bluer: GU/GI flux ratio grows with Teff
    gu = sed[:, OUTPUT_GRID.window(3000, 4000)].mean(axis=1)
    gi = sed[:, OUTPUT_GRID.window(7000, 9000)].mean(axis=1)
    order = np.argsort(x[:, 0])
    assert np.corrcoef(x[order, 0], (gu / gi)[order])[0, 1] > 0.8
    assert flux.shape[1] == INPUT_GRID.n
