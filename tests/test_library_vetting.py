"""Appendix-B vetting: quality cuts and GP rejection of a corrupted spectrum."""

import numpy as np
import pytest

from csstflux.grids import OUTPUT_GRID
from csstflux.library.vetting import quality_cuts, vet


def smooth_seds(teff, logg, feh, rng, noise=0.003):
    """Blackbody-like scaled SEDs with gentle log g / [Fe/H] terms: smooth in the parameters."""
    lam = OUTPUT_GRID.wavelength / 5556.0
    t = teff[:, None] / 6000.0
    sed = lam[None, :] ** -4 / (np.exp(2.6 / (lam[None, :] * t)) - 1.0)
    sed *= 1.0 + 0.02 * (logg[:, None] - 4.0) * lam[None, :] - 0.05 * feh[:, None] / lam[None, :]
    sed /= sed[:, OUTPUT_GRID.window(5526, 5586)].mean(axis=1, keepdims=True)
    return sed * (1 + rng.normal(0, noise, sed.shape))


@pytest.fixture(scope="module")
def library():
    rng = np.random.default_rng(11)
    n = 80
    teff = rng.uniform(5000, 9500, n)
    logg = rng.uniform(3.5, 4.8, n)
    feh = rng.uniform(-1.0, 0.3, n)
    sed = smooth_seds(teff, logg, feh, rng)
    return teff, logg, feh, sed


def test_corrupted_spectrum_is_rejected(library):
    teff, logg, feh, sed = library
    bad = sed.copy()
    bad[7] *= (OUTPUT_GRID.wavelength / 5556.0) ** 0.6  # a badly calibrated (tilted) star
    res = vet(teff, logg, feh, bad, rmsae_cut=0.05)
    assert not res.kept[7]
    assert res.reason[7] == "GP RMSAE above 0.05"
    assert res.rmsae[7] > 0.05
    assert res.kept.sum() >= len(teff) - 3
    # the clean library passes whole
    clean = vet(teff, logg, feh, sed, rmsae_cut=0.05)
    assert clean.kept.all()
    assert np.nanmax(clean.rmsae) < 0.05
    assert clean.hyper.sigma_n == pytest.approx(0.003, rel=0.5)


def test_quality_cuts_reasons():
    teff = np.array([5500.0, 4000.0, np.nan, 6000.0, 6000.0])
    logg = np.array([4.0, 4.0, 4.0, 4.0, 4.0])
    feh = np.zeros(5)
    ebv = np.array([0.01, 0.0, 0.0, 0.3, np.nan])
    reason = quality_cuts(teff, logg, feh, limits={"E(B-V)": (ebv, None, 0.1)})
    assert reason.tolist() == ["", "Teff outside 5000-9750 K", "missing Teff, log g or [Fe/H]",
                               "fails E(B-V) < 0.1", "fails E(B-V) < 0.1"]


def test_masked_coverage_rejected(library):
    teff, logg, feh, sed = library
    mask = np.zeros(sed.shape, bool)
    mask[3, :300] = True  # star 3 covers only half the range
    res = vet(teff, logg, feh, sed, mask)
    assert res.reason[3] == "SED does not cover the common wavelength range"
    assert res.pixels_used.sum() == OUTPUT_GRID.n
