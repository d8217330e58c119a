"""Sky geometry on plain arrays: great-circle separations and nested HEALPix pixels.

A base module (it imports only numpy, astropy and astropy-healpix) so that both the readers and
writers in :mod:`csstflux.io` (the predictions store's cone queries) and the cross-match maths
in :mod:`csstflux.sky.crossmatch` use one implementation. Positions are ICRS right ascension
and declination in degrees.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]
ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0

#: Extra radius, in units of the HEALPix pixel resolution, by which :func:`cone_pixels` widens
#: its search. The largest centre-to-boundary distance of a HEALPix pixel is ≈ 1.045 times the
#: resolution √(4π/N_pix) at high order and smaller at low order.
PIXEL_RADIUS_FACTOR = 1.1


def angular_separation(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike,
                       dec2: ArrayLike) -> Array:
    """Great-circle separation by the Vincenty formula, accurate at 0°, 180° and the poles.

    Parameters
    ----------
    ra1, dec1, ra2, dec2 : array_like
        Coordinates in degrees; broadcast together.

    Returns
    -------
    ndarray
        Separations in arcsec, same (broadcast) shape.
    """
    a1, d1, a2, d2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    dra = a2 - a1
    sd1, cd1, sd2, cd2 = np.sin(d1), np.cos(d1), np.sin(d2), np.cos(d2)
    num1 = cd2 * np.sin(dra)
    num2 = cd1 * sd2 - sd1 * cd2 * np.cos(dra)
    den = sd1 * sd2 + cd1 * cd2 * np.cos(dra)
    return np.arctan2(np.hypot(num1, num2), den) * ARCSEC_PER_RAD


def _healpix(order: int) -> HEALPix:
    if not 0 <= order <= 29:
        raise ValueError(f"HEALPix order must be in 0..29, got {order}")
    return HEALPix(nside=2**order, order="nested")


def healpix_index(ra: ArrayLike, dec: ArrayLike, order: int) -> NDArray[np.int64]:
    """Nested HEALPix pixel of each position.

    Parameters
    ----------
    ra, dec : array_like, shape (n,)
        Degrees.
    order : int
        HEALPix order k (nside = 2**k).

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    hp = _healpix(order)
    lon = np.asarray(ra, dtype=float) * u.deg
    lat = np.asarray(dec, dtype=float) * u.deg
    return np.asarray(hp.lonlat_to_healpix(lon, lat), dtype=np.int64)


def cone_pixels(ra: float, dec: float, radius_deg: float, order: int) -> NDArray[np.int64]:
    """Nested HEALPix pixels that overlap a cone, inclusively (never misses one).

    astropy-healpix's own cone search can miss pixels that only clip the cone edge
    (astropy/astropy-healpix#287), so the search is widened and then cut on pixel centres: a
    pixel overlapping the cone has its centre within ``radius + r_pix`` of the cone centre,
    with ``r_pix = PIXEL_RADIUS_FACTOR × resolution`` bounding the pixel's centre-to-edge
    distance. The result may hold a thin ring of pixels that do not touch the cone.

    Parameters
    ----------
    ra, dec : float
        Cone centre, degrees.
    radius_deg : float
        Cone radius, degrees (≥ 0).
    order : int
        HEALPix order.

    Returns
    -------
    ndarray of int64
        Sorted unique pixel indices.
    """
    if not radius_deg >= 0:
        raise ValueError(f"cone radius must be >= 0, got {radius_deg}")
    hp = _healpix(order)
    res = hp.pixel_resolution.to_value(u.deg)
    keep_radius = radius_deg + PIXEL_RADIUS_FACTOR * res
    if keep_radius + res >= 180.0:
        return np.arange(hp.npix, dtype=np.int64)
    cand = np.asarray(hp.cone_search_lonlat(float(ra) * u.deg, float(dec) * u.deg,
                                            (keep_radius + res) * u.deg), dtype=np.int64)
    lon, lat = hp.healpix_to_lonlat(cand)
    sep = angular_separation(ra, dec, lon.to_value(u.deg), lat.to_value(u.deg)) / 3600.0
    return np.unique(cand[sep <= keep_radius])
