"""Synthetic photometry: AB zero points, agreement with speclite, coverage, red extension."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import speclite.filters

from csstflux.errors import GridMismatchError
from csstflux.grids import OUTPUT_GRID
from csstflux.photometry.bands import KNOWN_BANDS, load_bands
from csstflux.photometry.synth import (
    EXTENSION_ERROR_BOUND,
    MIN_COVERAGE,
    SyntheticPhotometry,
)

HC_K = 1.438776877e8          # hc/k, Å K
C_ANGSTROM = 2.99792458e18    # Å/s
SPECLITE = [n for n, s in KNOWN_BANDS.items() if s.source == "speclite"]
CSST = [n for n, s in KNOWN_BANDS.items() if s.source == "csst"]


def planck(wavelength: np.ndarray, teff: float) -> np.ndarray:
    """Blackbody f_λ (arbitrary scale ~1) at ``wavelength`` Å."""
    return 1e20 / wavelength**5 / np.expm1(HC_K / (wavelength * teff))


#: The real CESS imaging curves: used when present, else the CSST bands are left out.
CSST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "csst" / "csst_phot_tp"


@pytest.fixture(scope="module")
def everything() -> SyntheticPhotometry:
    """Every registry band (the CSST ones only when their curves are at hand)."""
    names = SPECLITE + (CSST if CSST_DIR.is_dir() else [])
    return SyntheticPhotometry.from_bands(load_bands(names, csst_dir=CSST_DIR))


def test_grid_and_extension(everything: SyntheticPhotometry) -> None:
    sp = everything
    assert sp.n_grid == OUTPUT_GRID.n
    np.testing.assert_array_equal(sp.wavelength[:sp.n_grid], OUTPUT_GRID.wavelength)
    np.testing.assert_allclose(np.diff(np.log(sp.wavelength)), OUTPUT_GRID.dlnlambda, rtol=1e-9)
    last_edge = sp.wavelength[-1] * np.exp(OUTPUT_GRID.dlnlambda / 2)
    reddest = max(b.wavelength[-1] for b in sp.bands)
    assert reddest <= last_edge < reddest * np.exp(OUTPUT_GRID.dlnlambda)   # just far enough
    assert sp.weights.shape == (len(sp.bands), sp.wavelength.size)
    assert np.all(sp.weights >= 0)


def test_flat_fnu_gives_ab_zero(everything: SyntheticPhotometry) -> None:
    sp = everything
    flam = 3631e-23 * C_ANGSTROM / OUTPUT_GRID.wavelength**2
    mags = sp.ab_mags(flam)
    good = sp.coverage >= 0.99
    below = {"ps1_y", "csst_y", "galex_FUV", "galex_NUV"}
    assert {n for n, g in zip(sp.names, good, strict=True) if not g} == below & set(sp.names)
    np.testing.assert_allclose(mags[good], 0.0, atol=1e-3)
    # the bands only partly on the grid are also right: f_ν flat is a power law in λ
    ok = sp.usable()
    np.testing.assert_allclose(mags[ok], 0.0, atol=1e-3)


def test_agrees_with_speclite() -> None:
    """Independent implementation: speclite on a finely sampled copy of the same
    piecewise-constant SED."""
    keys = {"sdss_g": "sdss2010-g", "sdss_r": "sdss2010-r", "sdss_i": "sdss2010-i",
            "ps1_g": "panstarrs-g", "ps1_r": "panstarrs-r", "ps1_i": "panstarrs-i",
            "gaia_BP": "gaiadr3-BP"}
    sp = SyntheticPhotometry.from_bands(load_bands(list(keys)))
    np.testing.assert_allclose(sp.coverage, 1.0, atol=1e-12)
    seq = speclite.filters.FilterSequence([speclite.filters.load_filter(k) for k in keys.values()])
    sub = 64
    e = OUTPUT_GRID.edges
    fine = (e[:-1, None] * np.exp(OUTPUT_GRID.dlnlambda * (np.arange(sub) + 0.5) / sub)).ravel()
    for teff in (4000.0, 6000.0, 9000.0, 15000.0):
        sed = planck(OUTPUT_GRID.wavelength, teff) * 1e-3
        ours = sp.ab_mags(sed)
        table = seq.get_ab_magnitudes(np.repeat(sed, sub) * u.erg / u.s / u.cm**2 / u.AA,
                                      fine * u.AA)
        theirs = np.array([table[name][0] for name in seq.names])
        np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_batch_scaling_and_one_at_a_time() -> None:
    sp = SyntheticPhotometry.from_bands(load_bands(["sdss_g", "sdss_z", "gaia_RP"]))
    w = OUTPUT_GRID.wavelength
    seds = np.stack([planck(w, t) for t in (5000.0, 7000.0, 9750.0)])
    batch = sp.ab_mags(seds)
    for row, sed in zip(batch, seds, strict=True):
        np.testing.assert_allclose(sp.ab_mags(sed), row, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sp.ab_mags(10.0 * seds), batch - 2.5, atol=1e-12)
    assert np.all(np.diff(batch[:, 0] - batch[:, 2]) < 0)   # hotter = bluer


def test_coverage_matches_the_documented_numbers(everything: SyntheticPhotometry) -> None:
    cov = dict(zip(everything.names, everything.coverage, strict=True))
    documented = {"sdss_z": 0.9936, "ps1_y": 0.9817, "gaia_G": 0.99998, "gaia_RP": 0.9997,
                  "galex_NUV": 0.3228, "galex_FUV": 0.0}
    if "csst_z" in cov:
        documented |= {"csst_z": 0.9928, "csst_y": 0.9796, "csst_nuv": 0.9956}
    for name, value in documented.items():
        assert cov[name] == pytest.approx(value, abs=1e-4), name
    whole = [n for n in cov if n not in documented]
    assert all(cov[n] == pytest.approx(1.0, abs=1e-9) for n in whole)


def test_bands_below_the_grid_give_nan(everything: SyntheticPhotometry) -> None:
    sp = everything
    usable = dict(zip(sp.names, sp.usable(), strict=True))
    assert not usable["galex_FUV"] and not usable["galex_NUV"]
    assert sum(usable.values()) == len(usable) - 2
    mags = dict(zip(sp.names, sp.ab_mags(planck(OUTPUT_GRID.wavelength, 9000.0)), strict=True))
    assert np.isnan(mags["galex_FUV"]) and np.isnan(mags["galex_NUV"])
    assert np.isfinite(mags["sdss_u"])
    assert sp.usable(0.99).sum() < sp.usable(MIN_COVERAGE).sum()


@pytest.mark.parametrize("teff", [5000.0, 7000.0, 9750.0])
def test_extension_error_is_below_the_bound(teff: float) -> None:
    """Grid SED + power-law extension vs the exact Planck curve out to each band's end."""
    sp = SyntheticPhotometry.from_bands(load_bands(["sdss_z", "ps1_y", "gaia_G", "gaia_RP"]))
    exact = planck(sp.wavelength, teff)
    extended = sp.extend(exact[:sp.n_grid])
    assert np.abs(extended[sp.n_grid:] / exact[sp.n_grid:] - 1).max() < 0.01
    err = -2.5 * np.log10(sp.fnu(extended) / sp.fnu(exact))
    assert np.all(np.abs(err) < EXTENSION_ERROR_BOUND), err
    assert EXTENSION_ERROR_BOUND <= 1e-4


def test_extend_recovers_a_power_law_and_keeps_nan_rows() -> None:
    sp = SyntheticPhotometry.from_bands(load_bands(["sdss_z"]))
    w = sp.wavelength
    law = 3e-14 * (w / 8000.0) ** -3.7
    bad = np.full(sp.n_grid, np.nan)
    holes = law[:sp.n_grid].copy()
    holes[-5:-2] = np.nan     # a few bad pixels in the fit window do not matter
    out = sp.extend(np.stack([law[:sp.n_grid], bad, holes]))
    np.testing.assert_allclose(out[0], law, rtol=1e-10)
    assert np.all(np.isnan(out[1]))
    np.testing.assert_allclose(out[2, sp.n_grid:], law[sp.n_grid:], rtol=1e-10)
    np.testing.assert_allclose(sp.extend(law[:sp.n_grid]), law, rtol=1e-10)
    mags = sp.ab_mags(np.stack([law[:sp.n_grid], bad, -law[:sp.n_grid]]))
    assert np.isfinite(mags[0, 0]) and np.isnan(mags[1, 0]) and np.isnan(mags[2, 0])


def test_nan_pixel_spoils_only_the_bands_it_touches() -> None:
    sp = SyntheticPhotometry.from_bands(load_bands(["sdss_g", "sdss_r", "gaia_G"]))
    sed = planck(OUTPUT_GRID.wavelength, 6000.0)
    sed[np.argmin(np.abs(OUTPUT_GRID.wavelength - 6200.0))] = np.nan
    mags = sp.ab_mags(sed)
    assert np.isfinite(mags[0]) and np.isnan(mags[1]) and np.isnan(mags[2])


def test_wrong_grid_raises() -> None:
    sp = SyntheticPhotometry.from_bands(load_bands(["sdss_g"]))
    with pytest.raises(GridMismatchError):
        sp.ab_mags(np.ones(OUTPUT_GRID.n - 1))
    with pytest.raises(GridMismatchError):
        sp.fnu(np.ones((2, OUTPUT_GRID.n)) if sp.wavelength.size != OUTPUT_GRID.n
               else np.ones((2, 3)))
    with pytest.raises(ValueError, match="repeat"):
        SyntheticPhotometry.from_bands(load_bands(["sdss_g", "sdss_g"]))
