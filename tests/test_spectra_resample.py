"""Flux-conserving resampling: edges, overlap matrix, conservation, masks, errors, batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.spectra import is_log_uniform, pixel_edges, resample, resampling_matrix

SETTINGS = settings(max_examples=40, deadline=None)


def random_grid(rng: np.random.Generator, n: int, lo: float = 4000.0) -> np.ndarray:
    """Strictly increasing, irregular pixel centres starting near ``lo`` Å."""
    return lo + np.cumsum(rng.uniform(0.3, 3.0, n))


def brute_overlap(in_edges: np.ndarray, out_edges: np.ndarray) -> np.ndarray:
    w = np.zeros((out_edges.size - 1, in_edges.size - 1))
    for i in range(out_edges.size - 1):
        for j in range(in_edges.size - 1):
            ov = min(out_edges[i + 1], in_edges[j + 1]) - max(out_edges[i], in_edges[j])
            w[i, j] = max(ov, 0.0) / (out_edges[i + 1] - out_edges[i])
    return w


def test_pixel_edges_reproduce_model_grids() -> None:
    for grid in (INPUT_GRID, OUTPUT_GRID):
        assert is_log_uniform(grid.wavelength)
        np.testing.assert_allclose(pixel_edges(grid.wavelength), grid.edges, rtol=1e-12)


def test_pixel_edges_linear_grid_uses_arithmetic_midpoints() -> None:
    w = 3500.0 + 0.9 * np.arange(4000)
    assert not is_log_uniform(w)
    np.testing.assert_allclose(
        pixel_edges(w), 3500.0 - 0.45 + 0.9 * np.arange(4001), rtol=0, atol=1e-9
    )


def test_float32_log_grid_still_log_uniform() -> None:
    # LAMOST-like: log10 step 1e-4, centres stored in float32
    w = (10.0 ** (3.5682 + 1e-4 * np.arange(3909))).astype(np.float32)
    assert is_log_uniform(w)
    edges = pixel_edges(w)
    np.testing.assert_allclose(edges[1:-1], np.sqrt(w[1:].astype(float) * w[:-1]), rtol=1e-12)


def test_pixel_edges_row_by_row() -> None:
    lin = 4000.0 + np.arange(50.0)
    log = 4000.0 * np.exp(1e-4 * np.arange(50))
    both = pixel_edges(np.stack([lin, log]))
    np.testing.assert_array_equal(both[0], pixel_edges(lin))
    np.testing.assert_array_equal(both[1], pixel_edges(log))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_in=st.integers(2, 40), n_out=st.integers(1, 15))
def test_resampling_matrix_matches_brute_force(seed: int, n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(seed)
    ein = np.sort(rng.uniform(0, 100, n_in + 1))
    eout = np.sort(rng.uniform(-20, 120, n_out + 1))
    if np.any(np.diff(ein) <= 0) or np.any(np.diff(eout) <= 0):
        return
    dense = resampling_matrix(ein, eout).toarray()
    np.testing.assert_allclose(dense, brute_overlap(ein, eout), rtol=1e-12, atol=1e-14)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_in=st.integers(20, 300), n_out=st.integers(2, 60))
def test_flux_conserved_over_fully_covered_region(seed: int, n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(seed)
    w_in = random_grid(rng, n_in)
    ein = pixel_edges(w_in)
    flux = rng.uniform(0.1, 10.0, n_in)
    eout = np.sort(rng.uniform(ein[0], ein[-1], n_out + 1))
    if np.any(np.diff(eout) <= 0):
        return
    out, _, mask = resample(w_in, flux, eout)
    assert not mask.any()
    # brute-force integral of the piecewise-constant input over [eout[0], eout[-1]]
    cum = np.concatenate([[0.0], np.cumsum(flux * np.diff(ein))])

    def integral(x: float) -> float:
        j = int(np.clip(np.searchsorted(ein, x, side="right") - 1, 0, n_in - 1))
        return float(cum[j] + flux[j] * (x - ein[j]))

    truth = integral(eout[-1]) - integral(eout[0])
    np.testing.assert_allclose(np.sum(out * np.diff(eout)), truth, rtol=1e-10)


def test_flux_conserved_onto_input_grid() -> None:
    rng = np.random.default_rng(1)
    w = np.linspace(3900.0, 7100.0, 9000)
    flux = 1.0 + rng.uniform(0, 1, w.size)
    out, _, mask = resample(w, flux, INPUT_GRID)
    assert not mask.any()
    ein = pixel_edges(w)
    lo, hi = INPUT_GRID.edges[0], INPUT_GRID.edges[-1]
    overlap = np.clip(np.minimum(ein[1:], hi) - np.maximum(ein[:-1], lo), 0, None)
    rel = np.sum(out * np.diff(INPUT_GRID.edges)) / np.sum(flux * overlap) - 1
    assert abs(rel) < 1e-12


def test_bin_mean_of_linear_function_is_exact() -> None:
    # fine grid of a straight line: the mean over a bin is the line at the bin's midpoint
    w = np.linspace(5000.0, 6000.0, 10001)
    flux = 3.0 + 0.002 * w
    eout = np.linspace(5100.0, 5900.0, 17)
    out, _, _ = resample(w, flux, eout)
    np.testing.assert_allclose(out, 3.0 + 0.002 * 0.5 * (eout[1:] + eout[:-1]), rtol=1e-12)


def test_masked_and_nonfinite_pixels_never_used() -> None:
    w = 5000.0 + np.arange(100.0)
    flux = np.full(100, 2.0)
    flux[10] = 1e30
    flux[20] = np.nan
    mask = np.zeros(100, bool)
    mask[10] = True
    eout = 4999.5 + 4.0 * np.arange(26)  # 4-pixel bins aligned with the input edges
    out, err, m = resample(w, flux, eout, error=np.full(100, 0.1), mask=mask)
    assert not m.any()  # 3 of 4 pixels good in bins 2 and 5: coverage 0.75
    np.testing.assert_allclose(out, 2.0, rtol=1e-14)
    # bin 2 averages 3 good pixels: σ = sqrt(3) · 0.1/4 / 0.75
    np.testing.assert_allclose(err[2], np.sqrt(3) * 0.025 / 0.75, rtol=1e-12)
    np.testing.assert_allclose(err[0], 0.05, rtol=1e-12)


def test_coverage_rule_and_outside_range() -> None:
    w = 5000.0 + np.arange(100.0)
    mask = np.zeros(100, bool)
    mask[8:11] = True  # 3 of the 4 pixels of bin 2
    eout = 4999.5 + 4.0 * np.arange(-3, 29)  # 3 bins below and 3 above the input range
    out, err, m = resample(w, np.ones(100), eout, error=np.ones(100), mask=mask)
    assert m[:3].all() and m[-3:].all()
    assert m[3 + 2]
    assert m.sum() == 7
    assert np.all(out[m] == 0.0) and np.all(err[m] == 0.0)
    _, _, m_lax = resample(w, np.ones(100), eout, mask=mask, min_coverage=0.25)
    assert not m_lax[3 + 2]


def test_error_propagation_matches_dense_formula() -> None:
    rng = np.random.default_rng(7)
    w = random_grid(rng, 80)
    flux = rng.uniform(1, 2, 80)
    err = rng.uniform(0.01, 0.2, 80)
    eout = np.linspace(w[3], w[-4], 12)
    out, err_out, _ = resample(w, flux, eout, error=err)
    dense = brute_overlap(pixel_edges(w), eout)
    cover = dense.sum(axis=1)
    np.testing.assert_allclose(out, dense @ flux / cover, rtol=1e-12)
    np.testing.assert_allclose(err_out, np.sqrt(dense**2 @ err**2) / cover, rtol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_spec=st.integers(1, 4), per_row=st.booleans())
def test_batch_equals_one_at_a_time(seed: int, n_spec: int, per_row: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 120
    w = np.stack([random_grid(rng, n) for _ in range(n_spec)]) if per_row else random_grid(rng, n)
    flux = rng.uniform(0.5, 2, (n_spec, n))
    err = rng.uniform(0.01, 0.1, (n_spec, n))
    mask = rng.uniform(size=(n_spec, n)) < 0.2
    eout = np.linspace(4010.0, 4150.0, 30)
    fb, eb, mb = resample(w, flux, eout, error=err, mask=mask)
    for i in range(n_spec):
        fi, ei, mi = resample(w[i] if per_row else w, flux[i], eout, error=err[i], mask=mask[i])
        np.testing.assert_allclose(fb[i], fi, rtol=1e-12, atol=0)
        np.testing.assert_allclose(eb[i], ei, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(mb[i], mi)


def test_many_rows_with_own_grids_match_dense_formula() -> None:
    """More rows than one block, each with its own grid (some not covering the output)."""
    rng = np.random.default_rng(11)
    n_spec, n = 300, 90
    w = np.stack([random_grid(rng, n) * rng.uniform(0.9, 1.1) for _ in range(n_spec)])
    flux = rng.uniform(0.5, 2, (n_spec, n))
    err = rng.uniform(0.01, 0.1, (n_spec, n))
    mask = rng.uniform(size=(n_spec, n)) < 0.1
    eout = np.linspace(4020.0, 4120.0, 25)
    fb, eb, mb = resample(w, flux, eout, error=err, mask=mask)
    assert mb.all(axis=1).any() and (~mb).all(axis=1).any()  # rows outside and fully inside
    for i in range(n_spec):
        dense = brute_overlap(pixel_edges(w[i]), eout) * ~mask[i]
        cover = dense.sum(axis=1)
        keep = cover >= 0.5 - 1e-9
        np.testing.assert_array_equal(mb[i], ~keep)
        dense, cover = dense[keep], cover[keep]
        np.testing.assert_allclose(fb[i][keep], dense @ flux[i] / cover, rtol=1e-12)
        np.testing.assert_allclose(eb[i][keep], np.sqrt(dense**2 @ err[i] ** 2) / cover,
                                   rtol=1e-12)
        assert np.all(fb[i][~keep] == 0.0)

def test_one_absurd_row_leaves_the_others_exact() -> None:
    """A row with wavelengths 1e9 times too large (z near -1) shares a block with the others;
    they still get exactly what they get alone, and it gets nothing."""
    rng = np.random.default_rng(5)
    base = 3700.0 * np.exp(2.3e-4 * np.arange(3909))
    w = np.tile(base, (40, 1))
    w[0] *= 1e9
    flux = rng.uniform(0.5, 2.0, w.shape)
    fb, _, mb = resample(w, flux, INPUT_GRID)
    assert mb[0].all()
    for i in (1, 39):
        f1, _, m1 = resample(base, flux[i], INPUT_GRID)
        np.testing.assert_array_equal(fb[i], f1)
        np.testing.assert_array_equal(mb[i], m1)


@pytest.mark.parametrize("edges", [[5008.0, 5005.0, 5002.0], [5002.0], [5002.0, np.nan, 5008.0],
                                   [[5002.0, 5005.0]]])
def test_bad_output_edges_refused_for_shared_and_per_row_grids(edges) -> None:
    w = 5000.0 + np.arange(10.0)
    for grid in (w, np.stack([w, w + 0.3])):
        with pytest.raises(ValueError, match="strictly increasing"):
            resample(grid, np.ones((2, 10)), np.array(edges))

def test_bad_arguments() -> None:
    w = 5000.0 + np.arange(10.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        resample(w[::-1], np.ones(10), [5000.0, 5005.0])
    with pytest.raises(ValueError, match="min_coverage"):
        resample(w, np.ones(10), [5000.0, 5005.0], min_coverage=0.0)
    with pytest.raises(ValueError, match="mask has shape"):
        resample(w, np.ones(10), [5000.0, 5005.0], mask=np.zeros(9, bool))


def test_rows_with_own_grids_equal_the_shared_grid_path_bit_for_bit() -> None:
    """A row resampled within a batch of rows with their own grids (overlap sums, a block of
    rows at a time) gets exactly what the sparse matrix of its grid alone gives, on the
    LAMOST grid shifted by stellar redshifts and on input edges equal to output edges."""
    rng = np.random.default_rng(8)
    lamost = (10 ** (3.5682 + 1e-4 * np.arange(3909))).astype(np.float32).astype(np.float64)
    z = rng.normal(0, 3e-4, 37)
    z[:2] = 0.0
    for w, grid in ((lamost / (1 + z[:, None]), INPUT_GRID),
                    (np.tile(INPUT_GRID.wavelength, (5, 1)), INPUT_GRID),    # edges coincide
                    (np.tile(OUTPUT_GRID.wavelength[40:300], (3, 1)), OUTPUT_GRID)):
        flux = rng.normal(1.0, 0.1, w.shape)
        err = rng.uniform(0.01, 0.1, w.shape)
        mask = rng.uniform(size=w.shape) < 0.05
        fb, eb, mb = resample(w, flux, grid, error=err, mask=mask)
        for i in range(w.shape[0]):
            fi, ei, mi = resample(w[i], flux[i], grid, error=err[i], mask=mask[i])
            np.testing.assert_array_equal(fb[i], fi)
            np.testing.assert_array_equal(eb[i], ei)
            np.testing.assert_array_equal(mb[i], mi)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 5), n_in=st.integers(2, 60))
def test_overlap_sums_equal_bincount_over_the_pairs(seed: int, n_rows: int, n_in: int) -> None:
    """The per-term sums add each output pixel's pairs in the order np.bincount adds them."""
    from csstflux.spectra.resample import _overlap_sums, _overlaps

    rng = np.random.default_rng(seed)
    w = np.stack([random_grid(rng, n_in, lo=rng.uniform(3990, 4060)) for _ in range(n_rows)])
    edges = pixel_edges(w)
    out = np.linspace(4000.0, 4100.0, int(rng.integers(2, 80)))
    good = (rng.uniform(size=w.shape) > 0.2).astype(float)
    flux = rng.normal(1, 0.5, w.shape) * good
    err = rng.uniform(0.01, 0.1, w.shape) * good
    num, cov, var = _overlap_sums(edges, out, good, flux, err)
    pair, col, frac = _overlaps(edges, out)
    row = pair // (out.size - 1)
    size = n_rows * (out.size - 1)
    g = good[row, col]
    np.testing.assert_array_equal(num.ravel(), np.bincount(pair, frac * g * flux[row, col], size))
    np.testing.assert_array_equal(cov.ravel(), np.bincount(pair, frac * g, size))
    np.testing.assert_array_equal(var.ravel(),
                                  np.bincount(pair, frac**2 * g * err[row, col] ** 2, size))
