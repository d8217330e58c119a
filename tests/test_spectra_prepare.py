"""The shared input and target recipes on INPUT_GRID and OUTPUT_GRID."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.constants import FWHM_TO_SIGMA
from csstflux.containers import Resolution
from csstflux.grids import INPUT_GRID, OUTPUT_GRID, SCALING_WINDOW
from csstflux.spectra import ResolutionWarning, doppler_factor, prepare_input, prepare_target

LINES = np.array([4340.5, 4862.7, 5175.0, 5891.6, 6564.6])  # Å, vacuum-ish


def model_spectrum(w: np.ndarray, line_centres: np.ndarray = LINES) -> np.ndarray:
    """Smooth continuum × narrow absorption lines (σ = 0.6 Å, depth 0.5)."""
    cont = 1e-14 * (w / 5500.0) ** -2.5 * (1 + 0.05 * np.sin(w / 700.0))
    depth = np.zeros_like(w)
    for c in line_centres:
        depth += 0.5 * np.exp(-0.5 * ((w - c) / 0.6) ** 2)
    return cont * (1 - depth)


FINE = 3900.0 * np.exp(2e-5 * np.arange(int(np.log(7150 / 3900) / 2e-5)))


def test_flat_target_is_exactly_one() -> None:
    w = np.arange(2300.0, 10800.0, 20.0)  # a coarse 20 Å model grid
    sed, err, mask, scale = prepare_target(w, np.full(w.size, 4.2e-15), None, None, None)
    assert sed.shape == (OUTPUT_GRID.n,) and err is None and not mask.any()
    np.testing.assert_allclose(sed, 1.0, rtol=1e-13)
    assert float(scale) == pytest.approx(4.2e-15, rel=1e-13)


def test_target_scaling_window_mean_is_one() -> None:
    w = np.arange(2300.0, 10800.0, 2.0)
    sed, _, _, _ = prepare_target(w, model_spectrum(w), None, None, None)
    win = OUTPUT_GRID.window(*SCALING_WINDOW)
    assert sed[win].mean() == pytest.approx(1.0, rel=1e-14)


def test_input_continuum_is_one_away_from_lines() -> None:
    flux = model_spectrum(FINE)
    fn, en, mask = prepare_input(FINE, flux, 0.01 * flux, None, None)
    assert fn.shape == (INPUT_GRID.n,) and not mask.any()
    w = INPUT_GRID.wavelength
    # > 60 grid pixels (≈ 1.5 windows) from every line and from the ends
    far = np.min(np.abs(np.log(w[:, None] / LINES[None, :])), axis=1) > 60 * INPUT_GRID.dlnlambda
    far &= (np.arange(w.size) >= 25) & (np.arange(w.size) < w.size - 25)
    assert far.sum() > 500
    np.testing.assert_allclose(fn[far], 1.0, atol=2e-3)
    # the lines are there, at the right place, at about the R = 2000 depth
    i = np.argmin(np.abs(w - 5891.6))
    assert fn[i] < 0.9 and fn[i] == fn[i - 5 : i + 6].min()
    # per-pixel 1 % errors averaged over ~12 model pixels per grid pixel and over the LSF
    assert np.all((en[far] > 0) & (en[far] < 0.01 / np.sqrt(12)))


def test_input_rest_frame_puts_line_in_place() -> None:
    rv = 250.0
    w_obs = FINE * doppler_factor(rv)
    fn, _, _ = prepare_input(w_obs, model_spectrum(FINE), None, None, None, rv_kms=rv)
    ref, _, _ = prepare_input(FINE, model_spectrum(FINE), None, None, None)
    np.testing.assert_allclose(fn, ref, atol=1e-12)


def test_input_line_width_is_r2000() -> None:
    # an unresolved line in a flat model: after prepare_input its FWHM is λ/2000
    flux = np.ones(FINE.size)
    flux[np.argmin(np.abs(FINE - 5500.0))] = 0.0
    fn, _, _ = prepare_input(FINE, flux, None, None, None)
    dist = np.abs(INPUT_GRID.wavelength - 5500.0)
    # the line also lowers the moving-average continuum a little: measure against its wings
    baseline = fn[(dist > 10.0) & (dist < 20.0)].mean()
    depth = baseline - fn
    near = dist < 8.0  # ±6.8σ of the R = 2000 LSF
    x = np.log(INPUT_GRID.wavelength[near])
    p = depth[near] / depth[near].sum()
    sd = np.sqrt(np.sum(p * (x - np.sum(p * x)) ** 2))
    # the grid's own pixel box (Δ²/12) adds 12 % in variance, 6 % in width, at R = 2000
    sd_expected = np.sqrt((FWHM_TO_SIGMA / 2000.0) ** 2 + INPUT_GRID.dlnlambda**2 / 12)
    assert sd == pytest.approx(sd_expected, rel=0.02)


def test_miles_like_input_warns_below_5000() -> None:
    w = np.arange(3540.0, 7410.0, 0.9)
    with pytest.warns(ResolutionWarning, match=r"–4999\.\d Å"):
        fn, _, mask = prepare_input(
            w, model_spectrum(w), np.full(w.size, np.nan), None, Resolution(fwhm=2.5)
        )
    assert not mask.any()


def test_partial_coverage_masks_grid_pixels() -> None:
    w = np.arange(4500.0, 7500.0, 1.0)
    _, _, mask = prepare_input(w, model_spectrum(w), None, None, None)
    assert mask[INPUT_GRID.wavelength < 4499.0].all()
    assert not mask[INPUT_GRID.wavelength > 4510.0].any()
    sed, _, smask, _ = prepare_target(w, model_spectrum(w), None, None, None)
    assert smask[OUTPUT_GRID.wavelength < 4490.0].all()
    assert np.all(sed[smask] == 0.0)


def test_batch_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(21)
    w = np.arange(3800.0, 7300.0, 1.2)
    flux = model_spectrum(w) * rng.uniform(0.5, 2.0, (3, 1))
    err = 0.02 * flux
    mask = rng.uniform(size=flux.shape) < 0.05
    rv = np.array([-80.0, 0.0, 120.0])
    r_src = Resolution(resolving_power=2500.0)
    batch_in = prepare_input(w, flux, err, mask, r_src, rv_kms=rv)
    batch_out = prepare_target(w, flux, err, mask, r_src, rv_kms=rv)
    for i in range(3):
        one_in = prepare_input(w, flux[i], err[i], mask[i], r_src, rv_kms=rv[i])
        one_out = prepare_target(w, flux[i], err[i], mask[i], r_src, rv_kms=rv[i])
        for b, s in zip(batch_in + batch_out, one_in + one_out, strict=True):
            assert b is not None and s is not None
            np.testing.assert_allclose(b[i], s, rtol=1e-12, atol=1e-300)
