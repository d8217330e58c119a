"""match_band_resolution: CSST slitless spectra (R = 225/250) brought to the SEDs' R = 200."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csstflux.constants import FWHM_TO_SIGMA
from csstflux.errors import ConfigError
from csstflux.grids import BAND_RESOLUTION, OUTPUT_GRID, all_grids_attrs
from csstflux.spectra.degrade import match_band_resolution

CENTRES = {"GU": 3375.0, "GV": 5250.0, "GI": 8100.0}   # the CESS gu/gv/gi_wave_mid


def fine_grid(lam0: float, dln: float = 2e-5, half: int = 2500) -> np.ndarray:
    return lam0 * np.exp(dln * np.arange(-half, half + 1))


def absorption(w: np.ndarray, lam0: float, r_line: float, depth: float = 0.6) -> np.ndarray:
    """Continuum 1 with a Gaussian line of FWHM λ0/r_line (in ln λ: 1/r_line)."""
    s = FWHM_TO_SIGMA / r_line
    return 1.0 - depth * np.exp(-0.5 * (np.log(w / lam0) / s) ** 2)


def fwhm_ln(w: np.ndarray, flux: np.ndarray) -> float:
    """FWHM in ln λ of the absorption profile 1 − flux, from its second moment."""
    x = np.log(w)
    p = (1.0 - flux) / np.sum(1.0 - flux)
    mu = np.sum(p * x)
    return math.sqrt(np.sum(p * (x - mu) ** 2)) / FWHM_TO_SIGMA


def test_band_resolution_is_one_source_of_truth() -> None:
    assert BAND_RESOLUTION == {"GU": 225.0, "GV": 250.0, "GI": 250.0}
    assert all_grids_attrs()["band_resolution"] == BAND_RESOLUTION


@pytest.mark.parametrize("band", ["GU", "GV", "GI"])
def test_line_at_band_resolution_comes_out_at_r200(band: str) -> None:
    lam0 = CENTRES[band]
    w = fine_grid(lam0)
    flux = absorption(w, lam0, BAND_RESOLUTION[band])
    out, err = match_band_resolution(flux, band, wavelength=w)
    assert err is None
    # an unresolved line seen at R_band has FWHM λ/R_band; convolving with
    # FWHM² = (λ/200)² − (λ/R_band)² gives exactly λ/200 (FWHM² adds)
    assert abs(fwhm_ln(w, out) * OUTPUT_GRID.resolution - 1) < 0.02
    assert abs(fwhm_ln(w, flux) * BAND_RESOLUTION[band] - 1) < 0.02   # the input really is R_b
    # flux conserved: same equivalent width, shallower line
    dlam = np.gradient(w)
    ew_in, ew_out = np.sum((1 - flux) * dlam), np.sum((1 - out) * dlam)
    assert ew_out == pytest.approx(ew_in, rel=1e-4)
    assert (1 - out).max() < (1 - flux).max()


def test_default_grid_batch_and_errors() -> None:
    rng = np.random.default_rng(11)
    w = OUTPUT_GRID.wavelength
    cont = (w / 5000.0) ** -2.0
    flux = np.stack([cont, cont * 2.0])
    err = np.full_like(flux, 0.01)
    out, out_err = match_band_resolution(flux, "GV", error=err)
    assert out.shape == flux.shape and out_err is not None and out_err.shape == flux.shape
    # a smooth continuum is unchanged away from the array ends
    inner = slice(10, -10)
    np.testing.assert_allclose(out[:, inner], flux[:, inner], rtol=2e-4)
    assert np.all(out_err < err) and np.all(out_err > 0)
    # one spectrum at a time = batch
    single, _ = match_band_resolution(flux[1], "GV")
    np.testing.assert_allclose(single, out[1], rtol=1e-13)
    # linear in the flux
    noisy = cont + rng.normal(0, 0.01, w.size)
    a, _ = match_band_resolution(3.0 * noisy, "GI")
    b, _ = match_band_resolution(noisy, "GI")
    np.testing.assert_allclose(a, 3.0 * b, rtol=1e-12)


def test_masked_pixels_come_out_nan() -> None:
    w = OUTPUT_GRID.wavelength
    flux = np.ones(w.size)
    flux[200:230] = np.nan
    out, _ = match_band_resolution(flux, "GU")
    assert np.all(np.isnan(out[205:225]))
    assert np.all(np.isfinite(out[:190])) and np.all(np.isfinite(out[240:]))
    np.testing.assert_allclose(out[:190], 1.0, rtol=1e-12)


def test_unknown_band_raises() -> None:
    with pytest.raises(ConfigError, match="unknown slitless band 'GX'"):
        match_band_resolution(np.ones(OUTPUT_GRID.n), "GX")
