"""Simulated flats and slitless observations: normalisation, noise model, SED draws."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.flat.normalise import normalise_flat
from csstflux.flat.simulate import (
    COLLECTING_AREA_CM2,
    TrueFlat,
    counts_per_flux,
    draw_ebv,
    draw_true_seds,
    simulate_observations,
    uniform_positions,
    window_mean,
)
from csstflux.grids import BANDS, OUTPUT_GRID

SHAPE = (9232, 9216)
WAVE = OUTPUT_GRID.wavelength


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)


def _flat(rng: np.random.Generator, shape=SHAPE, **kw) -> TrueFlat:
    band = BANDS["GV"]
    return TrueFlat.random(rng, shape=shape, wavelength_range=(band.lo, band.hi), **kw)


def test_polynomial_cube_matches_normalise_flat(rng: np.random.Generator) -> None:
    flat = _flat(rng, amplitude=0.05)
    wave = WAVE[BANDS["GV"].mask(WAVE)][::20]
    gx, gy = np.linspace(0, SHAPE[1] - 1, 7), np.linspace(0, SHAPE[0] - 1, 5)
    cube = flat.cube(gx, gy, wave)
    c = flat.coefficients(wave)
    ref, sig = normalise_flat(c, np.zeros(c.shape + c.shape[-1:]), gx, gy, 2, shape=SHAPE)
    assert cube.shape == (wave.size, 5, 7)
    np.testing.assert_allclose(cube, ref, rtol=1e-13)
    assert np.all(sig == 0)
    # a few per cent of large-scale structure, varying with wavelength
    assert 0.005 < np.std(cube) < 0.1
    assert np.max(np.abs(cube[0] - cube[-1])) > 1e-3


def test_cube_with_ripple_has_unit_detector_mean(rng: np.random.Generator) -> None:
    shape = (300, 200)
    flat = _flat(rng, shape=shape, ripple_amplitude=0.01, ripple_period=(20.0, 80.0))
    wave = np.array([4100.0, 5000.0, 6400.0])
    cube = flat.cube(np.arange(shape[1]), np.arange(shape[0]), wave)  # every pixel centre
    np.testing.assert_allclose(cube.mean(axis=(1, 2)), 1.0, atol=2e-5)
    rip = flat.ripple(*np.meshgrid(np.arange(shape[1]), np.arange(shape[0])))
    assert 0.007 < rip.std() < 0.013
    x, y = uniform_positions(50, shape, rng)
    v = flat.value(x, y, wave)
    v2 = flat.value(np.repeat(x[:, None], 3, 1), np.repeat(y[:, None], 3, 1), wave)
    np.testing.assert_allclose(v, v2, rtol=1e-14)


def test_trueflat_validates() -> None:
    with pytest.raises(ValueError, match="coeffs"):
        TrueFlat(np.zeros((2, 5)), SHAPE, (4000.0, 6500.0))
    with pytest.raises(ValueError, match="wavelength_range"):
        TrueFlat(np.zeros((1, 6)), SHAPE, (6500.0, 4000.0))
    with pytest.raises(ValueError, match="amplitude"):
        TrueFlat.random(np.random.default_rng(0), shape=SHAPE, wavelength_range=(1, 2),
                        amplitude=0.7)


def test_draw_true_seds_statistics(rng: np.random.Generator) -> None:
    pred = np.ones((4000, 120))
    err = np.full_like(pred, 0.02)
    assert np.array_equal(draw_true_seds(pred, err, rng, ideal=True), pred)
    z = (draw_true_seds(pred, err, rng) - pred) / err
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z[:, 1:] * z[:, :-1])) < 0.01
    length = 10.0
    z = (draw_true_seds(pred, err, rng, correlation_length=length) - pred) / err
    assert abs(z[:, 0].std() - 1) < 0.05 and abs(z[:, -1].std() - 1) < 0.05  # stationary
    for d in (1, 5, 20):
        corr = np.mean(z[:, d:] * z[:, :-d])
        assert abs(corr - np.exp(-d / length)) < 0.02


def test_simulate_observations_noise_and_band(rng: np.random.Generator) -> None:
    band = BANDS["GV"].mask(WAVE)
    tp = np.where(band, 0.3, 0.0)
    flat = _flat(rng)
    n = 3000
    x, y = uniform_positions(n, SHAPE, rng)
    sed = np.ones((n, WAVE.size))
    t, scale, sky, rn = 150.0, 20.0, 5.0, 30.0
    exp, exp_err = simulate_observations(sed, x, y, flat, tp, t, scale, sky, rn, rng,
                                         ideal=True)
    assert np.all(np.isnan(exp[:, ~band])) and np.all(np.isnan(exp_err[:, ~band]))
    truth = scale * 0.3 * t * flat.value(x, y, WAVE[band])
    np.testing.assert_allclose(exp[:, band], truth, rtol=1e-13)
    np.testing.assert_allclose(exp_err[:, band], np.sqrt(truth + sky * t + rn**2))
    counts, err = simulate_observations(sed, x, y, flat, tp, t, np.full(n, scale), sky, rn,
                                        rng)
    np.testing.assert_array_equal(err, exp_err)
    z = (counts[:, band] - truth) / err[:, band]
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    with pytest.raises(ValueError, match="throughput"):
        simulate_observations(sed, x, y, flat, tp[:-1], t, scale, sky, rn, rng)


def test_counts_per_flux_is_photons_through_the_aperture() -> None:
    """A λ Δλ/(hc): at the pixel nearest 5500 Å, by hand from the constants."""
    c = counts_per_flux()
    k = int(np.argmin(np.abs(WAVE - 5500.0)))
    lam, width = WAVE[k], OUTPUT_GRID.edges[k + 1] - OUTPUT_GRID.edges[k]
    hc = 6.62607015e-27 * 2.99792458e18  # erg Å
    np.testing.assert_allclose(c[k], np.pi * 1e4 * lam * width / hc, rtol=1e-12)
    assert 1.1e17 < window_mean(c) < 1.3e17           # 3.14 m², λ/400 ≈ 13.9 Å at 5556 Å
    np.testing.assert_allclose(c / c[0], (WAVE / WAVE[0]) ** 2, rtol=1e-9)  # Δλ ∝ λ
    np.testing.assert_allclose(counts_per_flux(2.0) / c, 2.0 / COLLECTING_AREA_CM2)
    with pytest.raises(ValueError, match="area"):
        counts_per_flux(0.0)


def test_draw_ebv_truncated_exponential(rng: np.random.Generator) -> None:
    """Mean of an exponential (μ) truncated at m: μ − m/(e^(m/μ) − 1)."""
    mu, top = 0.1, 0.5
    e = draw_ebv(rng, 200_000, mu, top)
    assert e.min() >= 0 and e.max() <= top
    assert abs(e.mean() - (mu - top / np.expm1(top / mu))) < 1e-3
    assert not draw_ebv(rng, 5, 0.0, top).any()
    with pytest.raises(ValueError, match="mean"):
        draw_ebv(rng, 5, -0.1, top)
