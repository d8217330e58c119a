"""Contamination of extracted slitless spectra by their neighbours' first-order traces.

The simplest defensible model. Source ``i``'s extraction at output pixel ``k`` is a box on the
detector: along its dispersion direction ``u_i`` the stretch ``[t_i(λ_{k−½}), t_i(λ_{k+½})]``
of its trace, across it ``|d| ≤ h_i`` (the aperture half-width) about the trace line. A
neighbour ``j`` spreads the counts ``c_j(k')`` of its own output pixel ``k'`` uniformly along
the segment ``[t_j(λ_{k'−½}), t_j(λ_{k'+½})]`` of its trace, with a Gaussian profile of σ_j
across it (the line spread along the trace is already in the spectrum). The part of that
light inside ``i``'s box at ``k`` is

    c_j(k') · (overlap of the segment, projected on u_i, with i's stretch) / (segment length)
            · [Φ((h_i − d)/σ_j) − Φ((−h_i − d)/σ_j)],

with ``d`` the segment midpoint's distance from ``i``'s trace line. Traces are taken as
locally parallel (the projection is exact for the shipped model, where every trace runs along
±x; it includes neighbours dispersing the opposite way). Summed over ``k'`` and over every
neighbour this is the contaminating counts at ``(i, k)``; the source's own light is taken as
fully extracted (an aperture-corrected extraction). Zeroth-order images, higher orders and
sources off the detector whose traces fall on it are not modelled here (the caller decides
which sources to pass: :func:`csstflux.flat.observe.simulate` passes every source with a
trace point on the detector).

Pairs are found from the traces' bounding boxes, padded by the aperture and 5σ of the
profile (a neighbour further away contributes < 3e-7 of its counts).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from csstflux.flat.traces import TraceGeometry

Array = NDArray[np.float64]
#: Profile σ beyond the aperture at which a neighbour's light is ignored.
PROFILE_REACH_SIGMA = 5.0


def contamination(geometry: TraceGeometry, counts: ArrayLike) -> Array:
    """Counts each source's extraction receives from the other sources' traces.

    Parameters
    ----------
    geometry : TraceGeometry
        Traces of all sources on one detector (:meth:`SlitlessInstrument.geometry`, cut at
        the detector's edges): a pixel whose trace point is off the detector neither gives
        nor receives light.
    counts : array_like, shape (n, n_wave)
        Each source's own expected counts per output pixel (e⁻; NaN or ≤ 0: none).

    Returns
    -------
    ndarray, shape (n, n_wave)
        Contaminating counts, e⁻ per output pixel; 0 where none, NaN where the source's own
        trace point is off the detector.
    """
    g = geometry
    c = np.asarray(counts, dtype=float)
    n, n_wave = c.shape
    if g.x.shape != (n, n_wave) or g.t_edges.shape != (n, n_wave + 1):
        raise ValueError(f"geometry of shape {g.x.shape} does not match counts {c.shape}")
    live = g.on_detector & np.isfinite(g.t_edges[:, :-1]) & np.isfinite(g.t_edges[:, 1:])
    give = np.where(live & np.isfinite(c) & (c > 0), c, 0.0)
    out = np.where(live, 0.0, np.nan)
    pad = g.half_width + PROFILE_REACH_SIGMA * g.psf_sigma
    box = _boxes(g, live, pad)
    for i, j in _pairs(box):
        for a, b in ((i, j), (j, i)):
            if live[a].any() and give[b].any():
                out[a] += _received(g, live, give, a, b)
    return out


def _boxes(g: TraceGeometry, live: NDArray[np.bool_], pad: Array) -> Array:
    """(n, 4) x_lo, x_hi, y_lo, y_hi of each live trace, padded; NaN rows for none."""
    with np.errstate(invalid="ignore"):
        xs = np.where(live, g.x, np.nan)
        ys = np.where(live, g.y, np.nan)
    box = np.full((g.x.shape[0], 4), np.nan)
    has = live.any(axis=1)
    if has.any():
        box[has, 0] = np.nanmin(xs[has], axis=1) - pad[has]
        box[has, 1] = np.nanmax(xs[has], axis=1) + pad[has]
        box[has, 2] = np.nanmin(ys[has], axis=1) - pad[has]
        box[has, 3] = np.nanmax(ys[has], axis=1) + pad[has]
    return box


def _pairs(box: Array) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` of intersecting boxes (sweep along x)."""
    idx = np.flatnonzero(np.isfinite(box[:, 0]))
    order = idx[np.argsort(box[idx, 0], kind="stable")]
    lo = box[order, 0]
    out: list[tuple[int, int]] = []
    for p, i in enumerate(order):
        stop = int(np.searchsorted(lo, box[i, 1], side="right"))
        cand = order[p + 1:stop]
        hit = cand[(box[cand, 2] <= box[i, 3]) & (box[cand, 3] >= box[i, 2])]
        out.extend((int(min(i, j)), int(max(i, j))) for j in hit)
    return out


def _received(g: TraceGeometry, live: NDArray[np.bool_], give: Array, i: int, j: int
              ) -> Array:
    """(n_wave,) counts source ``i`` receives from source ``j``."""
    u = g.direction[i]
    nrm = np.array([-u[1], u[0]])
    kj = np.flatnonzero(give[j] > 0)
    tj = g.t_edges[j]
    e1 = g.origin[j][None, :] + tj[kj, None] * g.direction[j][None, :]
    e2 = g.origin[j][None, :] + tj[kj + 1, None] * g.direction[j][None, :]
    rel1, rel2 = e1 - g.origin[i], e2 - g.origin[i]
    s1, s2 = rel1 @ u, rel2 @ u
    d = 0.5 * (rel1 + rel2) @ nrm
    h, sig = g.half_width[i], g.psf_sigma[j]
    cross = ndtr((h - d) / sig) - ndtr((-h - d) / sig)
    near = cross > 0
    if not near.any():
        return np.zeros(give.shape[1])
    kj, s1, s2, cross = kj[near], s1[near], s2[near], cross[near]
    seg_lo, seg_hi = np.minimum(s1, s2), np.maximum(s1, s2)
    ki = np.flatnonzero(live[i])
    lo_i, hi_i = g.t_edges[i][ki], g.t_edges[i][ki + 1]
    overlap = np.clip(np.minimum(hi_i[:, None], seg_hi[None, :])
                      - np.maximum(lo_i[:, None], seg_lo[None, :]), 0.0, None)
    frac = overlap / np.maximum(seg_hi - seg_lo, 1e-300)[None, :]
    out = np.zeros(give.shape[1])
    out[ki] = frac @ (give[j][kj] * cross)
    return out
