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

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

# Sky geometry lives in the base module csstflux.sky.geometry (the io layer needs it too);
# re-exported.
from csstflux.sky.geometry import (
    ARCSEC_PER_RAD,
    PIXEL_RADIUS_FACTOR,
    Array,
    angular_separation,
    cone_pixels,
    healpix_index,
)

__all__ = [
    "ARCSEC_PER_RAD", "PIXEL_RADIUS_FACTOR", "MatchResult", "MatchStatus", "angular_separation",
    "chord_length", "cone_pixels", "healpix_index", "match_nearest", "unit_vectors",
]


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
