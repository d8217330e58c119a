"""Sky selections over a star table sorted by nested HEALPix index and stored in chunks.

The maths behind the predictions store's queries
(:func:`csstflux.io.stores.predictions.query_indices`),
kept free of any storage library: the table is seen through its per-chunk index ranges
(first/last index of each chunk) and a ``read(column, start, stop)`` callable.

In the nested scheme the pixel ``p`` at order ``k`` holds exactly the order-``K`` indices
``p << 2(K − k)`` to ``((p + 1) << 2(K − k)) − 1``, so any set of coarse pixels is a set of
index ranges of the sorted table, and only the chunks whose range meets one must be read.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.sky.geometry import angular_separation, cone_pixels

IntArray = NDArray[np.int64]
#: ``read(column, start, stop)``: rows start:stop of a column of the table.
Reader = Callable[[str, int, int], NDArray[np.generic]]
#: Resolution of an order-0 HEALPix pixel, deg (√(4π/12) rad); at order k: this / 2**k.
ORDER0_RES_DEG = float(np.degrees(np.sqrt(4.0 * np.pi / 12.0)))
#: A cone is searched at the finest order whose pixels are at least radius / this across, so
#: that it needs a few hundred pixels at most.
PIXELS_PER_RADIUS = 8.0


def nested_ranges(pixels: ArrayLike, order: int, fine_order: int) -> tuple[IntArray, IntArray]:
    """Sorted, merged inclusive index ranges at ``fine_order`` covering ``pixels`` at ``order``.

    Returns ``(lo, hi)``, each (n_ranges,) int64.
    """
    if not 0 <= order <= fine_order:
        raise ValueError(f"order must be in 0..{fine_order}, got {order}")
    shift = 2 * (fine_order - order)
    pix = np.unique(np.asarray(pixels, dtype=np.int64))
    lo, hi = pix << shift, ((pix + 1) << shift) - 1
    if lo.size:
        new = np.r_[True, lo[1:] != hi[:-1] + 1]
        lo, hi = lo[new], hi[np.r_[new[1:], True]]
    return lo, hi


def search_order(radius_deg: float, fine_order: int) -> int:
    """Order at which to search a cone of ``radius_deg``: at most ``fine_order``."""
    if radius_deg <= 0:
        return fine_order
    k = int(np.floor(np.log2(ORDER0_RES_DEG * PIXELS_PER_RADIUS / radius_deg)))
    return int(np.clip(k, 0, fine_order))


def overlapping_chunks(chunk_min: IntArray, chunk_max: IntArray, lo: IntArray,
                       hi: IntArray) -> IntArray:
    """Chunks whose index range [chunk_min, chunk_max] meets one of the sorted, disjoint
    ranges [lo, hi]. Returns sorted chunk numbers."""
    if lo.size == 0 or chunk_min.size == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.searchsorted(hi, chunk_min, side="left")  # first range ending at/after the chunk
    ok = first < lo.size
    ok[ok] = lo[first[ok]] <= chunk_max[ok]
    return np.flatnonzero(ok).astype(np.int64)


def read_chunks(chunks: IntArray, n_rows: int, chunk_rows: int, read: Reader,
                names: tuple[str, ...]) -> tuple[IntArray, dict[str, NDArray[np.generic]]]:
    """Row indices and columns ``names`` of the given chunks; contiguous runs read at once."""
    index: list[IntArray] = [np.zeros(0, np.int64)]
    cols: dict[str, list[NDArray[np.generic]]] = {k: [np.zeros(0)] for k in names}
    for run in np.split(chunks, np.flatnonzero(np.diff(chunks) != 1) + 1):
        if run.size == 0:
            continue
        a, b = int(run[0]) * chunk_rows, min((int(run[-1]) + 1) * chunk_rows, n_rows)
        index.append(np.arange(a, b, dtype=np.int64))
        for k in names:
            cols[k].append(np.asarray(read(k, a, b)))
    return np.concatenate(index), {k: np.concatenate(v) for k, v in cols.items()}


def select(chunk_min: IntArray, chunk_max: IntArray, n_rows: int, chunk_rows: int,
           read: Reader, fine_order: int, *, cone: tuple[float, float, float] | None = None,
           pixels: ArrayLike | None = None, order: int | None = None) -> IntArray:
    """Sorted row indices in a cone or in nested pixels (see
    :func:`csstflux.io.stores.predictions.query_indices`); reads ``ra``/``dec`` or ``healpix``
    (indices
    at ``fine_order``) of the candidate chunks only."""
    if (cone is None) == (pixels is None):
        raise ValueError("give exactly one of cone and pixels")
    if cone is not None:
        ra, dec, radius = (float(v) for v in cone)
        if not radius >= 0 or not abs(dec) <= 90 or not np.isfinite(ra):
            raise ValueError(f"invalid cone {cone}")
        k = search_order(radius, fine_order)
        lo, hi = nested_ranges(cone_pixels(ra, dec, radius, k), k, fine_order)
        chunks = overlapping_chunks(chunk_min, chunk_max, lo, hi)
        idx, cols = read_chunks(chunks, n_rows, chunk_rows, read, ("ra", "dec"))
        return idx[angular_separation(ra, dec, cols["ra"], cols["dec"]) <= radius * 3600.0]
    if order is None or not 0 <= int(order) <= fine_order:
        raise ValueError(f"pixels need an order in 0..{fine_order}, got {order}")
    pix = np.asarray(pixels, dtype=np.int64).ravel()
    lo, hi = nested_ranges(pix, int(order), fine_order)
    chunks = overlapping_chunks(chunk_min, chunk_max, lo, hi)
    idx, cols = read_chunks(chunks, n_rows, chunk_rows, read, ("healpix",))
    shift = 2 * (fine_order - int(order))
    return idx[np.isin(np.asarray(cols["healpix"], np.int64) >> shift, pix)]
