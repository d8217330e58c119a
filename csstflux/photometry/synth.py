"""Synthetic photometry of SEDs on the output grid.

A photon-counting band measures the mean flux density

    <f_ν> = ∫ f_λ R λ dλ / ∫ R (c/λ) dλ,      m_AB = −2.5 log10 <f_ν> − 48.60,

with f_λ in erg/s/cm²/Å, c in Å/s and <f_ν> in erg/s/cm²/Hz. The SED is read as piecewise
constant over its pixels (edges as in :attr:`csstflux.grids.LogGrid.edges`), so the integral
is a fixed linear map, ``fnu = flam_ext @ weights.T``: weight k of a band is ∫ R λ dλ over pixel
k divided by c ∫ R/λ dλ. R is linear between its samples (zero outside them); both integrals
are evaluated in closed form on the fine sub-grid formed by the curve's samples and the pixel
edges, on each interval of which R is linear, so they are exact.

**Past the grid.** The SED grid ends at 10487 Å (last pixel edge); sdss_z, ps1_y, gaia_RP,
gaia_G, csst_z and csst_y reach further. The grid is extended redwards with the same Δlnλ to
cover every band, and :meth:`SyntheticPhotometry.extend` continues each SED there as a power
law in λ fitted (least squares in ln f against ln λ) to its last :data:`EXTEND_FIT` pixels.
Magnitude error of that extension (extended grid SED minus the exact Planck curve on the same
extended pixels), in mmag, for blackbodies::

                 5000 K    7000 K    9750 K
    sdss_z      −0.011    −0.006    −0.004
    ps1_y       −0.031    −0.019    −0.012
    gaia_G      −0.00001  −0.000    −0.000
    gaia_RP     −0.0003   −0.0001   −0.0001
    csst_z      −0.010    −0.006    −0.003
    csst_y      −0.031    −0.019    −0.012

(negative: the extension is slightly too bright), all below :data:`EXTENSION_ERROR_BOUND`
(0.1 mmag). Real stars with Paschen lines near the grid end will do somewhat worse; the part
of each band past the grid is small (``1 − coverage`` below).

**Before the grid.** Nothing is extrapolated bluewards of 2497 Å (the first pixel edge). A band
that starts there is truncated at the grid: both integrals run over the covered part only, so
``<f_ν>`` is the mean over that part and a flat f_ν still gives m_AB = 0. ``coverage`` is the
fraction of ∫ R λ dλ (the photon weight for a flat f_λ) that lies on the grid itself
(2497–10487 Å); :meth:`SyntheticPhotometry.ab_mags` returns NaN for bands below
:data:`MIN_COVERAGE`. Measured coverage of the registry bands (the others, sdss_u–i, ps1_g–z,
gaia_BP and csst_u–i, lie wholly on the grid: 1.0000)::

    sdss_z 0.9936   ps1_y 0.9817    gaia_G 0.99998   gaia_RP 0.9997
    csst_z 0.9928   csst_y 0.9796   csst_nuv 0.9956
    galex_NUV 0.3228   galex_FUV 0.0000

so only galex_FUV and galex_NUV give NaN at the default threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.constants import C_KMS
from csstflux.errors import GridMismatchError
from csstflux.grids import OUTPUT_GRID
from csstflux.photometry.bands import PhotBand

__all__ = ["EXTEND_FIT", "EXTENSION_ERROR_BOUND", "MIN_COVERAGE", "SyntheticPhotometry"]

#: Pixels at the red end of the grid over which the power-law extension is fitted.
EXTEND_FIT: int = 20
#: Fewest positive finite pixels among those the fit needs; fewer gives a NaN extension.
EXTEND_MIN_POINTS: int = 10
#: Bands with less of their photon weight on the grid than this give NaN magnitudes.
MIN_COVERAGE: float = 0.9
#: Bound (mag) on the extension error for 5000–9750 K blackbodies (see the module docstring).
EXTENSION_ERROR_BOUND: float = 1e-4
#: Speed of light, Å/s.
C_ANGSTROM: float = C_KMS * 1e13
#: AB zero point: m_AB = −2.5 log10(f_ν [erg/s/cm²/Hz]) − 48.60.
AB_ZERO: float = 48.60

FloatArray = NDArray[np.float64]


def _extended_edges(red_end: float) -> FloatArray:
    """Edges (n_ext + 1,) of the output grid, extended redwards until they pass ``red_end``."""
    g = OUTPUT_GRID
    n_need = int(np.ceil(np.log(red_end / g.start) / g.dlnlambda + 0.5))
    n_ext = max(g.n, n_need)
    return g.start * np.exp(g.dlnlambda * (np.arange(n_ext + 1) - 0.5))


def _integral(lo: FloatArray, hi: FloatArray, band: PhotBand, power: int) -> FloatArray:
    """Exact ∫ R λ^power dλ (power 1 or −1) over intervals [lo, hi] on which R is linear."""
    r_lo, r_hi = (np.interp(x, band.wavelength, band.response, left=0.0, right=0.0)
                  for x in (lo, hi))
    slope = (r_hi - r_lo) / (hi - lo)
    a = r_lo - slope * lo  # R = a + slope·λ on the interval
    if power == 1:
        return a * (hi**2 - lo**2) / 2.0 + slope * (hi**3 - lo**3) / 3.0
    return a * np.log(hi / lo) + slope * (hi - lo)


def _band_row(band: PhotBand, edges: FloatArray, n_grid: int) -> tuple[FloatArray, float]:
    """Weights (n_ext,) of one band on pixels with ``edges``, and its grid coverage."""
    w = band.wavelength
    nodes = np.union1d(w, edges[(edges > w[0]) & (edges < w[-1])])
    lo, hi = nodes[:-1], nodes[1:]
    num = _integral(lo, hi, band, 1)
    total = float(num.sum())
    pix = np.searchsorted(edges, 0.5 * (lo + hi)) - 1  # -1 before the grid, n_ext after
    on = (pix >= 0) & (pix < edges.size - 1)
    per_pixel = np.bincount(pix[on], weights=num[on], minlength=edges.size - 1)
    coverage = float(per_pixel[:n_grid].sum() / total)
    den = float(_integral(lo[on], hi[on], band, -1).sum()) * C_ANGSTROM
    row = per_pixel / den if den > 0 else np.zeros(edges.size - 1)
    return row, coverage


@dataclass(frozen=True, eq=False)
class SyntheticPhotometry:
    """Linear map from SEDs on the (extended) output grid to band-mean f_ν.

    Build it once with :meth:`from_bands` and apply it to batches of SEDs.
    """

    bands: tuple[PhotBand, ...]
    """The bands, in output order."""
    wavelength: FloatArray
    """(n_ext,) float64, vacuum Å: the output grid followed by its redward extension."""
    n_grid: int
    """``OUTPUT_GRID.n``: the first ``n_grid`` pixels are the SED grid itself."""
    weights: FloatArray
    """(n_band, n_ext) float64: ``f_ν [erg/s/cm²/Hz] = weights @ f_λ_ext [erg/s/cm²/Å]``."""
    coverage: FloatArray
    """(n_band,) float64: fraction of ∫ R λ dλ lying on the SED grid (2497–10487 Å)."""

    def __post_init__(self) -> None:
        n_band, n_ext = len(self.bands), self.wavelength.size
        if self.weights.shape != (n_band, n_ext) or self.coverage.shape != (n_band,):
            raise ValueError(f"weights {self.weights.shape} / coverage {self.coverage.shape} "
                             f"do not match {n_band} bands and {n_ext} pixels")
        for a in (self.wavelength, self.weights, self.coverage):
            a.setflags(write=False)

    @classmethod
    def from_bands(cls, bands: Sequence[PhotBand]) -> SyntheticPhotometry:
        """Build the map for ``bands`` (non-empty, distinct names)."""
        bands = tuple(bands)
        if not bands:
            raise ValueError("no bands given")
        names = [b.name for b in bands]
        if len(set(names)) != len(names):
            raise ValueError(f"band names repeat: {names}")
        edges = _extended_edges(max(b.wavelength[-1] for b in bands))
        rows, cov = zip(*(_band_row(b, edges, OUTPUT_GRID.n) for b in bands), strict=True)
        wavelength = np.sqrt(edges[:-1] * edges[1:])  # = start · exp(k Δlnλ), the pixel centres
        wavelength[:OUTPUT_GRID.n] = OUTPUT_GRID.wavelength
        return cls(bands=bands, wavelength=wavelength, n_grid=OUTPUT_GRID.n,
                   weights=np.vstack(rows), coverage=np.array(cov))

    @property
    def names(self) -> tuple[str, ...]:
        """Band names, in output order."""
        return tuple(b.name for b in self.bands)

    def usable(self, min_coverage: float = MIN_COVERAGE) -> NDArray[np.bool_]:
        """(n_band,) bool: True where ``coverage >= min_coverage``."""
        return np.asarray(self.coverage >= min_coverage)

    def extend(self, flam: ArrayLike) -> FloatArray:
        """Continue SEDs past the grid end as power laws in λ.

        Parameters
        ----------
        flam : (n, n_grid) or (n_grid,) float
            f_λ on the output grid, any unit.

        Returns
        -------
        (n, n_ext) or (n_ext,) float64
            The input, followed by ``exp(a + b ln λ)`` with (a, b) the least-squares line
            through (ln λ, ln f) of the positive finite pixels among the last
            :data:`EXTEND_FIT`; NaN in the extension where fewer than
            :data:`EXTEND_MIN_POINTS` of them are positive and finite (all-NaN rows stay NaN).
        """
        f = np.asarray(flam, dtype=np.float64)
        squeeze = f.ndim == 1
        f2 = np.atleast_2d(f)
        if f2.ndim != 2 or f2.shape[1] != self.n_grid:
            raise GridMismatchError("SEDs are not on the output grid",
                                    expected=f"(n, {self.n_grid})", found=f.shape)
        n_ext = self.wavelength.size
        if n_ext == self.n_grid:
            return f.copy()
        x = np.log(self.wavelength[self.n_grid - EXTEND_FIT:self.n_grid])
        tail = f2[:, -EXTEND_FIT:]
        good = np.isfinite(tail) & (tail > 0)
        y = np.log(np.where(good, tail, 1.0))
        cnt = good.sum(axis=1)
        safe = np.maximum(cnt, 1)
        xm = (good * x).sum(axis=1) / safe
        ym = (good * y).sum(axis=1) / safe
        dx = np.where(good, x - xm[:, None], 0.0)
        slope = (dx * (y - ym[:, None])).sum(axis=1) / np.maximum((dx**2).sum(axis=1), 1e-300)
        x_new = np.log(self.wavelength[self.n_grid:])
        with np.errstate(over="ignore"):
            ext = np.exp(ym[:, None] + slope[:, None] * (x_new[None, :] - xm[:, None]))
        ext[cnt < EXTEND_MIN_POINTS] = np.nan
        out = np.concatenate([f2, ext], axis=1)
        return out[0] if squeeze else out

    def fnu(self, flam_ext: ArrayLike) -> FloatArray:
        """Band-mean f_ν of SEDs on the extended grid.

        Parameters
        ----------
        flam_ext : (n, n_ext) or (n_ext,) float
            f_λ, erg/s/cm²/Å, on :attr:`wavelength`.

        Returns
        -------
        (n, n_band) or (n_band,) float64
            <f_ν>, erg/s/cm²/Hz; NaN for a band whose weights touch a non-finite pixel.
        """
        f = np.asarray(flam_ext, dtype=np.float64)
        n_ext = self.wavelength.size
        if f.ndim not in (1, 2) or f.shape[-1] != n_ext:
            raise GridMismatchError("SEDs are not on the extended photometry grid",
                                    expected=f"(n, {n_ext})", found=f.shape)
        bad = ~np.isfinite(f)
        out = np.where(bad, 0.0, f) @ self.weights.T
        touched = bad.astype(np.float64) @ (self.weights > 0).T.astype(np.float64)
        return np.where(touched > 0, np.nan, out)

    def ab_mags(self, flam: ArrayLike) -> FloatArray:
        """AB magnitudes of SEDs on the output grid.

        Parameters
        ----------
        flam : (n, n_grid) or (n_grid,) float
            f_λ, erg/s/cm²/Å, on the output grid.

        Returns
        -------
        (n, n_band) or (n_band,) float64
            −2.5 log10 <f_ν> − 48.60 after :meth:`extend`; NaN where <f_ν> ≤ 0 or is not
            finite, and for bands with coverage below :data:`MIN_COVERAGE`.
        """
        fnu = self.fnu(self.extend(flam))
        ok = np.isfinite(fnu) & (fnu > 0) & self.usable()
        with np.errstate(divide="ignore", invalid="ignore"):
            mags = -2.5 * np.log10(np.where(ok, fnu, 1.0)) - AB_ZERO
        return np.where(ok, mags, np.nan)
