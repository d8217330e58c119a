"""Noise models: eq. (1) (F' = F + r F, r ~ N(0, 1/snr²), σ = |F|/snr) and LAMOST-like errors."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.grids import INPUT_GRID, TRAIN_SNRS
from csstflux.spectra import add_noise
from csstflux.spectra.error_profile import draw_error_profiles
from csstflux.spectra.noise import NoiseConfig, add_profile_noise, draw_snr


def test_r_has_the_paper_distribution() -> None:
    rng = np.random.default_rng(20240601)
    flux = np.linspace(0.5, 2.0, 2238) * np.ones((200, 1))  # 447 600 draws per SNR
    for snr in (20.0, 80.0):
        noisy, err, mask = add_noise(flux, snr, rng)
        r = noisy / flux - 1.0
        n = r.size
        s = 1.0 / snr
        # 5σ statistical tolerances: mean ± 5 s/√n, std ± 5 s/√(2n)
        assert abs(r.mean()) < 5 * s / np.sqrt(n)
        assert abs(r.std() - s) < 5 * s / np.sqrt(2 * n)
        np.testing.assert_allclose(err, flux / snr, rtol=1e-15)
        assert not mask.any()


def test_per_spectrum_snr() -> None:
    rng = np.random.default_rng(3)
    snr = np.array([20.0, 40.0])
    flux = np.ones((2, 50_000))
    noisy, err, _ = add_noise(flux, snr, rng)
    np.testing.assert_array_equal(err[:, 0], 1 / snr)
    std = (noisy - 1).std(axis=1)
    np.testing.assert_allclose(std, 1 / snr, rtol=5 / np.sqrt(2 * 50_000))


def test_reproducible_and_batch_equals_sequential() -> None:
    flux = np.random.default_rng(0).uniform(1, 2, (3, 100))
    a = add_noise(flux, 30.0, np.random.default_rng(42))
    b = add_noise(flux, 30.0, np.random.default_rng(42))
    np.testing.assert_array_equal(a[0], b[0])
    rng = np.random.default_rng(42)
    rows = [add_noise(flux[i], 30.0, rng)[0] for i in range(3)]
    np.testing.assert_array_equal(a[0], np.stack(rows))
    c = add_noise(flux, 30.0, np.random.default_rng(43))
    assert not np.array_equal(a[0], c[0])


def test_mask_does_not_change_other_pixels_draws() -> None:
    flux = np.ones(100)
    mask = np.zeros(100, bool)
    mask[10] = True
    flux_bad = flux.copy()
    flux_bad[20] = np.nan
    n1, e1, m1 = add_noise(flux, 25.0, np.random.default_rng(1))
    n2, e2, m2 = add_noise(flux_bad, 25.0, np.random.default_rng(1), mask=mask)
    assert m2[10] and m2[20] and m2.sum() == 2 and not m1.any()
    assert n2[10] == 0.0 and e2[20] == 0.0
    keep = ~m2
    np.testing.assert_array_equal(n1[keep], n2[keep])


def test_zero_flux_is_masked() -> None:
    _, err, mask = add_noise(np.array([0.0, 1.0]), 20.0, np.random.default_rng(0))
    assert mask.tolist() == [True, False] and err[0] == 0.0


def test_rng_required_and_snr_validated() -> None:
    with pytest.raises(TypeError):
        add_noise(np.ones(5), 20.0, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="snr"):
        add_noise(np.ones(5), 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="snr"):
        add_noise(np.ones((2, 5)), [20.0, 30.0, 40.0], np.random.default_rng(0))


# --- LAMOST-like noise: σ = e(λ) |F|^p / snr, and the SNR mixture ----------------------------


def test_profile_noise_has_the_per_pixel_variance_of_its_error_vector() -> None:
    rng = np.random.default_rng(7)
    lam = INPUT_GRID.wavelength
    n_draw = 2000
    flux = 1 - 0.6 * np.exp(-0.5 * ((lam - 5000) / 3) ** 2)          # a deep line
    profile = draw_error_profiles(rng, 1)[0]
    noisy, err, mask = add_profile_noise(np.tile(flux, (n_draw, 1)), 50.0, rng, profile, 0.5)
    assert not mask.any()
    np.testing.assert_allclose(err[0], profile * flux**0.5 / 50.0, rtol=1e-14)
    chi2 = ((noisy - flux) / err) ** 2
    # per pixel over 2000 draws: E = 1, sd = sqrt(2/2000) = 0.032; 5σ for each of 2238 pixels
    assert np.abs(chi2.mean(axis=0) - 1).max() < 5 * np.sqrt(2 / n_draw)
    # all draws together: 4.5e6 values
    assert abs(chi2.mean() - 1) < 5 * np.sqrt(2 / chi2.size)
    assert abs(((noisy - flux) / err).mean()) < 5 / np.sqrt(chi2.size)


def test_profile_noise_per_spectrum_snr_and_power() -> None:
    rng = np.random.default_rng(8)
    flux = np.full((3, 4), 0.25)
    _, err, _ = add_profile_noise(flux, [10.0, 100.0, 20.0], rng, None, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(err[:, 0], [1 / 10, 0.5 / 100, 0.25 / 20], rtol=1e-14)
    # e = 1, p = 1 is eq. (1) up to rounding: same draws, same errors
    f = np.random.default_rng(0).uniform(0.3, 1.2, (5, 300))
    a = add_noise(f, 30.0, np.random.default_rng(9))
    b = add_profile_noise(f, 30.0, np.random.default_rng(9), flux_power=1.0)
    np.testing.assert_allclose(b[0], a[0], rtol=1e-14)
    np.testing.assert_array_equal(b[1], a[1])
    # F = 0 with p > 0 has no valid error: masked, as in eq. (1)
    _, e0, m0 = add_profile_noise(np.array([0.0, 1.0]), 20.0, rng, flux_power=0.5)
    assert m0.tolist() == [True, False] and e0[0] == 0.0
    with pytest.raises(ValueError, match="profile"):
        add_profile_noise(np.ones(3), 20.0, rng, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(TypeError):
        add_profile_noise(np.ones(3), 20.0, 1)  # type: ignore[arg-type]


def test_snr_mixture_has_the_configured_fraction_and_range() -> None:
    n, frac = 200_000, 0.3
    snr = draw_snr(np.random.default_rng(10), n, TRAIN_SNRS, (10.0, 300.0), frac)
    paper = np.isin(snr, TRAIN_SNRS)
    assert abs(paper.mean() - frac) < 5 * np.sqrt(frac * (1 - frac) / n)
    for s in TRAIN_SNRS:   # uniform over the paper's set
        assert abs(np.mean(snr[paper] == s) - 0.2) < 5 * np.sqrt(0.2 * 0.8 / paper.sum())
    wide = np.log(snr[~paper])
    lo, hi = np.log(10.0), np.log(300.0)
    assert wide.min() >= lo and wide.max() <= hi
    # log-uniform: ln SNR uniform on [ln 10, ln 300], mean and sd within 5σ
    m = wide.size
    span = hi - lo
    assert abs(wide.mean() - (lo + hi) / 2) < 5 * span / np.sqrt(12 * m)
    assert abs(wide.std() - span / np.sqrt(12)) < 5 * span / np.sqrt(12) / np.sqrt(m)
    # paper_fraction = 1 is the original stream: rng.choice over the set and nothing else
    a = draw_snr(np.random.default_rng(3), 50, TRAIN_SNRS, (10.0, 300.0), 1.0)
    np.testing.assert_array_equal(a, np.random.default_rng(3).choice(TRAIN_SNRS, 50))
    b = draw_snr(np.random.default_rng(3), 5000, TRAIN_SNRS, (10.0, 300.0), 0.0)
    assert not np.isin(b, TRAIN_SNRS).any()


def test_noise_config_is_validated() -> None:
    assert NoiseConfig().is_paper and not NoiseConfig(lamost_fraction=0.5).is_paper
    for bad in ({"lamost_fraction": 1.5}, {"paper_fraction": -0.1}, {"snr_range": (300.0, 10.0)},
                {"snr_range": (0.0, 10.0)}, {"red_blue_ratio": (0.5,)},
                {"flux_power": (-0.5, 0.5)}, {"flux_power": (0.0, 2.0)}):
        with pytest.raises(ValueError):
            NoiseConfig(**bad)  # type: ignore[arg-type]
