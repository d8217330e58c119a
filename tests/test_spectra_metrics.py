"""Relative residual (eq. 2), RMSAE (eq. 3), band and binned summaries, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.grids import BANDS, OUTPUT_GRID, Band
from csstflux.spectra import (
    band_summary,
    binned_summary,
    coverage,
    pixel_summary,
    relative_residual,
    rmsae,
)

# disjoint bands, so each can get its own residual distribution
TEST_BANDS = {
    "A": Band("A", 2500.0, 4000.0),
    "B": Band("B", 4000.1, 7000.0),
    "C": Band("C", 7000.1, 10500.0),
}
TRUTH = {"A": (0.01, 0.04), "B": (-0.002, 0.002), "C": (0.0, 0.001)}  # (median, σ)
# half the 16–84 percentile range of a unit Gaussian: Φ⁻¹(0.84)
HALF_RANGE_Z = 0.994457883209753


def synthetic(rng: np.random.Generator, n_spec: int) -> np.ndarray:
    w = OUTPUT_GRID.wavelength
    r = np.empty((n_spec, w.size))
    for name, band in TEST_BANDS.items():
        mu, s = TRUTH[name]
        inb = band.mask(w)
        r[:, inb] = rng.normal(mu, s, (n_spec, inb.sum()))
    return r


def test_relative_residual_and_rmsae_exact() -> None:
    truth = np.array([[1.0, 2.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    pred = np.array([[1.03, 1.94, 4.12, 5.0], [np.nan, 1.0, 1.0, 1.0]])
    r, m = relative_residual(pred, truth)
    np.testing.assert_allclose(r[0, :3], [0.03, -0.03, 0.03], rtol=1e-12)
    assert m.tolist() == [[False, False, False, True], [True, False, False, False]]
    assert r[0, 3] == 0.0 and r[1, 0] == 0.0
    np.testing.assert_allclose(rmsae(r, m), [0.03, 0.0], rtol=1e-12)
    assert np.isnan(rmsae(np.zeros(3), np.ones(3, bool)))
    assert rmsae(r[0], m[0]).shape == ()


def test_pixel_and_band_summaries_recover_known_distribution() -> None:
    rng = np.random.default_rng(12)
    r = synthetic(rng, 4000)
    w = OUTPUT_GRID.wavelength
    per_pixel = pixel_summary(r)
    assert per_pixel.median.shape == (w.size,) and np.all(per_pixel.count == 4000)
    for pooled in (False, True):
        summ = band_summary(r, w, bands=TEST_BANDS, pooled=pooled)
        for name, (mu, s) in TRUTH.items():
            # per-pixel estimates from 4000 draws: median ± 1.25σ/√n, σ ± σ/√(2n); 5-sigma
            tol = 5 * s / np.sqrt(4000)
            assert summ[name].median == pytest.approx(mu, abs=tol)
            assert summ[name].std == pytest.approx(s, abs=tol)
            assert summ[name].sigma == pytest.approx(s * HALF_RANGE_Z, abs=2 * tol)


def test_robust_sigma_ignores_outliers_and_masks_hide_garbage() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0.0, 0.01, (2000, 50))
    out = rng.uniform(size=r.shape) < 0.02
    r[out] = 5.0
    w = np.linspace(4500.0, 6000.0, 50)
    summ = band_summary(r, w, bands={"GV": BANDS["GV"]}, pooled=True)["GV"]
    assert summ.sigma == pytest.approx(0.01, rel=0.1)
    assert summ.std > 0.5
    masked = band_summary(np.where(out, np.nan, r), w, out, bands={"GV": BANDS["GV"]}, pooled=True)[
        "GV"
    ]
    assert masked.std == pytest.approx(0.01, rel=0.05)
    assert int(masked.count) == (~out).sum()


def test_binned_summary_by_teff() -> None:
    rng = np.random.default_rng(9)
    n = 3000
    teff = rng.uniform(5000.0, 9750.0, n)
    edges = np.array([5000.0, 6000.0, 7000.0, 9750.0])
    width = np.select([teff < 6000, teff < 7000], [0.04, 0.02], 0.01)
    w = OUTPUT_GRID.wavelength
    r = rng.standard_normal((n, w.size)) * width[:, None]
    res = binned_summary(r, w, teff, edges)
    expected_count = np.histogram(teff, edges)[0]
    np.testing.assert_array_equal(res.count, expected_count)
    assert res.bands == tuple(BANDS)
    assert res.median.shape == (3, 3) and res.pixel_sigma.shape == (3, w.size)
    for b, s in enumerate([0.04, 0.02, 0.01]):
        tol = 5 * s / np.sqrt(expected_count[b])
        np.testing.assert_allclose(res.std[b], s, atol=tol)
        np.testing.assert_allclose(res.median[b], 0.0, atol=tol)
        np.testing.assert_allclose(res.sigma[b], s * HALF_RANGE_Z, atol=2 * tol)
    # a value on the last edge falls in the last bin, values outside every bin are dropped
    res2 = binned_summary(r[:3], w, np.array([9750.0, 4000.0, np.nan]), edges)
    assert res2.count.tolist() == [0, 0, 1]
    assert np.isnan(res2.median[0]).all()
    assert set(res2.to_dict()) >= {"edges", "count", "median", "sigma", "std"}


def test_binned_summary_by_snr() -> None:
    rng = np.random.default_rng(1)
    snr = np.repeat([20.0, 40.0, 80.0], 500)
    w = OUTPUT_GRID.wavelength
    r = rng.standard_normal((snr.size, w.size)) / snr[:, None]
    res = binned_summary(r, w, snr, [17.5, 30.0, 60.0, 100.0], pooled=True)
    np.testing.assert_allclose(res.std[:, 0], [1 / 20, 1 / 40, 1 / 80], rtol=0.01)


def test_coverage_of_calibrated_gaussian() -> None:
    rng = np.random.default_rng(2)
    sigma = rng.uniform(0.01, 0.1, (500, 574))
    r = rng.standard_normal(sigma.shape) * sigma
    p = 0.6826894921370859
    n = r.size
    assert float(coverage(r, sigma)) == pytest.approx(p, abs=5 * np.sqrt(p * (1 - p) / n))
    per_pixel = coverage(r, sigma, axis=0)
    assert per_pixel.shape == (574,)
    assert abs(per_pixel.mean() - p) < 0.01
    assert float(coverage(r, 2 * sigma)) == pytest.approx(0.9544997, abs=0.003)
    mask = np.zeros(r.shape, bool)
    mask[:, 0] = True
    assert np.isnan(coverage(r, sigma, mask, axis=0)[0])
