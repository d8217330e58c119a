"""The package-wide conventions of csstflux.spectra: ranks, dtypes and the mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import csstflux.spectra as cs

W = 5000.0 * np.exp(1e-4 * np.arange(120))
EDGES = np.linspace(W[5], W[-5], 30)

# each entry: a call (flux, error, mask) -> (flux_out, error_out, mask_out), all per-pixel
CALLS: dict[str, Callable[..., tuple[Any, ...]]] = {
    "resample": lambda f, e, m: cs.resample(W, f, EDGES, e, m)[:3],
    "degrade": lambda f, e, m: cs.degrade_resolution(W, f, 1500.0, None, e, m)[:3],
    "normalise": lambda f, e, m: cs.continuum_normalise(f, e, m, window=11)[:3],
    "scale": lambda f, e, m: cs.scale_sed(W, f, e, m, window=(5100.0, 5200.0))[:3],
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_bad_values_become_masked_zeros(name: str) -> None:
    flux = np.full((2, W.size), 2.0, dtype=np.float32)
    err = np.full((2, W.size), 0.1)
    flux[0, 40] = np.nan
    flux[0, 41] = np.inf
    err[1, 42] = np.nan
    err[1, 43] = 0.0
    err[1, 44] = -1.0
    mask = np.zeros((2, W.size), bool)
    mask[1, 45] = True
    call = CALLS[name]
    f_out, e_out, m_out = call(flux, err, mask)
    assert f_out.dtype == np.float64 and e_out.dtype == np.float64 and m_out.dtype == bool
    assert np.all(np.isfinite(f_out)) and np.all(np.isfinite(e_out))
    assert np.all(f_out[m_out] == 0.0) and np.all(e_out[m_out] == 0.0)
    # the same pixels masked by hand give the same answer: the mask is authoritative
    hand = mask.copy()
    hand[0, 40:42] = True
    hand[1, 42:45] = True
    ref = call(np.where(hand, 1e30, 2.0), np.where(hand, 5.0, 0.1), hand)
    for a, b in zip((f_out, e_out, m_out), ref, strict=True):
        np.testing.assert_array_equal(a, b)
    # and one row alone comes back 1-D and equal
    one = call(flux[1], err[1], mask[1])
    assert one[0].shape == (f_out.shape[1],)
    for a, b in zip((f_out, e_out, m_out), one, strict=True):
        np.testing.assert_array_equal(a[1], b)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_error_none_gives_none(name: str) -> None:
    _, e_out, _ = CALLS[name](np.ones(W.size), None, None)
    assert e_out is None


def test_three_dimensional_input_refused() -> None:
    with pytest.raises(ValueError, match=r"\(n_pix,\) or \(n_spec, n_pix\)"):
        cs.continuum_normalise(np.ones((2, 2, 5)))
