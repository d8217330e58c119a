"""Appendix-C input emulator: reproduces its training stars, flags out-of-domain parameters."""

import numpy as np
import pytest

from csstflux.grids import INPUT_GRID
from csstflux.library.emulator import InputEmulator, build_emulator


def fake_normalised(teff, logg, feh, rng, noise=0.002):
    lam = INPUT_GRID.wavelength
    depth = 0.3 * (6500 / teff)[:, None] * (1 + 0.3 * feh[:, None])
    lines = sum(np.exp(-0.5 * ((lam - c) / w) ** 2) for c, w in
                ((4341, 8.0), (4862, 8.0), (5175, 3.0), (5894, 2.0), (6564, 9.0)))
    width = 1 + 0.1 * (logg[:, None] - 4)
    return 1 - depth * lines[None, :] ** width + rng.normal(0, noise, (len(teff), lam.size))


@pytest.fixture(scope="module")
def emulator_and_data():
    rng = np.random.default_rng(5)
    n = 120
    teff = rng.uniform(5000, 9000, n)
    logg = rng.uniform(3.0, 4.8, n)
    feh = rng.uniform(-1.5, 0.4, n)
    flux = fake_normalised(teff, logg, feh, rng)
    emu = build_emulator(teff, logg, feh, flux, n_components=20, seed=1)
    return emu, teff, logg, feh, flux, rng


def test_reproduces_training_stars_within_noise(emulator_and_data):
    emu, teff, logg, feh, flux, _ = emulator_and_data
    pred, ok, _ = emu(teff, logg, feh)
    assert pred.shape == (len(teff), INPUT_GRID.n)
    rms = np.sqrt(np.mean((pred - flux) ** 2))
    assert rms < 0.004  # training noise is 0.002 per pixel
    assert ok.mean() > 0.9


def test_held_out_and_domain_flags(emulator_and_data):
    emu, *_, rng = emulator_and_data
    t = np.array([7000.0, 7000.0, 12000.0])
    g = np.array([4.0, 4.0, 4.0])
    f = np.array([-0.5, 2.0, -0.5])
    pred, ok, rel_std = emu(t, g, f)
    assert ok.tolist() == [True, False, False]
    truth = fake_normalised(t[:1], g[:1], f[:1], rng, noise=0.0)
    assert np.sqrt(np.mean((pred[0] - truth[0]) ** 2)) < 0.004
    assert rel_std[0] < rel_std[2]


def test_round_trip_is_float32_compact(emulator_and_data):
    emu, teff, logg, feh, *_ = emulator_and_data
    arrays = emu.to_arrays()
    again = InputEmulator.from_arrays(arrays)
    np.testing.assert_allclose(again(teff[:4], logg[:4], feh[:4])[0],
                               emu(teff[:4], logg[:4], feh[:4])[0], atol=1e-5)
    assert arrays["components"].dtype == np.float32
    assert sum(v.nbytes for v in arrays.values()) < 2_000_000


def test_shipped_emulator_loads_and_is_compact():
    from csstflux.library.emulator import default_emulator_path, load_emulator

    emu = load_emulator()
    assert emu.provenance["sha256"] and emu.provenance["n_train"] >= 200
    assert default_emulator_path().stat().st_size < 2_000_000
    arrays = emu.to_arrays()
    n = emu.gp.x_train.shape[0]
    # no per-star spectrum is stored: nothing of shape (n_star, 2238)
    assert not any(np.shape(v) == (n, INPUT_GRID.n) for v in arrays.values())
    x = emu.gp.x_train[:5] * emu.gp.x_scale + emu.gp.x_mean
    flux, ok, _ = emu(x[:, 0], x[:, 1], x[:, 2])
    assert ok.all() and np.all(np.abs(np.median(flux, axis=1) - 0.97) < 0.1)
