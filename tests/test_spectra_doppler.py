"""Rest-frame wavelengths from radial velocities (relativistic) or redshifts."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.constants import C_KMS
from csstflux.spectra import doppler_factor, to_rest_frame

H_ALPHA_VAC = 6564.61  # Å, vacuum


def test_h_alpha_at_plus_100_kms() -> None:
    beta = 100.0 / C_KMS
    # series of sqrt((1+β)/(1−β)) to β³; the β⁴ term is 1e-14 here
    observed = H_ALPHA_VAC * (1 + beta + beta**2 / 2 + beta**3 / 2)
    # shift 2.1897 Å at first order (λ v/c) plus 3.7e-4 Å at second
    assert observed == pytest.approx(6566.8001, abs=1e-4)
    assert to_rest_frame(np.array([observed]), rv_kms=100.0)[0] == pytest.approx(
        H_ALPHA_VAC, rel=1e-13
    )


def test_relativistic_not_first_order() -> None:
    beta = 3000.0 / C_KMS
    # series to β³; the next term, 3β⁴/8, is 4e-9
    assert doppler_factor(3000.0) == pytest.approx(1 + beta + beta**2 / 2 + beta**3 / 2, rel=1e-8)
    assert abs(doppler_factor(3000.0) - (1 + beta)) > 4e-5


def test_z_round_trip_and_batch_shapes() -> None:
    w = np.linspace(4000.0, 7000.0, 11)
    z = np.array([0.0, 1e-3, -2e-4])
    rest = to_rest_frame(w * (1 + z)[:, None], z=z)
    np.testing.assert_allclose(rest, np.broadcast_to(w, (3, 11)), rtol=1e-15)
    rv = np.array([-50.0, 0.0, 50.0, 300.0])
    out = to_rest_frame(w, rv_kms=rv)
    assert out.shape == (4, 11)
    np.testing.assert_allclose(out[1], w, rtol=0)
    assert to_rest_frame(w, rv_kms=10.0).shape == (11,)
    # the rv and z forms agree
    np.testing.assert_allclose(out, to_rest_frame(w, z=doppler_factor(rv) - 1), rtol=1e-15)


def test_exactly_one_shift() -> None:
    w = np.ones(3)
    with pytest.raises(ValueError, match="exactly one"):
        to_rest_frame(w)
    with pytest.raises(ValueError, match="exactly one"):
        to_rest_frame(w, rv_kms=1.0, z=0.1)
    with pytest.raises(ValueError, match="slower than light"):
        to_rest_frame(w, rv_kms=C_KMS)
    with pytest.raises(ValueError, match="greater than -1"):
        to_rest_frame(w, z=-1.0)


def test_stellar_redshift_drops_placeholders() -> None:
    from csstflux.spectra.doppler import MAX_STELLAR_Z, stellar_redshift

    z = stellar_redshift([1e-4, -9999.0, np.nan, 0.3, -MAX_STELLAR_Z * 0.99])
    np.testing.assert_array_equal(np.isnan(z), [False, True, True, True, False])
    assert z[0] == 1e-4


def test_header_scan_treats_minus_9999_as_unknown_rv() -> None:
    from csstflux.pipeline.plan import catalog_from_headers

    cat = catalog_from_headers(["a.fits", "b.fits"], [{"obsid": 1, "z": -9999.0},
                                                      {"obsid": 2, "z": 1e-4}])
    assert np.isnan(cat.rv[0])
    assert cat.rv[1] == pytest.approx(C_KMS * 1e-4, rel=1e-3)
