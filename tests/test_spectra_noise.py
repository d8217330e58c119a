"""Noise model of eq. (1): F' = F + r F, r ~ N(0, 1/snr²), σ = |F|/snr."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.spectra import add_noise


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
