"""Flux-conserving resampling of spectra onto a new grid of pixel edges.

A spectrum is read as piecewise constant: input pixel ``j`` holds flux density ``F_j`` over
``[e_j, e_{j+1})``. An output pixel receives the mean of that function over its own extent,
using only unmasked input pixels. With ``W[i, j]`` the fraction of output pixel ``i`` that input
pixel ``j`` covers (overlap length / output width) and ``g_j`` = 1 for a good pixel, 0 for a
masked one::

    F_out_i = Σ_j W_ij g_j F_j / c_i,   c_i = Σ_j W_ij g_j,
    σ²_out_i = Σ_j W_ij² g_j σ_j² / c_i².

``c_i`` is the covered fraction of the output pixel; the output pixel is masked when
``c_i < min_coverage`` (pixels outside the input range have ``c_i = 0``). Where every output
pixel is fully covered by good input, ``Σ_i F_out_i Δλ_i = Σ_j F_j Δλ_j`` over the same range:
∫F dλ is conserved to rounding. The output errors are exact for independent input errors but
neighbouring output pixels that share an input pixel are correlated; that covariance is not
returned.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import LogGrid
from csstflux.spectra._common import (
    BoolArray,
    FloatArray,
    as_batch,
    check_wavelength,
    clean,
    weighted_result,
)

__all__ = ["is_log_uniform", "pixel_edges", "resampling_matrix", "resample"]

#: Relative spread of Δlnλ below which a grid counts as log-uniform. Loose enough for
#: log-uniform centres stored in float32 (Δlnλ ≈ 1e-4 carries ~1e-3 relative rounding).
LOG_UNIFORM_RTOL: float = 1e-3


def is_log_uniform(wavelength: ArrayLike, rtol: float = LOG_UNIFORM_RTOL) -> NDArray[np.bool_]:
    """Whether pixel centres are uniformly spaced in ln λ.

    A grid counts as log-uniform when the relative spread (max − min) / mean of its steps in
    ln λ is below ``rtol`` and below the relative spread of its steps in λ; so a linear grid,
    which is also nearly log-uniform over a short range, is still recognised as linear.

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Pixel centres, Å, strictly increasing, n_pix ≥ 2.

    Returns
    -------
    bool array of shape () or (n_spec,)
    """
    w = np.asarray(wavelength, dtype=np.float64)
    dln = np.diff(np.log(w), axis=-1)
    dlin = np.diff(w, axis=-1)
    spread_ln = np.ptp(dln, axis=-1) / np.mean(dln, axis=-1)
    spread_lin = np.ptp(dlin, axis=-1) / np.mean(dlin, axis=-1)
    return np.asarray((spread_ln < rtol) & (spread_ln <= spread_lin))


def pixel_edges(wavelength: ArrayLike) -> FloatArray:
    """Pixel edges from pixel centres.

    Geometric midpoints for a log-uniform grid (see :func:`is_log_uniform`), arithmetic
    midpoints otherwise; the two outer edges lie half of the neighbouring step beyond the end
    centres (in ln λ or in λ, respectively). For a :class:`~csstflux.grids.LogGrid` this
    reproduces ``grid.edges``.

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Pixel centres, Å, strictly increasing, n_pix ≥ 2. A 2-D array is treated row by row.

    Returns
    -------
    edges : (n_pix + 1,) or (n_spec, n_pix + 1) float64
        Pixel edges, Å.
    """
    w = np.asarray(wavelength, dtype=np.float64)
    w2 = check_wavelength(w, w.shape[0] if w.ndim == 2 else 1, w.shape[-1])
    lnw = np.log(w2)
    log_edges = np.exp(_midpoint_edges(lnw))
    lin_edges = _midpoint_edges(w2)
    use_log = is_log_uniform(w2)[:, np.newaxis]
    edges = np.where(use_log, log_edges, lin_edges)
    if not np.all(edges[:, 0] > 0):
        raise ValueError(
            "extrapolated first pixel edge is not positive; "
            "the grid is too coarse at its blue end for linear edges"
        )
    return edges[0] if w.ndim == 1 else edges


def _midpoint_edges(x: FloatArray) -> FloatArray:
    """Midpoints of ``x`` (…, n) plus half a step beyond each end: (…, n + 1)."""
    mid = 0.5 * (x[:, 1:] + x[:, :-1])
    first = x[:, :1] - 0.5 * (x[:, 1:2] - x[:, :1])
    last = x[:, -1:] + 0.5 * (x[:, -1:] - x[:, -2:-1])
    return np.concatenate([first, mid, last], axis=1)


def resampling_matrix(in_edges: ArrayLike, out_edges: ArrayLike) -> sp.csr_matrix:
    """Sparse matrix of overlap fractions between two pixel grids.

    Parameters
    ----------
    in_edges : (n_in + 1,) float
        Input pixel edges, Å, strictly increasing.
    out_edges : (n_out + 1,) float
        Output pixel edges, Å, strictly increasing.

    Returns
    -------
    W : scipy.sparse.csr_matrix, shape (n_out, n_in), float64
        ``W[i, j]`` = length of the overlap of output pixel ``i`` and input pixel ``j`` divided
        by the width of output pixel ``i``. Row sums are the fraction of each output pixel that
        the input grid covers (1 inside, < 1 at the ends, 0 outside).
    """
    ein = _checked_edges(in_edges, "in_edges")
    eout = _checked_edges(out_edges, "out_edges")
    rows, cols, data = _overlaps(ein[np.newaxis, :], eout)
    return sp.csr_matrix((data, (rows, cols)), shape=(eout.size - 1, ein.size - 1))


def _checked_edges(edges: ArrayLike, name: str) -> FloatArray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
        raise ValueError(f"{name} must be 1-D, strictly increasing, with at least 2 entries")
    return e


#: Rows of a per-row (2-D) wavelength batch handled together by :func:`resample`; bounds the
#: overlap arrays at ~5 pairs per output pixel and row (≈ 50 MB for the model input grid).
_ROW_BLOCK = 128


def _overlaps(in_edges: FloatArray, out_edges: FloatArray
              ) -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray]:
    """Overlap fractions of one output grid with each row of input edges, all rows at once.

    Parameters
    ----------
    in_edges : (n_rows, n_in + 1) float64
        Input pixel edges per row, strictly increasing along each row.
    out_edges : (n_out + 1,) float64
        Output pixel edges, strictly increasing.

    Returns
    -------
    rows : int array
        Flat output index ``r * n_out + i`` (row r, output pixel i) of each overlapping pair.
    cols : int array
        Input pixel index j within row r.
    frac : float64 array
        Overlap length of output pixel i and input pixel j over the width of output pixel i;
        only pairs with a positive overlap.

    All rows are searched in one call: row r's edges are shifted by r times a stride wider than
    the searched range, which keeps the rows apart in one sorted array. For the search the input
    edges are clipped to the output range widened by its width on each side (an edge outside
    compares with every output edge as before, so the indices are unchanged, and one row with
    absurd wavelengths cannot cost the others precision); the overlaps themselves are computed
    from the unshifted, unclipped edges, so they equal a row-by-row computation.
    """
    n_rows, n_in = in_edges.shape[0], in_edges.shape[1] - 1
    n_out = out_edges.size - 1
    lo, hi = out_edges[:-1], out_edges[1:]
    width = float(out_edges[-1] - out_edges[0])
    base = float(out_edges[0]) - width
    stride = 3.0 * width + 1.0
    shift = stride * np.arange(n_rows)[:, np.newaxis]
    flat_in = (np.clip(in_edges, base, base + 3.0 * width) - base + shift).ravel()
    first = np.arange(n_rows)[:, np.newaxis] * (n_in + 1)
    # first and last input pixel of the same row that can overlap each output pixel
    j_first = np.searchsorted(flat_in, (lo - base + shift).ravel(), side="right") - 1
    j_last = np.searchsorted(flat_in, (hi - base + shift).ravel(), side="left") - 1
    j_first = np.clip(j_first.reshape(n_rows, n_out) - first, 0, n_in - 1).ravel()
    j_last = np.clip(j_last.reshape(n_rows, n_out) - first, 0, n_in - 1).ravel()
    count = np.maximum(j_last - j_first + 1, 0)
    rows = np.repeat(np.arange(n_rows * n_out), count)
    start = np.cumsum(count) - count
    cols = j_first[rows] + (np.arange(rows.size) - start[rows])
    r, i = np.divmod(rows, n_out)
    overlap = np.minimum(hi[i], in_edges[r, cols + 1]) - np.maximum(lo[i], in_edges[r, cols])
    keep = overlap > 0
    rows, cols, i = rows[keep], cols[keep], i[keep]
    return rows, cols, overlap[keep] / (hi - lo)[i]


def resample(
    wavelength_in: ArrayLike,
    flux: ArrayLike,
    out: LogGrid | ArrayLike,
    error: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    min_coverage: float = 0.5,
) -> tuple[FloatArray, FloatArray | None, BoolArray]:
    """Resample spectra onto new pixels, conserving flux.

    Parameters
    ----------
    wavelength_in : (n_pix,) or (n_spec, n_pix) float
        Input pixel centres, Å, strictly increasing; edges from :func:`pixel_edges`. A 1-D grid
        shared by all rows is applied with one sparse product; a 2-D one row by row.
    flux : (n_pix,) or (n_spec, n_pix) float
        Flux density per unit wavelength (any unit; the output has the same unit).
    out : LogGrid or (n_out + 1,) float
        Output grid, or output pixel edges in Å.
    error : same shape as flux, optional
        1σ errors, flux unit. Non-finite or non-positive values mask their pixel.
    mask : same shape as flux, bool, optional
        True = bad input pixel; never used.
    min_coverage : float
        Smallest fraction of an output pixel that unmasked input must cover for it to be kept.

    Returns
    -------
    flux_out : (n_out,) or (n_spec, n_out) float64
        Mean flux density over each output pixel; 0.0 where masked.
    error_out : same shape as flux_out, float64, or None when ``error`` is None
        Propagated 1σ errors (correlations between output pixels neglected); 0.0 where masked.
    mask_out : same shape as flux_out, bool
        True where the covered fraction is below ``min_coverage``.
    """
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must lie in (0, 1], got {min_coverage}")
    f2, squeeze = as_batch(flux)
    f2, e2, bad = clean(f2, error, mask)
    w2 = check_wavelength(wavelength_in, f2.shape[0], f2.shape[1], "wavelength_in")
    out_edges = out.edges if isinstance(out, LogGrid) else _checked_edges(out, "out edges")
    good = (~bad).astype(np.float64)
    in_edges = pixel_edges(w2)

    num = np.empty((f2.shape[0], out_edges.size - 1))
    cov = np.empty_like(num)
    var = None if e2 is None else np.empty_like(num)
    if w2.shape[0] == 1:   # one grid for every row: one sparse product
        mat = resampling_matrix(in_edges[0], out_edges)
        num[:] = (mat @ (f2 * good).T).T
        cov[:] = (mat @ good.T).T
        if var is not None and e2 is not None:
            var[:] = (mat.multiply(mat) @ (e2**2 * good).T).T
    else:                  # a grid per row: overlaps of a block of rows at once
        n_out = num.shape[1]
        for b in range(0, f2.shape[0], _ROW_BLOCK):
            blk = slice(b, min(b + _ROW_BLOCK, f2.shape[0]))
            pair, col, frac = _overlaps(in_edges[blk], out_edges)
            row = pair // n_out
            size = (blk.stop - blk.start) * n_out
            g = good[blk][row, col]
            num[blk] = np.bincount(pair, frac * g * f2[blk][row, col], size).reshape(-1, n_out)
            cov[blk] = np.bincount(pair, frac * g, size).reshape(-1, n_out)
            if var is not None and e2 is not None:
                var[blk] = np.bincount(pair, frac**2 * g * e2[blk][row, col] ** 2,
                                       size).reshape(-1, n_out)

    # 1e-9 absorbs rounding in the overlap sums of fully covered pixels
    bad_out = cov < min_coverage - 1e-9
    return weighted_result(num, cov, var, bad_out, squeeze)
