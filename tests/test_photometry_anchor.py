"""Photometric anchoring: injection–recovery of E(B−V) and scale, band rejection, flags."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.flags import Flag
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
from csstflux.photometry.anchor import Anchor, AnchorConfig, fit_anchor
from csstflux.photometry.bands import load_bands
from csstflux.photometry.extinction import extinction_k, redden
from csstflux.photometry.synth import SyntheticPhotometry

BANDS = ("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z", "gaia_G", "gaia_BP", "gaia_RP")
HC_K = 1.438777e8   # Å K


def planck_seds(teff: np.ndarray) -> np.ndarray:
    w = OUTPUT_GRID.wavelength
    f = w[None, :] ** -5 / np.expm1(HC_K / (w[None, :] * teff[:, None]))
    win = OUTPUT_GRID.window(*SCALING_WINDOW)
    return f / f[:, win].mean(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def anchor() -> Anchor:
    synth = SyntheticPhotometry.from_bands(load_bands(BANDS))
    return Anchor(synth=synth, k=extinction_k(synth.wavelength, "F99", 3.1))


def inject(anchor: Anchor, rng: np.random.Generator, n: int, *, rel_err: float = 0.02,
           phot_err: float = 0.02) -> dict[str, np.ndarray]:
    """Stars whose true SED differs from the 'prediction' by a draw of the error model the
    fit assumes (correlated in ln λ), reddened, scaled, observed with Gaussian noise."""
    teff = rng.uniform(5000, 9750, n)
    pred = planck_seds(teff)
    # like the network's: ~0 in the scaling window, growing away from it
    sigma = rel_err * pred * (0.05 + 3 * np.abs(np.log(OUTPUT_GRID.wavelength / 5556.0)))
    modes = anchor._modes[: OUTPUT_GRID.n]
    delta = (modes @ rng.standard_normal((modes.shape[1], n))).T * sigma / pred
    true = pred * np.exp(delta)
    ebv = rng.uniform(0, 0.5, n)
    scale = 10 ** rng.uniform(-15, -13, n)
    flux = redden(true * scale[:, None], ebv, anchor.k[: OUTPUT_GRID.n])
    mags = anchor.synth.ab_mags(flux)
    err = np.full_like(mags, phot_err)
    obs = mags + rng.normal(0, 1, mags.shape) * np.sqrt(err**2 + anchor.config.floor_mag**2)
    return dict(pred=pred, sigma=sigma, ebv=ebv, scale=scale, mag=obs, err=err, true=true)


def test_injection_recovery(anchor: Anchor) -> None:
    rng = np.random.default_rng(3)
    s = inject(anchor, rng, 1500)
    res = fit_anchor(anchor, s["pred"], s["sigma"], s["mag"], s["err"])
    assert np.all(np.isfinite(res.ebv))
    bias = np.mean(res.ebv - s["ebv"])
    assert abs(bias) < 0.005
    z_e = (res.ebv - s["ebv"]) / res.ebv_err
    inside = s["ebv"] > 3 * res.ebv_err   # away from the E >= 0 bound
    assert 0.9 < np.std(z_e[inside]) < 1.1
    # the truth's flux in the scaling window (the draw moves it off 1 there)
    true_scale = s["scale"] * s["true"][:, OUTPUT_GRID.window(*SCALING_WINDOW)].mean(axis=1)
    z_s = (np.log(res.scale) - np.log(true_scale)) / (res.scale_err / res.scale)
    assert 0.9 < np.std(z_s) < 1.1
    # most fits pass the consistency test (p > 1e-3 for correct errors: ~0.1 % flagged)
    assert np.mean((res.flags & Flag.PHOT_INCONSISTENT) > 0) < 0.01


def test_sed_abs_errors_cover_the_truth(anchor: Anchor) -> None:
    """The absolute SED's σ, the SED's error carried through the fit, is honest at every
    wavelength: z-score σ 0.9-1.1 and 68 % within 1σ."""
    rng = np.random.default_rng(4)
    s = inject(anchor, rng, 600)
    res = fit_anchor(anchor, s["pred"], s["sigma"], s["mag"], s["err"])
    flux, err = anchor.sed_abs(s["pred"], s["sigma"], res)
    truth = redden(s["true"] * s["scale"][:, None], s["ebv"], anchor.k[: OUTPUT_GRID.n])
    z = (flux - truth) / err
    w = OUTPUT_GRID.wavelength
    for lo, hi in ((2500, 3000), (3000, 4000), (4000, 5000), (5000, 6000), (6000, 8000),
                   (8000, 10500)):
        m = (w >= lo) & (w < hi)
        assert 0.9 < np.std(z[:, m]) < 1.1, (lo, hi)
        assert abs(np.mean(np.abs(z[:, m]) < 1) - 0.683) < 0.04, (lo, hi)


def test_a_band_one_magnitude_off_is_rejected(anchor: Anchor) -> None:
    rng = np.random.default_rng(5)
    s = inject(anchor, rng, 200)
    bad = rng.integers(0, len(BANDS), 200)
    s["mag"][np.arange(200), bad] += 1.0
    res = fit_anchor(anchor, s["pred"], s["sigma"], s["mag"], s["err"])
    assert np.mean(res.rejected[np.arange(200), bad]) > 0.97
    assert np.mean(res.rejected.sum(axis=1) == 1) > 0.95
    z_e = (res.ebv - s["ebv"]) / res.ebv_err
    assert np.median(np.abs(z_e)) < 1.0    # the fit without the bad band recovers E(B-V)


def test_flags_and_prior(anchor: Anchor) -> None:
    rng = np.random.default_rng(6)
    s = inject(anchor, rng, 4)
    mag = s["mag"].copy()
    mag[0, :] = np.nan            # no photometry
    mag[1, 1:] = np.nan           # one band, no prior: cannot fit 2 parameters
    mag[2, 1:] = np.nan           # one band with a prior: scale from that band
    prior = np.array([np.nan, np.nan, s["ebv"][2], np.nan])
    prior_err = np.array([np.nan, np.nan, 0.01, np.nan])
    res = fit_anchor(anchor, s["pred"], s["sigma"], mag, s["err"], ebv_prior=prior,
                     ebv_prior_err=prior_err)
    assert res.flags[0] & Flag.NO_PHOTOMETRY and res.flags[1] & Flag.NO_PHOTOMETRY
    assert np.isnan(res.ebv[:2]).all() and not res.used[:2].any()
    assert not res.flags[2] & Flag.NO_PHOTOMETRY
    assert abs(res.ebv[2] - s["ebv"][2]) < 3 * 0.01
    assert res.ebv_err[2] < 0.0101
    # the prior pulls: a star with E(B-V) 0.3 fitted with a tight prior at 0 sits near 0
    res2 = fit_anchor(anchor, s["pred"][3:], s["sigma"][3:], s["mag"][3:], s["err"][3:],
                      ebv_prior=[0.0], ebv_prior_err=[1e-4])
    assert abs(res2.ebv[0]) < 1e-3


def test_holdout_band_left_out(anchor: Anchor) -> None:
    rng = np.random.default_rng(7)
    s = inject(anchor, rng, 50)
    s["mag"][:, 0] += 5.0    # u wildly off: irrelevant when held out
    fit = np.ones(len(BANDS), bool)
    fit[0] = False
    res = fit_anchor(anchor, s["pred"], s["sigma"], s["mag"], s["err"], fit_bands=fit)
    assert not res.used[:, 0].any() and not res.rejected[:, 0].any()
    z_e = (res.ebv - s["ebv"]) / res.ebv_err
    assert np.median(np.abs(z_e)) < 1.0


def test_batch_equals_one_at_a_time(anchor: Anchor) -> None:
    rng = np.random.default_rng(8)
    s = inject(anchor, rng, 5)
    res = fit_anchor(anchor, s["pred"], s["sigma"], s["mag"], s["err"])
    for i in range(5):
        one = fit_anchor(anchor, s["pred"][i:i + 1], s["sigma"][i:i + 1], s["mag"][i:i + 1],
                         s["err"][i:i + 1])
        np.testing.assert_allclose(one.ebv, res.ebv[i:i + 1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(one.mu, res.mu[i:i + 1], rtol=1e-12)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        AnchorConfig(min_bands=1)
    with pytest.raises(ValueError):
        AnchorConfig(correlation_length=0)
