"""Air ↔ vacuum conversion against published line wavelengths and round trips."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from csstflux.airvac import air_to_vacuum, to_vacuum, vacuum_to_air


def test_round_trip_better_than_1e_4_angstrom():
    lam = np.linspace(2000.0, 11000.0, 200_001)
    assert np.max(np.abs(vacuum_to_air(air_to_vacuum(lam)) - lam)) < 1e-8
    assert np.max(np.abs(air_to_vacuum(vacuum_to_air(lam)) - lam)) < 1e-8


@given(st.floats(min_value=2000.0, max_value=30000.0))
def test_round_trip_property(lam):
    assert abs(float(vacuum_to_air(air_to_vacuum(lam))) - lam) < 1e-4


def test_published_lines():
    # NIST atomic spectra database: Na I D2, Na I D1, Mg I b2, Hα (air / vacuum, Å)
    air = np.array([5889.950, 5895.924, 5183.604, 6562.80])
    vac = np.array([5891.583, 5897.558, 5185.048, 6564.61])
    np.testing.assert_allclose(air_to_vacuum(air), vac, atol=0.003)
    np.testing.assert_allclose(vacuum_to_air(vac), air, atol=0.003)


def test_far_uv_unchanged_and_medium_switch():
    lam = np.array([1200.0, 1500.0, 1990.0])
    np.testing.assert_array_equal(air_to_vacuum(lam), lam)
    np.testing.assert_array_equal(vacuum_to_air(lam), lam)
    np.testing.assert_array_equal(to_vacuum(lam * 4, "vacuum"), lam * 4)
    np.testing.assert_allclose(to_vacuum([5000.0], "AIR"), air_to_vacuum([5000.0]))
