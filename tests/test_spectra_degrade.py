"""Gaussian degradation in ln λ: line widths, conservation, masks, errors, coarse grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr, ndtri

from csstflux.constants import FWHM_TO_SIGMA
from csstflux.containers import Resolution
from csstflux.spectra import ResolutionWarning, degrade_resolution, pixel_edges

SETTINGS = settings(max_examples=25, deadline=None)
LAM0 = 5000.0


def fine_log_grid(dln: float = 1e-5, half: int = 4000) -> np.ndarray:
    return LAM0 * np.exp(dln * np.arange(-half, half + 1))


def fwhm_ln(wavelength: np.ndarray, profile: np.ndarray) -> float:
    """FWHM in ln λ of a Gaussian-like profile, from its second moment."""
    x = np.log(wavelength)
    p = profile / profile.sum()
    mu = np.sum(p * x)
    return math.sqrt(np.sum(p * (x - mu) ** 2)) / FWHM_TO_SIGMA


def gaussian_line(wavelength: np.ndarray, r_line: float) -> np.ndarray:
    """Unit-area-ish Gaussian in ln λ with FWHM 1/r_line, centred on LAM0."""
    x = np.log(wavelength / LAM0)
    s = FWHM_TO_SIGMA / r_line
    return np.exp(-0.5 * (x / s) ** 2)


def test_delta_line_gets_fwhm_lambda_over_r() -> None:
    w = fine_log_grid()
    flux = np.zeros(w.size)
    flux[w.size // 2] = 1.0
    out, _, mask, eff = degrade_resolution(w, flux, 2000.0)
    assert not mask.any()
    np.testing.assert_array_equal(eff, 2000.0)
    fwhm_angstrom = LAM0 * fwhm_ln(w, out)
    # pixel box (1e-5 in ln λ) adds Δ²/12 in variance: 2e-4 relative in FWHM
    assert abs(fwhm_angstrom / (LAM0 / 2000.0) - 1) < 1e-3


@pytest.mark.parametrize("r_line", [5000.0, 3000.0])
def test_gaussian_line_widens_in_quadrature(r_line: float) -> None:
    w = fine_log_grid()
    out, _, _, _ = degrade_resolution(w, gaussian_line(w, r_line), 2000.0)
    expected = math.sqrt(1 / r_line**2 + 1 / 2000.0**2)
    assert abs(fwhm_ln(w, out) / expected - 1) < 2e-3


def test_r2500_source_to_2000_gives_width_of_2000() -> None:
    w = fine_log_grid()
    line = gaussian_line(w, 2500.0)  # an unresolved line observed at R = 2500
    out, _, _, eff = degrade_resolution(
        w, 1.0 - 0.5 * line, 2000.0, source=Resolution(resolving_power=2500.0)
    )
    np.testing.assert_array_equal(eff, 2000.0)
    assert abs(fwhm_ln(w, 1.0 - out) * 2000.0 - 1) < 2e-3


def test_constant_stays_constant_on_irregular_grid_with_holes() -> None:
    rng = np.random.default_rng(3)
    w = 4000.0 + np.cumsum(rng.uniform(0.2, 4.0, 3000))
    mask = rng.uniform(size=w.size) < 0.05
    flux = np.where(mask, np.nan, 7.5)
    out, _, m, _ = degrade_resolution(w, flux, 300.0, mask=mask)
    np.testing.assert_array_equal(m[mask], True)
    np.testing.assert_allclose(out[~m], 7.5, rtol=1e-14)
    assert np.all(out[m] == 0.0)


def test_flux_conserved() -> None:
    w = fine_log_grid(dln=2e-5, half=6000)
    flux = 1.0 + 3.0 * gaussian_line(w, 20000.0)
    out, _, _, _ = degrade_resolution(w, flux, 1000.0)
    dlam = np.diff(pixel_edges(w))
    rel = np.sum((out - 1.0) * dlam) / np.sum((flux - 1.0) * dlam) - 1
    assert abs(rel) < 1e-6
    rel_total = np.sum(out * dlam) / np.sum(flux * dlam) - 1
    assert abs(rel_total) < 1e-6


def brute_weights(w: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """Dense kernel: Gaussian CDF differences over ln-λ pixel edges, truncated at ±5σ."""
    e = np.log(pixel_edges(w))
    x = np.log(w)
    phi = np.vectorize(lambda z: 0.5 * math.erfc(-z / math.sqrt(2)))
    n = w.size
    k = np.zeros((n, n))
    for i in range(n):
        zhi = np.clip((e[1:] - x[i]) / sig[i], -5, 5)
        zlo = np.clip((e[:-1] - x[i]) / sig[i], -5, 5)
        k[i] = phi(zhi) - phi(zlo)
    return k


def test_matches_dense_brute_force_on_irregular_grid() -> None:
    rng = np.random.default_rng(11)
    w = 6000.0 + np.cumsum(rng.uniform(1.0, 20.0, 90))
    flux = rng.uniform(1, 2, w.size)
    err = rng.uniform(0.01, 0.1, w.size)
    mask = np.zeros(w.size, bool)
    mask[[5, 40, 41]] = True
    r_src = np.linspace(900.0, 1500.0, w.size)
    out, eout, m, _ = degrade_resolution(w, flux, 400.0, source=r_src, error=err, mask=mask)
    sig = FWHM_TO_SIGMA * np.sqrt(1 / 400.0**2 - 1 / r_src**2)
    k = brute_weights(w, sig) * ~mask
    den = k.sum(axis=1)
    good = ~m
    assert np.array_equal(m, mask)
    np.testing.assert_allclose(out[good], (k @ flux)[good] / den[good], rtol=1e-12)
    np.testing.assert_allclose(eout[good], np.sqrt(k**2 @ err**2)[good] / den[good], rtol=1e-12)


def test_coarse_model_grid_matches_fine_convolution() -> None:
    # a 20 Å model grid at R = 200: the result must be the Gaussian convolution of the
    # piecewise-constant model, computed here on 200 sub-pixels per model pixel
    rng = np.random.default_rng(5)
    w = np.arange(3000.0, 9000.0, 20.0)
    flux = 1.0 + 0.3 * rng.uniform(size=w.size)
    out, _, _, _ = degrade_resolution(w, flux, 200.0)
    e = pixel_edges(w)
    sub = 200
    fine_e = np.concatenate(
        [np.linspace(e[j], e[j + 1], sub, endpoint=False) for j in range(w.size)] + [e[-1:]]
    )
    fine_mid = 0.5 * (fine_e[1:] + fine_e[:-1])
    fine_f = np.repeat(flux, sub)
    ln_mid = np.log(fine_mid)
    dln = np.diff(np.log(fine_e))
    s = FWHM_TO_SIGMA / 200.0
    for i in range(40, w.size - 40, 37):
        kern = np.exp(-0.5 * ((ln_mid - math.log(w[i])) / s) ** 2) * dln
        ref = np.sum(kern * fine_f) / np.sum(kern)
        assert abs(out[i] / ref - 1) < 1e-4


def test_miles_like_source_left_unchanged_below_5000_angstrom() -> None:
    w = np.arange(3540.0, 7410.0, 0.9)
    rng = np.random.default_rng(2)
    flux = 1.0 + 0.1 * rng.standard_normal(w.size)
    with pytest.warns(ResolutionWarning, match=r"35\d\d\.\d–4999\.\d Å") as rec:
        out, _, _, eff = degrade_resolution(w, flux, 2000.0, source=Resolution(fwhm=2.5))
    assert len(rec) == 1
    low = w <= 5000.0
    np.testing.assert_array_equal(out[low], flux[low])
    np.testing.assert_allclose(eff[low], w[low] / 2.5)
    np.testing.assert_array_equal(eff[~low], 2000.0)
    assert np.any(out[~low] != flux[~low])


def test_source_equal_to_target_is_unchanged_and_warns() -> None:
    w = fine_log_grid(half=200)
    flux = 1 + gaussian_line(w, 3000.0)
    with pytest.warns(ResolutionWarning):
        out, _, _, eff = degrade_resolution(w, flux, 2000.0, source=np.full(w.size, 2000.0))
    np.testing.assert_array_equal(out, flux)
    np.testing.assert_array_equal(eff, 2000.0)


def test_source_coarser_everywhere_returns_the_cleaned_input() -> None:
    """LAMOST (R = 1800) to R = 2000: nothing to remove; masks, NaN and errors pass through."""
    rng = np.random.default_rng(4)
    w = fine_log_grid(half=300) * rng.uniform(0.999, 1.001, (3, 1))
    flux = rng.uniform(0.5, 2.0, w.shape)
    err = rng.uniform(0.01, 0.1, w.shape)
    mask = rng.uniform(size=w.shape) < 0.05
    flux[0, 10] = np.nan
    err[1, 20] = 0.0
    with pytest.warns(ResolutionWarning):
        out, e_out, m_out, eff = degrade_resolution(w, flux, 2000.0, source=Resolution(1800.0),
                                                    error=err, mask=mask)
    bad = mask | ~np.isfinite(flux) | (err <= 0)
    assert m_out[0, 10] and m_out[1, 20]
    np.testing.assert_array_equal(m_out, bad)
    np.testing.assert_array_equal(out, np.where(bad, 0.0, flux))
    assert e_out is not None
    np.testing.assert_array_equal(e_out, np.where(bad, 0.0, err))
    np.testing.assert_array_equal(eff, 1800.0)

def test_model_source_does_not_warn() -> None:
    w = fine_log_grid(half=200)
    degrade_resolution(w, np.ones(w.size), 2000.0)  # filterwarnings=error would fail


def test_mostly_masked_neighbourhood_is_masked() -> None:
    w = fine_log_grid(half=500)
    mask = np.zeros(w.size, bool)
    mask[:520] = True  # everything blue of pixel 520
    _, _, m, _ = degrade_resolution(w, np.ones(w.size), 2000.0, mask=mask)
    # pixel 519 is masked on input; pixel 520 keeps Φ(Δ/2σ) > 1/2 of its kernel on good pixels
    assert m[:520].all()
    assert not m[520:].any()
    _, _, m_strict, _ = degrade_resolution(w, np.ones(w.size), 2000.0, mask=mask, min_weight=0.99)
    # first kept pixel: Φ((i − 519.5)/σ) reaches 0.99 of the truncated kernel (σ = 21.2 pixels)
    sig_pix = FWHM_TO_SIGMA / 2000.0 / 1e-5
    first = math.ceil(519.5 + sig_pix * ndtri(0.99 * (ndtr(5.0) - ndtr(-5.0)) + ndtr(-5.0)))
    assert m_strict[:first].all() and not m_strict[first : w.size - first + 520].any()
    # the data's own end truncates kernels too: at min_weight=0.99 the red end is masked
    assert m_strict[-1]


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_spec=st.integers(1, 4), per_row=st.booleans())
def test_batch_equals_one_at_a_time(seed: int, n_spec: int, per_row: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    base = 5000.0 * np.exp(1e-4 * np.arange(n))
    w = base * rng.uniform(0.99, 1.01, (n_spec, 1)) if per_row else base
    flux = rng.uniform(0.5, 2, (n_spec, n))
    err = rng.uniform(0.01, 0.1, (n_spec, n))
    mask = rng.uniform(size=(n_spec, n)) < 0.1
    r_src = rng.uniform(3000, 6000, (n_spec, 1)) * np.ones(n)
    fb, eb, mb, rb = degrade_resolution(w, flux, 2000.0, source=r_src, error=err, mask=mask)
    for i in range(n_spec):
        fi, ei, mi, ri = degrade_resolution(
            w[i] if per_row else w, flux[i], 2000.0, source=r_src[i], error=err[i], mask=mask[i]
        )
        np.testing.assert_allclose(fb[i], fi, rtol=1e-12, atol=0)
        np.testing.assert_allclose(eb[i], ei, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(mb[i], mi)
        np.testing.assert_array_equal(rb[i], ri)


def test_bad_arguments() -> None:
    w = fine_log_grid(half=10)
    with pytest.raises(ValueError, match="target_r"):
        degrade_resolution(w, np.ones(w.size), 0.0)
    with pytest.raises(ValueError, match="source resolving power"):
        degrade_resolution(w, np.ones(w.size), 2000.0, source=np.full(w.size, -1.0))
