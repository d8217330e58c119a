"""Extinction curves k(λ) = A(λ)/E(B−V) and reddening."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.errors import ConfigError
from csstflux.grids import OUTPUT_GRID
from csstflux.photometry.extinction import LAWS, extinction_k, law_ranges, redden


@pytest.mark.parametrize("law", LAWS)
def test_e_b_minus_v_and_r_v_definitions(law: str) -> None:
    """k(B) − k(V) = 1 and k(V) = R_V by definition of E(B−V) and R_V. With monochromatic
    B = 4400 Å and V = 5500 Å instead of the Johnson bands the identities hold to 0.05 (F99:
    1.028 and 3.031, G23: 0.998 and 3.095)."""
    for rv in (3.1, 2.5, 4.0):
        kb, kv = extinction_k([4400.0, 5500.0], law, rv)
        assert kb - kv == pytest.approx(1.0, abs=0.05)
        assert kv == pytest.approx(rv, abs=0.1)


def test_curve_shape_on_the_photometry_grid() -> None:
    w = np.concatenate([OUTPUT_GRID.wavelength, [10600.0, 11200.0]])
    for law in LAWS:
        k = extinction_k(w, law)
        assert k.shape == w.shape
        assert np.all(np.diff(k[w > 2800]) < 0)      # falls monotonically redwards of the bump
        assert 0.8 < k[-1] < 1.2                      # ~1 at 1.1 µm (A_J ≈ 0.8 E(B−V))
    k2 = extinction_k(w.reshape(2, -1), "F99")       # any shape in, same shape out
    np.testing.assert_allclose(k2.ravel(), extinction_k(w, "F99"))
    assert extinction_k(np.array([2175.0]), "F99")[0] > extinction_k(np.array([2600.0]), "F99")[0]


def test_laws_and_ranges() -> None:
    assert LAWS == ("F99", "G23")
    (lo, hi), (rv_lo, rv_hi) = law_ranges("F99")
    assert (lo, hi, rv_lo, rv_hi) == pytest.approx((1000.0, 33333.33, 2.0, 6.0), rel=1e-6)
    (lo, hi), (rv_lo, rv_hi) = law_ranges("G23")
    assert lo < 1000.0 and hi > 3e5 and (rv_lo, rv_hi) == (2.3, 5.6)
    np.testing.assert_allclose(extinction_k([5000.0], "g23"), extinction_k([5000.0], "G23"))


def test_invalid_law_rv_and_wavelength() -> None:
    with pytest.raises(ConfigError, match="unknown extinction law 'F98'.*'F99'"):
        extinction_k([5000.0], "F98")
    with pytest.raises(ConfigError, match="R_V = 1.5"):
        extinction_k([5000.0], "F99", 1.5)
    with pytest.raises(ConfigError, match="R_V = 5.8"):
        extinction_k([5000.0], "G23", 5.8)
    with pytest.raises(ValueError, match="outside the valid range of F99"):
        extinction_k([800.0, 5000.0], "F99")
    with pytest.raises(ValueError, match="outside"):
        extinction_k([np.nan], "F99")


def test_redden() -> None:
    rng = np.random.default_rng(5)
    flam = rng.uniform(1, 2, (4, OUTPUT_GRID.n))
    k = extinction_k(OUTPUT_GRID.wavelength)
    np.testing.assert_array_equal(redden(flam, np.zeros(4), k), flam)
    ebv = np.array([0.0, 0.1, 0.5, 1.0])
    out = redden(flam, ebv, k)
    np.testing.assert_allclose(-2.5 * np.log10(out / flam), ebv[:, None] * k[None, :],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(redden(out, -ebv, k), flam, rtol=1e-12)   # de-reddening
    np.testing.assert_allclose(redden(flam[1], 0.1, k), out[1], rtol=1e-14)
    np.testing.assert_allclose(redden(flam, 0.1, k)[1], out[1], rtol=1e-14)
    with pytest.raises(ValueError, match="ebv"):
        redden(flam, ebv[:3], k)
    with pytest.raises(ValueError, match="k"):
        redden(flam, ebv, k[:-1])
