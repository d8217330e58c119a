"""Row medians of a batch in one sort equal numpy's median of each row, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csstflux.stats import nanmedian_rows


def one_row(row: np.ndarray) -> float:
    """``np.median`` of the row's values that are not NaN; NaN when there are none."""
    kept = row[~np.isnan(row)]
    return float(np.median(kept)) if kept.size else float("nan")


VALUES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.5, 1e300, -1e-300, np.inf, -np.inf,
                          np.nan])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda r: st.integers(0, 12).flatmap(
    lambda c: st.lists(st.one_of(VALUES, st.floats(-1e6, 1e6)), min_size=r * c,
                       max_size=r * c).map(lambda v: np.array(v, float).reshape(r, c)))))
def test_equals_numpy_median_of_each_row(x: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):    # numpy's mean of -inf and inf: NaN, with a warning
        expected = np.array([one_row(row) for row in x])
    got = nanmedian_rows(x)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))   # -0.0 kept


def test_bad_is_a_nan_and_rows_with_none_are_nan() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 2238))
    bad = rng.uniform(size=x.shape) < 0.3
    bad[2] = True
    got = nanmedian_rows(x, bad)
    assert np.isnan(got[2])
    for i in (0, 1, 3, 4, 5):
        assert got[i] == np.median(x[i][~bad[i]])
    assert nanmedian_rows(np.empty((3, 0))).shape == (3,)
    with pytest.raises(ValueError, match="n_rows, n_cols"):
        nanmedian_rows(np.zeros(4))
