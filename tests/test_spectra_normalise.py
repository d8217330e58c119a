"""Moving-average continuum (paper §2.1 edge rule) and SED scaling in 5526–5586 Å."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csstflux.errors import CoverageError
from csstflux.grids import CONTINUUM_WINDOW, OUTPUT_GRID, SCALING_WINDOW
from csstflux.spectra import continuum_normalise, moving_average, scale_sed

SETTINGS = settings(max_examples=60, deadline=None)


def brute_continuum(flux: np.ndarray, mask: np.ndarray, window: int) -> list[float | None]:
    """The paper's rule, one pixel at a time: all pixels of a short side, mean of good ones."""
    n, half = len(flux), window // 2
    out: list[float | None] = []
    for i in range(n):
        vals = [flux[j] for j in range(max(0, i - half), min(n - 1, i + half) + 1) if not mask[j]]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def test_constant_normalises_to_one() -> None:
    rng = np.random.default_rng(0)
    flux = np.full((3, 2238), 3.7e-14)
    mask = rng.uniform(size=flux.shape) < 0.1
    fn, en, m, cont = continuum_normalise(flux, np.full(flux.shape, 1e-15), mask)
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(fn[~m], 1.0)  # exactly: sums run over deviations from median
    np.testing.assert_array_equal(en[~m], 1e-15 / 3.7e-14)
    np.testing.assert_array_equal(cont, 3.7e-14)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 160),
    window=st.sampled_from([1, 3, 11, CONTINUUM_WINDOW]),
    p_mask=st.floats(0.0, 0.9),
)
def test_edge_rule_matches_brute_force(seed: int, n: int, window: int, p_mask: float) -> None:
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.5, 2.0, n)
    mask = rng.uniform(size=n) < p_mask
    ref = brute_continuum(flux, mask, window)
    fn, _, m, cont = continuum_normalise(np.where(mask, np.nan, flux), mask=mask, window=window)
    for i, r in enumerate(ref):
        if r is None:
            assert m[i] and cont[i] == 0.0 and fn[i] == 0.0
        else:
            assert cont[i] == pytest.approx(r, rel=1e-13)
            assert m[i] == mask[i]
            if not mask[i]:
                assert fn[i] == pytest.approx(flux[i] / r, rel=1e-13)


def test_window_shrinks_at_the_ends() -> None:
    flux = np.arange(100.0) + 1.0
    avg, count = moving_average(flux)
    assert count[0] == 26 and count[24] == 50 and count[25] == 51 and count[-1] == 26
    assert avg[0] == pytest.approx(np.mean(flux[:26]))
    assert avg[50] == pytest.approx(flux[50])  # a straight line: centred mean is exact


def test_masked_values_ignored_and_nonpositive_continuum_masked() -> None:
    flux = np.ones(200)
    flux[100] = 1e30
    mask = np.zeros(200, bool)
    mask[100] = True
    fn, _, m, _ = continuum_normalise(flux, mask=mask)
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_allclose(fn[~m], 1.0, rtol=1e-15)
    neg = -np.ones(200)
    _, _, m_neg, c_neg = continuum_normalise(neg)
    assert m_neg.all() and np.all(c_neg == 0.0)


def test_batch_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(4)
    flux = rng.uniform(0.5, 2, (4, 300))
    err = rng.uniform(0.01, 0.1, (4, 300))
    mask = rng.uniform(size=flux.shape) < 0.2
    out = continuum_normalise(flux, err, mask)
    for i in range(4):
        one = continuum_normalise(flux[i], err[i], mask[i])
        for b, s in zip(out, one, strict=True):
            np.testing.assert_array_equal(b[i], s)


def test_window_must_be_odd() -> None:
    with pytest.raises(ValueError, match="odd"):
        continuum_normalise(np.ones(10), window=50)


def test_scaled_sed_has_mean_one_in_window_on_output_grid() -> None:
    rng = np.random.default_rng(8)
    w = OUTPUT_GRID.wavelength
    sed = (w / 5000.0) ** -3 * rng.uniform(0.9, 1.1, (5, w.size)) * 1e-15
    err = 0.01 * sed
    fs, es, m, scale = scale_sed(w, sed, err)
    win = OUTPUT_GRID.window(*SCALING_WINDOW)
    assert win.sum() >= 4
    np.testing.assert_allclose(fs[:, win].mean(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(scale, sed[:, win].mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(es, 0.01 * fs, rtol=1e-14)
    assert not m.any()


def test_scale_ignores_masked_window_pixels() -> None:
    w = OUTPUT_GRID.wavelength
    win = np.flatnonzero(OUTPUT_GRID.window(*SCALING_WINDOW))
    sed = np.ones(w.size)
    sed[win[0]] = 50.0
    mask = np.zeros(w.size, bool)
    mask[win[0]] = True
    fs, _, m, scale = scale_sed(w, sed, mask=mask)
    assert float(scale) == 1.0
    np.testing.assert_array_equal(m, mask)


def test_row_without_window_pixels_is_masked_or_raises() -> None:
    w = OUTPUT_GRID.wavelength
    win = OUTPUT_GRID.window(*SCALING_WINDOW)
    sed = np.ones((3, w.size))
    mask = np.zeros(sed.shape, bool)
    mask[1, win] = True
    fs, _, m, scale = scale_sed(w, sed, mask=mask)
    assert m[1].all() and np.all(fs[1] == 0.0) and np.isnan(scale[1])
    assert not m[[0, 2]].any() and np.all(scale[[0, 2]] == 1.0)
    with pytest.raises(CoverageError, match="5526–5586"):
        scale_sed(w, sed, mask=mask, strict=True)
    # a spectrum that does not reach the window at all
    blue = w < 5000.0
    with pytest.raises(CoverageError):
        scale_sed(w[blue], np.ones(blue.sum()), strict=True)
