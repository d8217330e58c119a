"""LAMOST-like error profiles (measured on the real files) and the training augmentations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from csstflux.constants import C_KMS, FWHM_TO_SIGMA
from csstflux.grids import INPUT_GRID
from csstflux.io.formats.lamost import read
from csstflux.spectra.augment import (
    AugmentConfig,
    augment,
    degrade_lsf,
    junction_artefact,
    masked_runs,
    shift_rv,
)
from csstflux.spectra.degrade import ResolutionWarning
from csstflux.spectra.doppler import doppler_factor
from csstflux.spectra.error_profile import (
    BLUE_WINDOW,
    LAMOST_PROFILES,
    RED_WINDOW,
    draw_error_profiles,
    error_profile,
    fit_error_profile,
    red_blue_ratio,
)
from csstflux.spectra.noise import NoiseConfig, add_profile_noise
from csstflux.spectra.prepare import prepare_input

LAM = INPUT_GRID.wavelength
X = np.log(LAM)
#: obsid of the four LRS files, in the order of LAMOST_PROFILES.
OBSIDS = (101001, 101013, 359910161, 677503031)


@pytest.fixture(scope="module")
def real(shared_data):
    """The real LRS files prepared as network inputs: {obsid: (flux_norm, err_norm, mask)}."""
    out = {}
    for path in sorted((shared_data / "lamost").glob("spec-*")):
        s = read(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResolutionWarning)  # LAMOST R = 1800 < 2000
            out[int(s.meta["obsid"])] = prepare_input(s.wavelength, s.flux, s.error, s.mask,
                                                      s.resolution, z=s.meta["z"])
    assert sorted(out) == sorted(OBSIDS)
    return out


def _blue_tilt(rel):
    """Median relative error over 4000–4300 Å / over 5200–5500 Å."""
    return (np.median(rel[..., LAM < 4300], axis=-1)
            / np.median(rel[..., (LAM > 5200) & (LAM < 5500)], axis=-1))


def test_measured_profiles_rebuild_from_the_real_files(real):
    for obsid, const in zip(OBSIDS, LAMOST_PROFILES, strict=True):
        _, err, mask = real[obsid]
        fit = fit_error_profile(LAM, err, mask)
        assert (fit.junction, fit.width) == (const.junction, const.width)
        # the constants are printed to 4 significant digits
        np.testing.assert_allclose([*fit.blue, *fit.red, fit.dip, fit.ratio],
                                   [*const.blue, *const.red, const.dip, const.ratio],
                                   rtol=1e-3, atol=1e-3)
        assert fit.rms == pytest.approx(const.rms, abs=1e-3)


def test_error_model_reproduces_the_real_red_blue_ratio_and_blue_tilt(real):
    rel = {k: e / np.abs(f) for k, (f, e, _) in real.items()}   # err/flux, as measured
    ratios = np.array([red_blue_ratio(LAM, r) for r in rel.values()])
    tilts = np.array([_blue_tilt(r) for r in rel.values()])
    np.testing.assert_allclose(np.sort(ratios), [0.406, 0.585, 0.587, 0.605], atol=2e-3)
    # the per-pixel error model: noise on a flat continuum at the default configuration
    cfg = NoiseConfig()
    rng = np.random.default_rng(11)
    n = 2000
    profile = draw_error_profiles(rng, n, cfg.red_blue_ratio)
    _, err, _ = add_profile_noise(np.ones((n, INPUT_GRID.n)), rng.uniform(10, 300, n), rng,
                                  profile, rng.uniform(*cfg.flux_power, n))
    model_ratio = red_blue_ratio(LAM, err)
    model_tilt = _blue_tilt(err)
    # the median model ratio within 5 % of the real files' median (0.586)
    assert np.median(model_ratio) == pytest.approx(np.median(ratios), rel=0.05)
    # every real ratio inside the drawn range; the median blue tilt within 15 % (real: 2.4)
    assert model_ratio.min() < ratios.min() and ratios.max() < model_ratio.max()
    assert np.median(model_tilt) == pytest.approx(np.median(tilts), rel=0.15)
    q05, q95 = np.percentile(model_tilt, [5, 95])
    assert q05 < 2.0 and q95 > 3.5   # spans most of the measured 1.6-4.9


def test_profile_has_median_one_and_the_exact_ratio():
    e = error_profile(LAM, (1.0, 10.0), (-5.0, 10.0), [5700.0, 5950.0], 0.5, 40.0, [0.4, 0.9])
    np.testing.assert_allclose(np.median(e, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(red_blue_ratio(LAM, e), [0.4, 0.9], rtol=1e-12)
    # the S/N dips at the junction by exp(d): compare with the same profile without a dip
    flat = error_profile(LAM, (1.0, 10.0), (-5.0, 10.0), 5700.0, 0.0, 40.0, 0.4)[0]
    j = np.searchsorted(LAM, 5700.0) - 1          # last blue pixel
    gain = (e[0] / flat)[j] / (e[0] / flat)[j - 300]
    assert gain == pytest.approx(np.exp(0.5 * np.exp(-0.5 * ((LAM[j] - 5700) / 40) ** 2)),
                                 rel=1e-9)
    with pytest.raises(ValueError, match="junction"):
        error_profile(LAM, (0, 0), (0, 0), BLUE_WINDOW[1] - 1, 0.0, 40.0, 1.0)
    with pytest.raises(ValueError, match="junction"):
        error_profile(LAM, (0, 0), (0, 0), RED_WINDOW[0] + 1, 0.0, 40.0, 1.0)


def _line(sigma_px, depth=0.5, centre=5500.0):
    return 1.0 - depth * np.exp(-0.5 * ((X - np.log(centre)) / (sigma_px * INPUT_GRID.dlnlambda))
                                ** 2)


def _moments(flux):
    """Centroid and variance in ln λ of absorption lines, 1 − F as weight (last axis)."""
    w = 1.0 - flux
    mu = np.sum(w * X, axis=-1) / np.sum(w, axis=-1)
    return mu, np.sum(w * (X - mu[..., np.newaxis]) ** 2, axis=-1) / np.sum(w, axis=-1)


@pytest.mark.parametrize("v", [30.0, -100.0, 7.5])
def test_rv_jitter_moves_a_narrow_line_by_lambda_v_over_c(v):
    flux = _line(1.5)
    shifted, mask = shift_rv(flux, v)
    c0, _ = _moments(flux)
    c1, _ = _moments(shifted)
    # rebinning moves the centroid by ln(1 + z), up to the overlaps being linear in λ, not
    # ln λ, within a pixel: a relative O(Δlnλ) = 2.5e-4 (measured 1e-4)
    assert c1 - c0 == pytest.approx(np.log(doppler_factor(v)), rel=3e-4)
    # in Å: λ v / c (0.55 Å at 30 km/s) to first order; the relativistic factor adds λ β²/2
    lam0, beta = np.exp(c0), v / C_KMS
    assert lam0 * np.expm1(c1 - c0) == pytest.approx(lam0 * beta,
                                                     abs=lam0 * (beta**2 + 3e-4 * abs(beta)))
    assert not mask.any()                  # edges extended, nothing lost
    np.testing.assert_allclose(shifted[[0, -1]], 1.0, atol=1e-12)


def test_resolution_1800_gives_the_analytic_line_width():
    # an unresolved line seen at R = 2000 is a Gaussian of σ = FWHM_TO_SIGMA / 2000 in ln λ
    s2000 = FWHM_TO_SIGMA / 2000.0 / INPUT_GRID.dlnlambda
    flux = _line(s2000)
    out, mask = degrade_lsf(flux, 1800.0)
    _, var = _moments(out)
    # σ² grows by FWHM_TO_SIGMA² (1/1800² − 1/2000²): the line is at R = 1800 exactly
    r_out = FWHM_TO_SIGMA / np.sqrt(var)
    assert r_out == pytest.approx(1800.0, rel=1e-5)
    assert not mask.any()
    # a wider line: σ_out² = σ_in² + σ_k² (width in Å at 5500 Å)
    flux = _line(2.0)
    _, v_in = _moments(flux)
    _, v_out = _moments(degrade_lsf(flux, 1800.0)[0])
    sk = FWHM_TO_SIGMA * np.sqrt(1 / 1800.0**2 - 1 / 2000.0**2)
    assert 5500.0 * np.sqrt(v_out) == pytest.approx(5500.0 * np.sqrt(v_in + sk**2), rel=1e-6)
    # R at or above the grid's 2000 leaves the spectrum unchanged
    np.testing.assert_array_equal(degrade_lsf(flux, 2000.0)[0], flux)


def test_lsf_keeps_masked_pixels_out():
    flux = _line(2.0)
    mask = np.zeros(flux.size, bool)
    mask[500:503] = True
    flux_bad = np.where(mask, 1e6, flux)
    out, m = degrade_lsf(flux_bad, 1800.0, mask)
    assert m[500:503].all() and m.sum() == 3
    assert np.all(np.abs(out[~m] - 1.0) < 0.6)   # the 1e6 never leaks


def test_junction_step_seen_through_the_continuum_normalisation():
    flux = np.ones((1, INPUT_GRID.n))
    a = 0.03
    out = junction_artefact(flux, 5800.0, a, 0.0, 40.0)[0]
    j = int(np.searchsorted(LAM, 5800.0))
    far = np.abs(np.arange(LAM.size) - j) > 26
    np.testing.assert_allclose(out[far], 1.0, rtol=1e-12)   # a constant T normalises away
    # the statistic measured on the real files: mean above minus mean below ≈ a/2
    d = out[j:j + 25].mean() - out[j - 25:j].mean()
    assert d / a == pytest.approx(0.51, abs=0.02)
    # no artefact: unchanged
    np.testing.assert_allclose(junction_artefact(flux, 5800.0, 0.0, 0.0, 40.0), flux,
                               rtol=1e-12)


def test_masked_runs_count_and_length():
    rng = np.random.default_rng(4)
    n, lam_runs, lo, hi = 20000, 0.5, 1, 40
    m = masked_runs(rng, n, INPUT_GRID.n, lam_runs, (lo, hi))
    frac_rows = m.any(axis=1).mean()
    p = 1 - np.exp(-lam_runs)
    assert abs(frac_rows - p) < 5 * np.sqrt(p * (1 - p) / n)
    k = np.arange(lo, hi + 1)
    p_len = np.log((k + 1) / k) / np.log((hi + 1) / lo)      # floor of a log-uniform length
    mean_len, mean_len2 = np.sum(k * p_len), np.sum(k**2 * p_len)
    # masked pixels per spectrum: compound Poisson, variance λ E[L²]; 5σ, plus 1 % for runs
    # shortened by overlaps and by the spectrum's end
    tol = 5 * np.sqrt(lam_runs * mean_len2 / n) + 0.01 * lam_runs * mean_len
    assert abs(m.sum(axis=1).mean() - lam_runs * mean_len) < tol
    starts = np.diff(np.pad(m, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    lengths = np.flatnonzero(starts == -1) - np.flatnonzero(starts == 1)
    assert lengths.min() >= lo and np.mean(lengths <= hi) > 0.99


def test_augment_draws_each_augmentation_from_its_own_stream():
    flux = np.tile(_line(2.0), (8, 1))
    mask = np.zeros(flux.shape, bool)
    rv = AugmentConfig(rv_jitter_kms=30.0)
    both = AugmentConfig(rv_jitter_kms=30.0, mask_runs=3.0)
    f1, m1 = augment(flux, mask, rv, np.random.default_rng(1))
    f2, m2 = augment(flux, mask, both, np.random.default_rng(1))
    assert not m1.any() and m2.any()
    np.testing.assert_array_equal(f1[~m2], f2[~m2])      # same shifts either way
    assert np.all(f2[m2] == 0.0)
    assert not np.array_equal(f1[0], f1[1])              # a velocity per spectrum
    off, _ = augment(flux, mask, AugmentConfig(), np.random.default_rng(1))
    np.testing.assert_array_equal(off, flux)
    assert not AugmentConfig().enabled and both.enabled


def test_rv_draws_follow_the_configured_distribution():
    flux = np.tile(_line(1.5), (400, 1))
    c0, _ = _moments(flux[0])
    for dist, expected_std in (("gaussian", 30.0), ("uniform", 30.0 / np.sqrt(3))):
        out, _ = augment(flux, None, AugmentConfig(rv_jitter_kms=30.0, rv_distribution=dist),
                         np.random.default_rng(2))
        v = (_moments(out)[0] - c0) * C_KMS
        assert np.std(v) == pytest.approx(expected_std, rel=5 / np.sqrt(2 * 400))
        if dist == "uniform":
            assert np.abs(v).max() <= 30.0 + 1e-3


@pytest.mark.parametrize("kwargs", [
    {"rv_jitter_kms": -1.0}, {"rv_distribution": "cauchy"}, {"resolution": (2000.0, 1800.0)},
    {"mask_run_length": (0, 5)}, {"junction_step": -0.1},
])
def test_augment_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)
