"""CSST slitless focal plane: layout, TAN WCS round trips, footprint sizes."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.flat.detectors import (
    N_X,
    N_Y,
    PIXEL_SCALE_ARCSEC,
    SLITLESS_FOCAL_PLANE,
    Detector,
    chip_center,
    detector_wcs,
    pixel_to_sky,
    sky_to_pixel,
)
from csstflux.sky.crossmatch import angular_separation

POINTINGS = [(150.1, 2.2, 0.0), (359.95, -30.0, 37.5), (0.02, 89.4, -113.4), (210.0, -89.3, 200)]


def test_twelve_detectors_four_per_band() -> None:
    fp = SLITLESS_FOCAL_PLANE
    assert len(fp) == 12
    for band in ("GU", "GV", "GI"):
        dets = fp.band(band)
        assert len(dets) == 4 and all(d.band == band for d in dets)
    d = fp["GV-02"]
    assert d.shape == (N_Y, N_X) == (9232, 9216) and d.pixel_size_um == 10.0
    assert d.footprint_arcsec == pytest.approx((9216 * 0.074, 9232 * 0.074))
    with pytest.raises(KeyError, match="GX-01"):
        fp["GX-01"]
    with pytest.raises(ValueError, match="band"):
        Detector(1, "GX", 0.0, 0.0)


def test_layout_has_no_overlaps_and_is_point_symmetric() -> None:
    dets = SLITLESS_FOCAL_PLANE.detectors
    for i, a in enumerate(dets):
        for b in dets[i + 1:]:
            gap_x = abs(a.x_center - b.x_center) - N_X
            gap_y = abs(a.y_center - b.y_center) - N_Y
            assert max(gap_x, gap_y) >= 534, (a.name, b.name)
    # a 180° rotation maps every slitless detector onto one of the same band
    centres = {(d.band, d.x_center, d.y_center) for d in dets}
    assert centres == {(b, -x, -y) for b, x, y in centres}
    extent = max(abs(d.x_center) + N_X / 2 for d in dets) * PIXEL_SCALE_ARCSEC / 3600
    assert 0.55 < extent < 0.65  # the field reaches ≈ 0.6° from the boresight along x


@pytest.mark.parametrize("ra0,dec0,pa", POINTINGS)
def test_round_trip_sky_pixel_sky(ra0: float, dec0: float, pa: float) -> None:
    rng = np.random.default_rng(3)
    for det in SLITLESS_FOCAL_PLANE.detectors:
        x = rng.uniform(-0.5, N_X - 0.5, 500)
        y = rng.uniform(-0.5, N_Y - 0.5, 500)
        ra, dec = pixel_to_sky(det, x, y, ra0, dec0, pa)
        x2, y2 = sky_to_pixel(det, ra, dec, ra0, dec0, pa)
        ra2, dec2 = pixel_to_sky(det, x2, y2, ra0, dec0, pa)
        assert angular_separation(ra, dec, ra2, dec2).max() < 1e-6
        assert np.abs(x2 - x).max() < 1e-5 and np.abs(y2 - y).max() < 1e-5
        assert det.contains(x2, y2).all() and (ra >= 0).all() and (ra < 360).all()


@pytest.mark.parametrize("ra0,dec0,pa", POINTINGS)
def test_footprint_is_npix_times_plate_scale(ra0: float, dec0: float, pa: float) -> None:
    for det in SLITLESS_FOCAL_PLANE.detectors:
        cx, cy = (N_X - 1) / 2, (N_Y - 1) / 2
        ra, dec = pixel_to_sky(det, [-0.5, N_X - 0.5, cx, cx], [cy, cy, -0.5, N_Y - 0.5],
                               ra0, dec0, pa)
        width = angular_separation(ra[0], dec[0], ra[1], dec[1])
        height = angular_separation(ra[2], dec[2], ra[3], dec[3])
        # TAN compresses angles by ≤ cos²(0.75°) - 1 ≈ 1.7e-4 at the field edge
        assert width == pytest.approx(N_X * 0.074, rel=2e-4)
        assert height == pytest.approx(N_Y * 0.074, rel=2e-4)
    # a detector centred on the tangent point: TAN maps distance t to angle arctan(t) exactly
    centred = Detector(0, "GV", 0.0, 0.0)
    ra, dec = pixel_to_sky(centred, [-0.5, N_X - 0.5], [(N_Y - 1) / 2] * 2, ra0, dec0, pa)
    half = np.radians(N_X / 2 * 0.074 / 3600)
    exact = 2 * np.degrees(np.arctan(half)) * 3600  # N_X·0.074″·(1 − 9e-7)
    assert angular_separation(ra[0], dec[0], ra[1], dec[1]) == pytest.approx(exact, rel=1e-10)
    assert exact == pytest.approx(N_X * 0.074, rel=1e-6)


def test_orientation_and_boresight() -> None:
    det = SLITLESS_FOCAL_PLANE["GU-03"]
    x0, y0 = sky_to_pixel(det, 150.0, 2.0, 150.0, 2.0, 0.0)
    assert float(x0) == pytest.approx((N_X - 1) / 2 - det.x_center)
    assert float(y0) == pytest.approx((N_Y - 1) / 2 - det.y_center)
    # pa = 0: +y is north, +x is west (east to the left)
    ra, dec = pixel_to_sky(det, [1000.0, 1000.0, 1001.0], [1000.0, 1001.0, 1000.0],
                           150.0, 2.0, 0.0)
    assert dec[1] > dec[0] and ra[2] < ra[0]
    # pa = 90: +y points east
    ra, dec = pixel_to_sky(det, [1000.0, 1000.0], [1000.0, 1001.0], 150.0, 2.0, 90.0)
    assert ra[1] > ra[0]
    w = detector_wcs(det, 150.0, 2.0, 0.0)
    assert w.wcs.ctype[0] == "RA---TAN" and tuple(w.pixel_shape) == (N_X, N_Y)
    scale = np.sqrt(abs(np.linalg.det(w.wcs.cd))) * 3600
    assert scale == pytest.approx(0.074, rel=1e-12)


def test_chip_table_matches_the_csst_data_model() -> None:
    """Chip → band as in csst-dfs-commons ``SLS_DECTECTORS2FILTER`` (module docstring)."""
    published = {1: "GI", 2: "GV", 3: "GU", 4: "GU", 5: "GV", 10: "GI", 21: "GI", 26: "GV",
                 27: "GU", 28: "GU", 29: "GV", 30: "GI"}
    assert {d.chip: d.band for d in SLITLESS_FOCAL_PLANE.detectors} == published
    imaging = {6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25}  # MBI
    assert imaging | set(published) == set(range(1, 31)) and not imaging & set(published)


def test_chip_centres_follow_the_simulation_geometry() -> None:
    """Centres from the 6 × 5 mosaic rule with 534/1309-pixel column and 898-pixel row gaps."""
    step_x, step_y, extra = (N_X + 534) / 2, N_Y + 898, 1309 - 534
    expected = {1: (5 * step_x + extra, -2 * step_y), 10: (3 * step_x + extra, 2 * step_y),
                13: (step_x, 0.0), 21: (-3 * step_x - extra, -2 * step_y),
                30: (-5 * step_x - extra, 2 * step_y)}
    for chip, centre in expected.items():
        assert chip_center(chip) == pytest.approx(centre, abs=1e-9), chip
