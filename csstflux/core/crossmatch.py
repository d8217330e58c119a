"""Sky cross-matching on plain arrays: separations, unique nearest matches, HEALPix helpers.

Positions are ICRS right ascension and declination in degrees; separations are in arcsec.
Candidate pairs are found with a KD-tree on 3D unit vectors, where an angle θ on the sphere is
the chord ``2 sin(θ/2)``: there is no RA = 0/360 seam and no pole singularity. The separations
reported are then recomputed with the Vincenty formula (:func:`angular_separation`), which is
accurate at every angle, and the radius cut is applied to those.

Match rule (:func:`match_nearest`): a set-1 source is MATCHED to a set-2 object when that
object is the only set-2 object within the radius of the source *and* the source is the only
set-1 source within the radius of that object. So every set-2 object is used at most once and
no choice between near-equal candidates is ever made. Otherwise the source is NO_MATCH (no
set-2 object within the radius), AMBIGUOUS (two or more set-2 objects within the radius) or
CONTESTED (one candidate, which also lies within the radius of another set-1 source). The
ambiguous and contested sources are dropped (``index = -1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

Array = NDArray[np.float64]
ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0

#: Extra radius, in units of the HEALPix pixel resolution, by which :func:`cone_pixels` widens
#: its search. The largest centre-to-boundary distance of a HEALPix pixel is ≈ 1.045 times the
#: resolution √(4π/N_pix) at high order and smaller at low order.
PIXEL_RADIUS_FACTOR = 1.1


class MatchStatus(IntEnum):
    """Outcome of matching one set-1 source."""

    MATCHED = 0
    """Unique mutual nearest match within the radius."""
    NO_MATCH = 1
    """No set-2 object within the radius."""
    AMBIGUOUS = 2
    """Two or more set-2 objects within the radius: dropped."""
    CONTESTED = 3
    """The only candidate is also within the radius of another set-1 source: dropped."""


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


def unit_vectors(ra: ArrayLike, dec: ArrayLike) -> Array:
    """Unit vectors of sky positions (degrees), shape (n, 3)."""
    a = np.radians(np.asarray(ra, dtype=float)).ravel()
    d = np.radians(np.asarray(dec, dtype=float)).ravel()
    cd = np.cos(d)
    return np.stack([cd * np.cos(a), cd * np.sin(a), np.sin(d)], axis=-1)


def chord_length(angle_arcsec: float) -> float:
    """Chord between two unit vectors ``angle_arcsec`` apart: 2 sin(θ/2)."""
    return float(2.0 * np.sin(min(angle_arcsec / ARCSEC_PER_RAD, np.pi) / 2.0))


@dataclass(frozen=True)
class MatchResult:
    """Per-source result of :func:`match_nearest`; every array has shape (n1,)."""

    index: NDArray[np.int64]
    """Index into set 2 of the match, -1 unless MATCHED."""
    separation: Array
    """Separation to the nearest set-2 object within the radius, arcsec (NaN when none);
    filled for AMBIGUOUS and CONTESTED sources too, as a diagnostic."""
    status: NDArray[np.int8]
    """:class:`MatchStatus` code."""
    n_candidates: NDArray[np.int64]
    """Number of set-2 objects within the radius."""
    radius_arcsec: float
    """Match radius used."""

    @property
    def matched(self) -> NDArray[np.bool_]:
        """True for MATCHED sources."""
        return self.status == MatchStatus.MATCHED

    def counts(self) -> dict[str, int]:
        """Number of sources per status, keyed by lower-case status name, plus ``total``."""
        out = {s.name.lower(): int(np.count_nonzero(self.status == s)) for s in MatchStatus}
        out["total"] = int(self.status.size)
        return out


def match_nearest(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike, dec2: ArrayLike,
                  radius_arcsec: float) -> MatchResult:
    """Unique nearest-neighbour match of set 1 against set 2 (rule in the module docstring).

    Parameters
    ----------
    ra1, dec1 : array_like, shape (n1,)
        Set-1 positions (e.g. detected stars), degrees.
    ra2, dec2 : array_like, shape (n2,)
        Set-2 positions (e.g. catalogue stars with predicted SEDs), degrees.
    radius_arcsec : float
        Match radius, arcsec (> 0). A pair exactly at the radius counts as inside.

    Returns
    -------
    MatchResult
    """
    if not radius_arcsec > 0:
        raise ValueError(f"match radius must be positive, got {radius_arcsec}")
    r1a, d1a = np.asarray(ra1, dtype=float).ravel(), np.asarray(dec1, dtype=float).ravel()
    r2a, d2a = np.asarray(ra2, dtype=float).ravel(), np.asarray(dec2, dtype=float).ravel()
    if r1a.shape != d1a.shape or r2a.shape != d2a.shape:
        raise ValueError("ra and dec of a set must have the same length")
    n1, n2 = r1a.size, r2a.size
    for name, d in (("dec1", d1a), ("dec2", d2a)):
        if np.any(np.abs(d) > 90.0):
            raise ValueError(f"{name} outside [-90, 90] degrees")
    ok1 = np.isfinite(r1a) & np.isfinite(d1a)
    ok2 = np.isfinite(r2a) & np.isfinite(d2a)
    i_pair, j_pair = _candidate_pairs(r1a, d1a, ok1, r2a, d2a, ok2, radius_arcsec)
    sep = angular_separation(r1a[i_pair], d1a[i_pair], r2a[j_pair], d2a[j_pair])
    inside = sep <= radius_arcsec
    i_pair, j_pair, sep = i_pair[inside], j_pair[inside], sep[inside]

    n_cand = np.bincount(i_pair, minlength=n1).astype(np.int64)
    n_claim = np.bincount(j_pair, minlength=n2)
    # nearest candidate of every source: sort by (source, separation), take the first
    order = np.lexsort((sep, i_pair))
    first = order[np.r_[True, np.diff(i_pair[order]) != 0]] if order.size else order
    nearest_j = np.full(n1, -1, dtype=np.int64)
    nearest_sep = np.full(n1, np.nan)
    nearest_j[i_pair[first]] = j_pair[first]
    nearest_sep[i_pair[first]] = sep[first]

    status = np.full(n1, MatchStatus.NO_MATCH, dtype=np.int8)
    status[n_cand >= 2] = MatchStatus.AMBIGUOUS
    single = n_cand == 1
    contested = np.zeros(n1, dtype=bool)
    contested[single] = n_claim[nearest_j[single]] >= 2
    status[single & contested] = MatchStatus.CONTESTED
    status[single & ~contested] = MatchStatus.MATCHED
    index = np.where(status == MatchStatus.MATCHED, nearest_j, -1).astype(np.int64)
    return MatchResult(index, nearest_sep, status, n_cand, float(radius_arcsec))


def _candidate_pairs(r1: Array, d1: Array, ok1: NDArray[np.bool_], r2: Array, d2: Array,
                     ok2: NDArray[np.bool_], radius_arcsec: float
                     ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """All (i, j) pairs with chord distance within the radius (slightly widened)."""
    empty = np.zeros(0, dtype=np.int64)
    if not ok1.any() or not ok2.any():
        return empty, empty
    idx1, idx2 = np.flatnonzero(ok1), np.flatnonzero(ok2)
    tree1 = cKDTree(unit_vectors(r1[idx1], d1[idx1]))
    tree2 = cKDTree(unit_vectors(r2[idx2], d2[idx2]))
    # widen by a relative 1e-9 plus an absolute 1e-12 so the exact cut is made on Vincenty
    chord = chord_length(radius_arcsec) * (1.0 + 1e-9) + 1e-12
    pairs = tree1.sparse_distance_matrix(tree2, chord, output_type="ndarray")
    return idx1[pairs["i"].astype(np.int64)], idx2[pairs["j"].astype(np.int64)]


# --- HEALPix ------------------------------------------------------------------------------------

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
