"""Sky cross-match maths against astropy and a brute-force reference."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy_healpix import HEALPix

from csstflux.sky.crossmatch import (
    MatchStatus,
    angular_separation,
    cone_pixels,
    healpix_index,
    match_nearest,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _sphere(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def _offset(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray,
            sep_arcsec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at given separations in random directions (astropy, independent of our code)."""
    c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
        rng.uniform(0, 360, ra.size) * u.deg, sep_arcsec * u.arcsec)
    return c.ra.deg, c.dec.deg


def test_separation_matches_astropy(rng: np.random.Generator) -> None:
    n = 4000
    ra1, dec1 = _sphere(rng, n)
    ra2, dec2 = _sphere(rng, n)  # arbitrary, up to antipodal
    pole = rng.uniform(89.9, 90.0, n) * rng.choice([-1, 1], n)
    wrap1, wrap2 = rng.uniform(359.99, 360.0, n), rng.uniform(0.0, 0.01, n)
    near_ra, near_dec = _offset(rng, ra1, dec1, 10 ** rng.uniform(-4, 2, n))
    cases = [
        (ra1, dec1, ra2, dec2),
        (ra1, pole, ra2, pole + rng.uniform(-1e-4, 0, n) * np.sign(pole)),  # near the poles
        (wrap1, dec1, wrap2, dec1 + rng.uniform(-1e-3, 1e-3, n).clip(-90 - dec1, 90 - dec1)),
        (ra1, dec1, near_ra, near_dec),  # 1e-4″ to 100″
        (ra1, dec1, ra1, dec1),  # zero
    ]
    for a1, d1, a2, d2 in cases:
        ref = SkyCoord(a1 * u.deg, d1 * u.deg).separation(SkyCoord(a2 * u.deg, d2 * u.deg))
        ours = angular_separation(a1, d1, a2, d2)
        assert ours.shape == (n,)
        assert np.abs(ours - ref.to_value(u.arcsec)).max() < 1e-6
    assert angular_separation(0.0, 0.0, 180.0, 0.0) == pytest.approx(180 * 3600, abs=1e-6)


def test_ra_wrap_and_poles() -> None:
    # 359.9999 and 0.0001 on the equator are 0.72″ apart
    assert angular_separation(359.9999, 0.0, 0.0001, 0.0) == pytest.approx(0.72, rel=1e-9)
    # at dec ±89.9999 a 180° RA difference is 2 × 0.36″ across the pole
    for sign in (1, -1):
        d = sign * 89.9999
        assert angular_separation(10.0, d, 190.0, d) == pytest.approx(0.72, rel=1e-8)
        res = match_nearest([10.0, 100.0], [d, d], [190.0, 280.0 - 0.5], [d, d], 1.0)
        # each source has both targets within 1″ (0.51″ and 0.72″ away): nothing is safe
        assert res.counts()["ambiguous"] == 2
        res = match_nearest([10.0], [d], [190.0], [d], 1.0)
        assert res.status[0] == MatchStatus.MATCHED and res.index[0] == 0
        assert res.separation[0] == pytest.approx(0.72, rel=1e-8)
    res = match_nearest([359.9999, 180.0], [0.0, 0.0], [0.0001, 30.0], [0.0, 0.0], 1.0)
    np.testing.assert_array_equal(res.index, [0, -1])
    np.testing.assert_array_equal(res.status, [MatchStatus.MATCHED, MatchStatus.NO_MATCH])
    assert res.separation[0] == pytest.approx(0.72, rel=1e-9) and np.isnan(res.separation[1])


def test_no_match_and_empty_sets() -> None:
    res = match_nearest([10.0, 20.0], [0.0, 0.0], [10.0], [1.0], 2.0)
    assert (res.index == -1).all() and (res.status == MatchStatus.NO_MATCH).all()
    assert res.counts() == {"matched": 0, "no_match": 2, "ambiguous": 0, "contested": 0,
                            "total": 2}
    empty = match_nearest([10.0], [0.0], [], [], 2.0)
    assert empty.index.tolist() == [-1] and empty.n_candidates.tolist() == [0]
    assert match_nearest([], [], [1.0], [1.0], 2.0).index.size == 0
    nan = match_nearest([np.nan, 10.0], [0.0, 0.0], [10.0], [0.0], 2.0)
    assert nan.status.tolist() == [MatchStatus.NO_MATCH, MatchStatus.MATCHED]
    with pytest.raises(ValueError, match="radius"):
        match_nearest([1.0], [1.0], [1.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="dec1"):
        match_nearest([1.0], [91.0], [1.0], [1.0], 1.0)


def test_duplicates_are_ambiguous_or_contested() -> None:
    arc = 1.0 / 3600.0
    # source 0 has two catalogue stars within 2″ (0.5″ and 1.5″ away): ambiguous, dropped
    # sources 1 and 2 both lie within 2″ of catalogue star 2: both contested, dropped
    # source 3 is alone with catalogue star 3: matched
    ra1 = [10.0, 20.0, 20.0 + 1.0 * arc, 30.0]
    ra2 = [10.0 + 0.5 * arc, 10.0 - 1.5 * arc, 20.0 + 0.5 * arc, 30.0 + 0.2 * arc]
    res = match_nearest(ra1, np.zeros(4), ra2, np.zeros(4), 2.0)
    np.testing.assert_array_equal(res.status, [MatchStatus.AMBIGUOUS, MatchStatus.CONTESTED,
                                               MatchStatus.CONTESTED, MatchStatus.MATCHED])
    np.testing.assert_array_equal(res.index, [-1, -1, -1, 3])
    np.testing.assert_array_equal(res.n_candidates, [2, 1, 1, 1])
    np.testing.assert_allclose(res.separation, [0.5, 0.5, 0.5, 0.2], rtol=1e-6)
    assert res.counts()["matched"] == 1 and res.matched.tolist() == [False, False, False, True]
    # an exact duplicate in the catalogue is ambiguous too
    dup = match_nearest([5.0], [5.0], [5.0, 5.0], [5.0, 5.0], 1.0)
    assert dup.status[0] == MatchStatus.AMBIGUOUS


def _brute_force(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray,
                 radius: float) -> tuple[np.ndarray, np.ndarray]:
    """O(n·m) reference of the documented rule, from the full astropy separation matrix."""
    sep = SkyCoord(ra1[:, None] * u.deg, dec1[:, None] * u.deg).separation(
        SkyCoord(ra2[None, :] * u.deg, dec2[None, :] * u.deg)).to_value(u.arcsec)
    within = sep <= radius
    index = np.full(ra1.size, -1)
    status = np.full(ra1.size, int(MatchStatus.NO_MATCH))
    for i in range(ra1.size):
        js = np.flatnonzero(within[i])
        if js.size >= 2:
            status[i] = MatchStatus.AMBIGUOUS
        elif js.size == 1:
            if within[:, js[0]].sum() >= 2:
                status[i] = MatchStatus.CONTESTED
            else:
                status[i], index[i] = MatchStatus.MATCHED, js[0]
    return index, status


@pytest.mark.parametrize("where", ["equator", "wrap", "pole"])
def test_large_random_sets_equal_brute_force(rng: np.random.Generator, where: str) -> None:
    n1, n2, radius = 1500, 1200, 10.0
    half = 0.12  # degrees: ~0.5 catalogue stars per 10″ cone, so every outcome occurs
    if where == "pole":
        ra2, dec2 = rng.uniform(0, 360, n2), 90 - np.degrees(np.sqrt(rng.uniform(0, 1, n2)) *
                                                            np.radians(half))
    else:
        ra2 = (rng.uniform(-half, half, n2) + (0.0 if where == "wrap" else 150.0)) % 360
        dec2 = rng.uniform(-half, half, n2)
    # set 1: noisy copies of 2/3 of set 2 plus unrelated sources
    k = rng.choice(n2, 2 * n1 // 3, replace=False)
    ra_a, dec_a = _offset(rng, ra2[k], dec2[k], np.abs(rng.normal(0, 2.5, k.size)))
    j = rng.choice(n2, n1 - k.size)
    ra_b, dec_b = _offset(rng, ra2[j], dec2[j], rng.uniform(0, 300.0, j.size))
    ra1, dec1 = np.concatenate([ra_a, ra_b]), np.concatenate([dec_a, dec_b])
    res = match_nearest(ra1, dec1, ra2, dec2, radius)
    index, status = _brute_force(ra1, dec1, ra2, dec2, radius)
    np.testing.assert_array_equal(res.status, status)
    np.testing.assert_array_equal(res.index, index)
    counts = res.counts()
    assert all(counts[s.name.lower()] > 0 for s in MatchStatus), counts
    m = res.matched
    np.testing.assert_allclose(res.separation[m], angular_separation(
        ra1[m], dec1[m], ra2[res.index[m]], dec2[res.index[m]]), rtol=0, atol=1e-9)
    assert np.unique(res.index[m]).size == m.sum()  # each catalogue star used at most once


def test_healpix_index_is_nested(rng: np.random.Generator) -> None:
    ra, dec = _sphere(rng, 2000)
    for order in (3, 8, 12):
        pix = healpix_index(ra, dec, order)
        assert pix.dtype == np.int64 and pix.min() >= 0 and pix.max() < 12 * 4**order
        np.testing.assert_array_equal(pix >> 2, healpix_index(ra, dec, order - 1))
        # every position lies within its pixel's circumscribed radius
        hp = HEALPix(nside=2**order, order="nested")
        lon, lat = hp.healpix_to_lonlat(pix)
        d = angular_separation(ra, dec, lon.deg, lat.deg) / 3600.0
        assert d.max() < 1.05 * hp.pixel_resolution.to_value(u.deg)


@pytest.mark.parametrize("order,radius", [(4, 5.0), (8, 0.5), (12, 0.01), (12, 1 / 3600)])
def test_cone_pixels_cover_the_cone(rng: np.random.Generator, order: int,
                                    radius: float) -> None:
    centres = [(0.0, 0.0), (359.999, 10.0), (45.0, 89.99), (200.0, -89.5), (82.815758,
                                                                              -69.825513)]
    for ra0, dec0 in centres:
        pix = set(cone_pixels(ra0, dec0, radius, order).tolist())
        n = 3000  # uniform inside the cone, plus a ring just inside the edge
        r = np.concatenate([radius * np.sqrt(rng.uniform(0, 1, n)),
                            radius * rng.uniform(0.999, 1.0, n)])
        ra, dec = _offset(rng, np.full(2 * n, ra0), np.full(2 * n, dec0), r * 3600.0)
        missing = set(healpix_index(ra, dec, order).tolist()) - pix
        assert not missing, (ra0, dec0, sorted(missing))
    # astropy/astropy-healpix#287: the plain cone search misses 135565728 here
    assert 135565728 in cone_pixels(82.815758, -69.825513, 1 / 3600, 12)
    assert cone_pixels(10.0, 10.0, 179.0, 1).size == 48
    with pytest.raises(ValueError, match="order"):
        cone_pixels(0.0, 0.0, 1.0, 30)
