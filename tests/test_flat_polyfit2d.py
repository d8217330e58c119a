"""2D polynomial flat fits: exact recovery, calibrated errors, chunked normal equations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from csstflux.flat import polyfit2d as pf
from csstflux.flat.normalise import detector_mean_functional, normalise_flat

SHAPE = (9232, 9216)  # CSST detector, (n_y, n_x)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240521)


def _stars(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-0.5, SHAPE[1] - 0.5, n), rng.uniform(-0.5, SHAPE[0] - 0.5, n)


def _true_coeffs(rng: np.random.Generator, n_wave: int, order: int = 2) -> np.ndarray:
    c = rng.normal(0.0, 0.02, size=(n_wave, pf.n_terms(order)))
    c[:, 0] += 1.0  # a flat: about 1, with a few per cent of large-scale structure
    return c


def test_terms_and_scaling() -> None:
    assert pf.term_powers(2) == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    assert [pf.n_terms(k) for k in range(5)] == [len(pf.term_powers(k)) for k in range(5)]
    u, v = pf.scale_coords([-0.5, SHAPE[1] - 0.5, (SHAPE[1] - 1) / 2],
                           [-0.5, SHAPE[0] - 0.5, (SHAPE[0] - 1) / 2], SHAPE)
    np.testing.assert_allclose(u, [-1, 1, 0], atol=1e-15)
    np.testing.assert_allclose(v, [-1, 1, 0], atol=1e-15)
    a = pf.design_matrix([SHAPE[1] - 0.5], [-0.5], 2, shape=SHAPE)
    np.testing.assert_allclose(a, [[1, 1, -1, 1, -1, 1]])
    with pytest.raises(ValueError, match="order"):
        pf.term_powers(-1)
    with pytest.raises(ValueError, match="shape"):
        pf.design_matrix([1.0], [1.0], 2, shape=(0, 10))


def test_noise_free_polynomial_recovered(rng: np.random.Generator) -> None:
    x, y = _stars(rng, 400)
    c = _true_coeffs(rng, 64)
    values = pf.evaluate(c, x, y, shape=SHAPE)  # (400, 64)
    assert values.shape == (400, 64)
    fit = pf.solve(pf.normal_equations(x, y, values, np.full_like(values, 1e4), shape=SHAPE))
    assert fit.ok.all() and fit.coeffs.shape == (64, 6) and fit.cov.shape == (64, 6, 6)
    assert np.abs(fit.coeffs - c).max() < 1e-6  # measured ~1e-15
    gx, gy = _stars(rng, 1000)
    assert np.abs(pf.evaluate(fit.coeffs, gx, gy, shape=SHAPE)
                  - pf.evaluate(c, gx, gy, shape=SHAPE)).max() < 1e-6
    # χ² = btb − c·atb cancels: zero up to rounding of btb (≈ 4e6 here)
    assert np.all(np.abs(fit.chi2) < 1e-13 * pf.normal_equations(x, y, values, 1e4,
                                                                  shape=SHAPE).btb)
    single = pf.solve(pf.normal_equations(x, y, values[:, 3], 1.0, shape=SHAPE))
    np.testing.assert_allclose(single.coeffs, c[3], atol=1e-12)
    assert single.coeffs.shape == (6,) and single.ok.shape == ()


def test_per_wavelength_positions(rng: np.random.Generator) -> None:
    """Slitless: a star's wavelengths fall on different pixels; 2D positions are honoured."""
    n, w = 300, 12
    x = rng.uniform(0, SHAPE[1] - 1, (n, w))
    y = rng.uniform(0, SHAPE[0] - 1, (n, w))
    c = _true_coeffs(rng, w)
    values = pf.evaluate(c, x, y, shape=SHAPE)
    assert values.shape == (n, w)
    for k in (0, 7):
        np.testing.assert_allclose(values[:, k], pf.evaluate(c[k], x[:, k], y[:, k],
                                                             shape=SHAPE), rtol=1e-14)
    fit = pf.solve(pf.normal_equations(x, y, values, 1.0, shape=SHAPE))
    np.testing.assert_allclose(fit.coeffs, c, atol=1e-10)


def test_noise_z_scores_are_standard_normal(rng: np.random.Generator) -> None:
    """Independent realisations ride on the wavelength axis: 4000 fits in one call."""
    n_star, n_real = 400, 4000
    x, y = _stars(rng, n_star)
    c = _true_coeffs(rng, n_real)
    sigma = rng.uniform(0.005, 0.02, (n_star, n_real))  # heteroscedastic, known
    values = pf.evaluate(c, x, y, shape=SHAPE) + rng.normal(size=sigma.shape) * sigma
    fit = pf.solve(pf.normal_equations(x, y, values, 1.0 / sigma**2, shape=SHAPE))
    z = (fit.coeffs - c) / np.sqrt(np.einsum("wtt->wt", fit.cov))
    for t in range(z.shape[1]):  # one z per realisation: independent samples
        assert abs(z[:, t].mean()) < 0.06 and abs(z[:, t].std() - 1.0) < 0.04
        assert stats.kstest(z[:, t], "norm").pvalue > 0.01
    # the value (and its predicted error) at one random pixel per realisation
    px, py = _stars(rng, n_real)
    est, err = pf.evaluate_with_error(fit.coeffs, fit.cov, px[None], py[None], shape=SHAPE)
    assert est.shape == err.shape == (1, n_real)
    zv = ((est - pf.evaluate(c, px[None], py[None], shape=SHAPE)) / err)[0]
    assert abs(zv.mean()) < 0.06 and abs(zv.std() - 1.0) < 0.04
    assert stats.kstest(zv, "norm").pvalue > 0.01
    # reduced χ² of the correct model is χ²(394)/394: mean 1, sd sqrt(2/394)
    assert abs(fit.reduced_chi2.mean() - 1.0) < 4 * np.sqrt(2 / 394 / n_real)


def test_chunks_sum_to_the_single_fit(rng: np.random.Generator) -> None:
    n_star, n_wave = 1000, 40
    x, y = _stars(rng, n_star)
    sigma = rng.uniform(0.005, 0.02, (n_star, n_wave))
    values = pf.evaluate(_true_coeffs(rng, n_wave), x, y, shape=SHAPE)
    values += rng.normal(size=sigma.shape) * sigma
    values[rng.random(values.shape) < 0.05] = np.nan  # missing entries are dropped
    w = 1.0 / sigma**2
    whole = pf.solve(pf.normal_equations(x, y, values, w, shape=SHAPE))
    cuts = np.sort(rng.choice(np.arange(1, n_star), 6, replace=False))
    parts = [pf.normal_equations(x[s], y[s], values[s], w[s], shape=SHAPE)
             for s in np.split(np.arange(n_star), cuts)]
    summed = pf.solve(sum(parts))  # type: ignore[arg-type]
    tree = pf.solve((parts[0] + parts[1]) + ((parts[2] + parts[3]) + (parts[4] + parts[5]))
                    + parts[6])
    for other in (summed, tree):
        np.testing.assert_allclose(other.coeffs, whole.coeffs, rtol=0, atol=1e-10)
        np.testing.assert_allclose(other.cov, whole.cov, rtol=1e-10, atol=0)
        np.testing.assert_array_equal(other.n, whole.n)
    assert whole.n.min() < n_star  # NaNs were dropped per wavelength
    with pytest.raises(ValueError, match="order"):
        _ = parts[0] + pf.normal_equations(x, y, values, w, 1, shape=SHAPE)


def test_sigma_clipping_removes_outliers(rng: np.random.Generator) -> None:
    n_star, n_wave = 400, 30
    x, y = _stars(rng, n_star)
    c = _true_coeffs(rng, n_wave)
    sigma = np.full((n_star, n_wave), 0.01)
    values = pf.evaluate(c, x, y, shape=SHAPE) + rng.normal(size=sigma.shape) * sigma
    bad = rng.random(values.shape) < 0.05
    values[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(10, 30, bad.sum()) * 0.01
    plain = pf.fit_sigma_clip(x, y, values, sigma, shape=SHAPE, max_iter=0)
    clip = pf.fit_sigma_clip(x, y, values, sigma, shape=SHAPE, nsigma=3.0, max_iter=10)
    assert clip.kept is not None and clip.kept.shape == (n_star, n_wave)
    assert not (clip.kept & bad).any()  # every injected outlier is removed
    assert (~clip.kept & ~bad).sum() / (~bad).sum() < 0.01  # ~0.3% of good stars at 3σ
    z_clip = (clip.coeffs - c) / np.sqrt(np.einsum("wtt->wt", clip.cov))
    z_plain = (plain.coeffs - c) / np.sqrt(np.einsum("wtt->wt", plain.cov))
    assert np.abs(z_clip).max() < 4.5 and np.abs(z_plain).max() > 10
    assert 0.8 < np.median(clip.reduced_chi2) < 1.2 and np.median(plain.reduced_chi2) > 5
    one = pf.fit_sigma_clip(x, y, values[:, 0], sigma[:, 0], shape=SHAPE)
    np.testing.assert_array_equal(one.kept, clip.kept[:, 0])
    np.testing.assert_allclose(one.coeffs, clip.coeffs[0], rtol=1e-12)


def test_noise_free_clip_keeps_every_star(rng: np.random.Generator) -> None:
    x, y = _stars(rng, 50)
    v = pf.evaluate(_true_coeffs(rng, 3), x, y, shape=SHAPE)
    fit = pf.fit_sigma_clip(x, y, v, 1e-3, shape=SHAPE)
    assert fit.kept is not None and fit.kept.all() and fit.n_iter == 1


def test_singular_systems_are_flagged_not_raised(rng: np.random.Generator) -> None:
    x, y = _stars(rng, 100)
    values = pf.evaluate(_true_coeffs(rng, 4), x, y, shape=SHAPE)
    values[:, 1] = np.nan  # no data at all
    values[5:, 2] = np.nan  # fewer stars than terms
    xl = np.linspace(0, SHAPE[1] - 1, 100)  # all stars on one line: degenerate
    line = pf.solve(pf.normal_equations(xl, 0.5 * xl, values[:, 0], 1.0, shape=SHAPE))
    fit = pf.solve(pf.normal_equations(x, y, values, 1.0, shape=SHAPE))
    np.testing.assert_array_equal(fit.ok, [True, False, False, True])
    assert np.isnan(fit.coeffs[1:3]).all() and np.isnan(fit.cov[1:3]).all()
    assert np.isfinite(fit.coeffs[[0, 3]]).all()
    assert not line.ok and np.isnan(line.coeffs).all()


def test_normalised_flat_and_its_errors(rng: np.random.Generator) -> None:
    c = _true_coeffs(rng, 3)
    gx, gy = np.linspace(0, SHAPE[1] - 1, 9), np.linspace(0, SHAPE[0] - 1, 7)
    cov = np.zeros((3, 6, 6))
    flat, sig = normalise_flat(c, cov, gx, gy, shape=SHAPE)
    assert flat.shape == sig.shape == (3, 7, 9) and np.all(sig == 0)
    # the analytic detector mean agrees with a brute-force mean over a fine pixel grid
    fx, fy = np.meshgrid(np.arange(0, SHAPE[1], 16) + 7.5, np.arange(0, SHAPE[0], 16) + 7.5)
    brute = pf.evaluate(c, fx.ravel(), fy.ravel(), shape=SHAPE).mean(axis=0)
    np.testing.assert_allclose(c @ detector_mean_functional(2), brute, rtol=2e-6)
    ref = pf.evaluate(c, *(g.ravel() for g in np.meshgrid(gx, gy)), shape=SHAPE) / brute
    np.testing.assert_allclose(flat.reshape(3, -1), ref.T, rtol=3e-6)
    # propagated σ against Monte Carlo draws of the coefficients (linear map is exact to O(σ²))
    x, y = _stars(rng, 400)
    s = np.full((400, 1), 0.01)
    fit = pf.solve(pf.normal_equations(x, y, pf.evaluate(c[:1], x, y, shape=SHAPE), 1 / s**2,
                                       shape=SHAPE))
    f1, s1 = normalise_flat(fit.coeffs[0], fit.cov[0], gx, gy, shape=SHAPE)
    draws = rng.multivariate_normal(fit.coeffs[0], fit.cov[0], size=20000)
    mc, _ = normalise_flat(draws, np.zeros((20000, 6, 6)), gx, gy, shape=SHAPE)
    np.testing.assert_allclose(mc.std(axis=0), s1, rtol=0.03)
    # a flat known up to a constant factor only: normalised, it has no error at all
    scale_only = np.outer(c[0], c[0]) * 1e-4
    _, s2 = normalise_flat(c[0], scale_only, gx, gy, shape=SHAPE)
    assert s2.max() < 1e-9  # against σ = 0.01 before normalising (rounding: ~1e-11)


@settings(max_examples=40, deadline=None)
@given(order=st.integers(0, 3), extra=st.integers(0, 1), n_extra=st.integers(2, 40),
       seed=st.integers(0, 2**32 - 1))
def test_any_polynomial_of_lower_order_is_recovered_exactly(order: int, extra: int,
                                                            n_extra: int, seed: int) -> None:
    """A polynomial of order ≤ N is recovered exactly by an order-N fit (zeros above)."""
    rng = np.random.default_rng(seed)
    fit_order = order + extra
    true = np.zeros(pf.n_terms(fit_order))
    true[:pf.n_terms(order)] = rng.uniform(-10, 10, pf.n_terms(order))
    x, y = _stars(rng, pf.n_terms(fit_order) + n_extra)
    v = pf.evaluate(true, x, y, fit_order, shape=SHAPE)
    fit = pf.solve(pf.normal_equations(x, y, v, rng.uniform(0.5, 2.0, x.size), fit_order,
                                       shape=SHAPE))
    assert fit.ok
    np.testing.assert_allclose(fit.coeffs, true, rtol=0, atol=1e-7 * max(1.0, abs(true).max()))
