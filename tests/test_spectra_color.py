"""Continuum colour: analytic power laws, redshift, resolution independence."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.grids import COLOR_WINDOWS, INPUT_GRID, OUTPUT_GRID
from csstflux.spectra.color import continuum_color


def _median_wavelength(w: np.ndarray, lo: float, hi: float) -> float:
    return float(np.median(w[(w >= lo) & (w <= hi)]))


@pytest.mark.parametrize("alpha", [-4.0, -1.0, 0.0, 2.0])
def test_power_law_colour_is_analytic(alpha):
    """For f ∝ λ^α (monotonic) the window median is f at the median wavelength."""
    w = np.linspace(3500.0, 7500.0, 8001)
    c = continuum_color(w, w ** alpha)
    (b0, b1), (r0, r1) = COLOR_WINDOWS
    expect = alpha * np.log(_median_wavelength(w, b0, b1) / _median_wavelength(w, r0, r1))
    assert c == pytest.approx(expect, abs=1e-12)


def test_redshift_is_removed():
    w = np.linspace(3500.0, 7800.0, 6000)
    f = (w / 5000.0) ** -3.0
    z = 0.01
    c0 = continuum_color(w, f)
    c1 = continuum_color(w * (1 + z), ((w * (1 + z)) / (1 + z) / 5000.0) ** -3.0, z=z)
    assert c1 == pytest.approx(float(c0), abs=1e-4)


def test_resolution_and_sampling_do_not_matter():
    """The same smooth SED on the R=2000 input grid and on the R=200 output grid."""
    def sed(w):
        return (w / 5000.0) ** -2.5 * (1 - 0.3 * np.exp(-0.5 * ((w - 4862.0) / 8.0) ** 2))

    a = continuum_color(INPUT_GRID.wavelength, sed(INPUT_GRID.wavelength))
    b = continuum_color(OUTPUT_GRID.wavelength, sed(OUTPUT_GRID.wavelength))
    assert a == pytest.approx(float(b), abs=0.01)


def test_batch_masks_and_missing_windows():
    w = np.linspace(3500.0, 7500.0, 4001)
    f = np.stack([w ** -2.0, w ** -2.0, w ** -2.0, -np.ones_like(w)])
    mask = np.zeros(f.shape, bool)
    mask[1, w < 4600] = True                    # blue window fully masked
    f[2, (w > 6400) & (w < 6500)] = np.nan      # a few NaN: ignored
    c = continuum_color(w, f, mask)
    assert np.isfinite(c[0]) and np.isnan(c[1]) and np.isnan(c[3])
    (b0, b1), (r0, r1) = COLOR_WINDOWS
    keep = np.isfinite(f[2])
    expect = -2.0 * np.log(_median_wavelength(w, b0, b1)
                           / _median_wavelength(w[keep], r0, r1))
    assert c[2] == pytest.approx(expect, abs=1e-6)   # even counts: mean of two medians
    short = continuum_color(np.linspace(5000, 7000, 100), np.ones(100))
    assert np.isnan(short)
