"""Extracted slitless spectra and the standards' R = 200, in both directions.

The CSST extraction has each band's resolution, :data:`csstflux.grids.BAND_RESOLUTION` (GU 225,
GV and GI 250; the one source of truth); the predicted SEDs are R = 200 spectra. The flat fit
brings each extracted spectrum to R = 200 before it forms ratios (:func:`match_extracted`,
through :func:`csstflux.spectra.degrade.match_band_resolution`); the simulation goes the
other way, to the unique band-resolution spectrum that the matching brings back to a given
R = 200 one (:func:`to_band_resolution`, a well-conditioned banded solve). Pixels within the
matching kernel's reach (:func:`kernel_reach`) of a gap are left out (:func:`spread`).
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.constants import FWHM_TO_SIGMA
from csstflux.errors import GridMismatchError
from csstflux.grids import BAND_RESOLUTION, OUTPUT_GRID
from csstflux.spectra.degrade import match_band_resolution

Array = NDArray[np.float64]


def kernel_reach(resolution: float) -> int:
    """Output pixels either side within which the R → 200 matching kernel mixes pixels:
    ``ceil(3σ)`` of its Gaussian (σ in ln λ = FWHM_TO_SIGMA √(1/200² − 1/R²); 2 pixels in
    every band; the weight beyond is < 1e-5)."""
    r0 = OUTPUT_GRID.resolution
    if not resolution > r0:
        return 0
    sig = FWHM_TO_SIGMA * np.sqrt(1.0 / r0**2 - 1.0 / resolution**2) / OUTPUT_GRID.dlnlambda
    return int(np.ceil(3.0 * sig))


@functools.lru_cache(maxsize=16)
def _matching_operator(band: str, pixels: tuple[int, ...]) -> Array:
    """(n_b, n_b) matrix ``A`` of :func:`csstflux.spectra.degrade.match_band_resolution` on a
    spectrum defined on ``pixels`` (NaN elsewhere): ``F_200 = A @ F_band``."""
    inb = np.zeros(OUTPUT_GRID.n, dtype=bool)
    inb[list(pixels)] = True
    eye = np.full((inb.sum(), OUTPUT_GRID.n), np.nan)
    eye[:, inb] = np.eye(int(inb.sum()))
    out, _ = match_band_resolution(eye, band)
    return np.ascontiguousarray(np.nan_to_num(out[:, inb]).T)


def to_band_resolution(spectra: Array, band: str, inband: NDArray[np.bool_]) -> Array:
    """The band-resolution spectra whose R = 200 matching gives ``spectra`` (the simulation's
    extraction; :mod:`csstflux.flat.observe`, "Traces").

    ``spectra`` (n, 574) at R = 200 on the ``inband`` pixels (NaN elsewhere); the result is
    ``A⁻¹ spectra`` on those pixels with ``A`` the matching operator of
    :func:`csstflux.spectra.degrade.match_band_resolution` there (banded, condition number
    ≈ 2.8 in GV and GI, less in GU), NaN elsewhere.
    """
    pix = tuple(int(i) for i in np.flatnonzero(inband))
    out = np.full(np.shape(spectra), np.nan)
    if not pix or not np.shape(spectra)[0]:
        return out
    v = np.array(np.asarray(spectra, float)[:, list(pix)])
    gaps = ~np.isfinite(v)
    for r in np.flatnonzero(gaps.any(axis=1) & ~gaps.all(axis=1)):
        # a masked pixel of the truth (a NaN SED pixel): bridged for the solve, NaN again
        # after (build-flat leaves the matching kernel's reach around it out)
        k = np.arange(v.shape[1])
        v[r, gaps[r]] = np.interp(k[gaps[r]], k[~gaps[r]], v[r, ~gaps[r]])
    out[:, list(pix)] = np.where(gaps, np.nan,
                                 np.linalg.solve(_matching_operator(band, pix), v.T).T)
    return out


def match_extracted(counts: ArrayLike, counts_err: ArrayLike, band: str,
                    inband: NDArray[np.bool_], resolution: float | None
                    ) -> tuple[Array, Array]:
    """Extracted spectra brought to the standards' R = 200 before ratios are formed.

    ``resolution`` is the extraction's (None or ≤ 200: returned as they are). The spectra are
    matched by :func:`csstflux.spectra.degrade.match_band_resolution` (the band's R is
    :data:`csstflux.grids.BAND_RESOLUTION`, which ``resolution`` must equal); in-band pixels
    missing from the extraction (a trace cut at the detector's edge) and every pixel within
    :func:`kernel_reach` of one come back NaN, since the kernel renormalised over the gap is not
    the one the standards were smoothed with.

    Returns
    -------
    counts, counts_err : ndarray, shape (n, 574), float64
    """
    c = np.asarray(counts, dtype=float)
    e = np.asarray(counts_err, dtype=float)
    if resolution is None or not resolution > OUTPUT_GRID.resolution or not c.shape[0]:
        return c, e
    if resolution != BAND_RESOLUTION[band]:
        raise GridMismatchError(f"spectra extracted at R = {resolution:g}, but the {band} band's "
                                "resolution is csstflux.grids.BAND_RESOLUTION",
                                expected=BAND_RESOLUTION[band], found=resolution)
    m, me = match_band_resolution(c, band, error=e)
    assert me is not None
    lost = spread(~np.isfinite(c) & inband[None, :], kernel_reach(resolution))
    return np.where(lost, np.nan, m), np.where(lost, np.nan, me)


def spread(mask: NDArray[np.bool_], reach: int) -> NDArray[np.bool_]:
    """``mask`` (n, n_wave) dilated by ``reach`` pixels along the wavelength axis."""
    out = np.array(mask, dtype=bool, copy=True)
    for k in range(1, reach + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    return out
