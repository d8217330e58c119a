"""The grids and bands are the paper's (Table 1, §2) and the one source of truth."""

import numpy as np
import pytest

from csstflux import grids
from csstflux.errors import GridMismatchError


def test_input_grid_matches_table1():
    g = grids.INPUT_GRID
    assert g.n == 2238
    assert g.wavelength[0] == 4000.0
    assert g.wavelength[-1] <= 7000.0
    # log-uniform with the stated step
    np.testing.assert_allclose(np.diff(np.log(g.wavelength)), 1 / 4000, rtol=1e-10)
    # the paper counts whole Δlnλ steps in the range
    assert g.n == int(np.log(7000 / 4000) * 4000)


def test_output_grid_matches_table1():
    g = grids.OUTPUT_GRID
    assert g.n == 574
    assert g.wavelength[0] == 2500.0
    np.testing.assert_allclose(np.diff(np.log(g.wavelength)), 1 / 400, rtol=1e-10)
    assert g.wavelength[-1] <= 10500.0
    assert g.n == int(np.log(10500 / 2500) * 400)


def test_edges_bracket_centres_geometrically():
    g = grids.OUTPUT_GRID
    e = g.edges
    assert e.shape == (g.n + 1,)
    np.testing.assert_allclose(np.sqrt(e[:-1] * e[1:]), g.wavelength, rtol=1e-12)


def test_bands_and_scaling_window():
    assert {k: (b.lo, b.hi) for k, b in grids.BANDS.items()} == {
        "GU": (2550.0, 4200.0), "GV": (4000.0, 6500.0), "GI": (6200.0, 10000.0)}
    assert grids.SCALING_WINDOW == (5526.0, 5586.0)
    w = grids.OUTPUT_GRID.wavelength[grids.OUTPUT_GRID.window(*grids.SCALING_WINDOW)]
    assert w.size >= 3 and w.min() >= 5526.0 and w.max() <= 5586.0


def test_check_refuses_other_grid():
    grids.INPUT_GRID.check(grids.INPUT_GRID.wavelength.copy())
    with pytest.raises(GridMismatchError, match="input grid"):
        grids.INPUT_GRID.check(grids.OUTPUT_GRID.wavelength)
    with pytest.raises(GridMismatchError):
        grids.OUTPUT_GRID.check(grids.OUTPUT_GRID.wavelength * (1 + 1e-5))


def test_attrs_round_trip():
    attrs = grids.OUTPUT_GRID.to_attrs()
    assert grids.OUTPUT_GRID.matches_attrs(attrs)
    assert not grids.INPUT_GRID.matches_attrs(attrs)
    assert not grids.INPUT_GRID.matches_attrs({"n": "x"})
