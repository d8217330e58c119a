"""The shipped CK04 SED grid: reproduces its nodes, interpolates like the grid interpolator,
never extrapolates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csstflux.errors import ModelFileError
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
from csstflux.io import read
from csstflux.io.stores.arrays import file_sha256, save_arrays
from csstflux.library import build_sed_grid as bsg
from csstflux.library.grid_interp import GridInterpolator
from csstflux.library.sed_grid import SedGrid, default_sed_grid_path, load_sed_grid, save_sed_grid
from csstflux.spectra.prepare import prepare_target

WINDOW = OUTPUT_GRID.window(*bsg.ERROR_WINDOW)


@pytest.fixture(scope="module")
def grid() -> SedGrid:
    return load_sed_grid()


@pytest.fixture(scope="module")
def ck04(shared_data: Path):  # type: ignore[no-untyped-def]
    return bsg.read_nodes(shared_data / "ck04models")


def test_shipped_file_and_provenance(grid: SedGrid) -> None:
    path = default_sed_grid_path()
    assert path.stat().st_size < 1_000_000
    p = grid.provenance
    assert p["sha256"] == file_sha256(path) and p["n_components"] == grid.n_components
    assert p["max_reconstruction_error"] < bsg.MAX_ERROR and p["n_nodes"] == int(
        grid.exists.sum())
    assert grid.components.dtype == np.float32 and grid.coefficients.dtype == np.float32
    assert (grid.teff[0], grid.teff[-1], grid.logg[0], grid.logg[-1]) == (3500, 13000, 0, 5)
    assert grid.feh.tolist() == [-2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.2, 0.5]
    assert load_sed_grid() is grid   # cached


def test_nodes_reproduce_ck04(grid: SedGrid, ck04) -> None:  # type: ignore[no-untyped-def]
    # every node, processed independently: the CK04 model straight into prepare_target
    truth, _, mask, _ = prepare_target(ck04.wavelength, ck04.flux, None, ck04.mask, None)
    assert not mask.any()
    sed, inside = grid(ck04.teff, ck04.logg, ck04.feh)
    assert inside.all()
    err = np.abs(sed / truth - 1)
    assert err[:, WINDOW].max() < 0.005
    assert err.max() < 0.015   # 2500-3000 A of 3500 K models, 1e-6..1e-3 of the 5556 A flux
    sw = OUTPUT_GRID.window(*SCALING_WINDOW)
    np.testing.assert_allclose(sed[:, sw].mean(axis=1), 1.0, rtol=1e-12)


def test_between_nodes_agrees_with_grid_interpolator(grid: SedGrid, ck04) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    n = 300
    t = np.r_[5777.0, 7321.0, 9612.0, rng.uniform(4000, 13000, n)]
    g = np.r_[4.44, 3.73, 4.12, rng.uniform(0, 5, n)]
    f = np.r_[0.0, -0.71, -1.23, rng.uniform(-2.5, 0.5, n)]
    interp = GridInterpolator.from_library(ck04)
    flux, fmask, ok = interp(t, g, f)
    sed, inside = grid(t, g, f)
    np.testing.assert_array_equal(inside, ok)
    assert inside[:3].all() and inside.mean() > 0.6
    truth, _, _, _ = prepare_target(interp.wavelength, flux[ok], None, fmask[ok], None)
    err = np.abs(sed[inside] / truth - 1)[:, WINDOW]
    assert err.max() < 0.01, err.max()
    assert np.median(err.max(axis=1)) < 0.004


def test_outside_points_are_flagged(grid: SedGrid) -> None:
    t = np.array([3000.0, 14000.0, 5000.0, 5000.0, 5000.0, 12000.0, np.nan, 5000.0])
    g = np.array([4.0, 4.0, 5.5, -0.1, 4.0, 1.0, 4.0, 4.0])
    f = np.array([0.0, 0.0, 0.0, 0.0, 0.7, 0.0, 0.0, -3.0])
    sed, inside = grid(t, g, f)
    assert sed.shape == (8, OUTPUT_GRID.n) and not inside.any() and np.isnan(sed).all()
    # 12000 K, log g 1 is inside the axes but its corners do not exist in CK04
    assert not grid.exists[np.searchsorted(grid.teff, 12000), 2].any()
    fixed = grid.nearest_inside(t[:6], g[:6], f[:6])
    assert grid(*fixed.T)[1].all()
    np.testing.assert_allclose(fixed[0], [3500, 4, 0])
    np.testing.assert_allclose(fixed[4], [5000, 4, 0.5])
    assert fixed[5, 0] >= 11000 and fixed[5, 1] > 1.0   # moved to an existing hot node
    inner = np.array([[5777.0, 4.44, 0.0]])
    np.testing.assert_array_equal(grid.nearest_inside(*inner.T), inner)


def test_batch_equals_one_at_a_time_and_nodes_on_edges(grid: SedGrid) -> None:
    t, g, f = np.array([5777.0, 13000.0, 3500.0]), np.array([4.44, 5.0, 0.0]), np.array(
        [0.0, 0.5, -2.5])
    batch, ok = grid(t, g, f)
    assert ok.all()
    for i in range(3):
        one, ok1 = grid(t[i], g[i], f[i])
        assert ok1[0]
        np.testing.assert_allclose(one[0], batch[i], rtol=1e-12)


def test_save_load_round_trip_and_wrong_kind(grid: SedGrid, tmp_path: Path) -> None:
    path = save_sed_grid(grid, tmp_path / "g.npz")
    again = load_sed_grid(path)
    np.testing.assert_array_equal(again.coefficients, grid.coefficients)
    assert again.provenance["n_components"] == grid.n_components
    save_arrays(tmp_path / "other.npz", {"x": np.zeros(3)}, {"kind": "something-else"})
    with pytest.raises(ModelFileError):
        load_sed_grid(tmp_path / "other.npz")
    with pytest.raises(ModelFileError):
        load_sed_grid(tmp_path / "missing.npz")


def test_builder_picks_the_fewest_components(shared_data: Path) -> None:
    lib = read(shared_data / "ck04models", format="ck04", teff_range=(5000, 6000),
               logg_range=(3.5, 5.0), feh_range=(-0.5, 0.2))
    g = bsg.sed_grid_from_library(lib, max_error=0.002, k_range=(1, 30), passes=3)
    k = g.n_components
    assert g.provenance["max_reconstruction_error"] < 0.002
    log_sed = np.log(bsg.node_seds(lib))
    assert bsg.fit_basis(log_sed, k - 1, 3)[3] >= 0.002
    sed, inside = g(lib.teff, lib.logg, lib.feh)
    assert inside.all()
    assert np.abs(sed / np.exp(log_sed) - 1)[:, WINDOW].max() < 0.002
