"""Interpolation inside a model-atmosphere grid (CK04, BOSZ) in log flux.

A grid is a :class:`~csstflux.containers.SpectralLibrary` whose stars sit on the nodes of a
rectilinear (Teff, log g, [M/H]) lattice, some nodes missing (CK04 has no low-gravity hot models).
Spectra at arbitrary parameters come from trilinear interpolation of ln F between the eight
surrounding nodes, metallicity included; a point any of whose eight corners is missing cannot be
interpolated and is reported as such, never extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import SpectralLibrary

#: Floor applied to fluxes before taking logs (zero far-UV flux of cool models).
_TINY = 1e-300


@dataclass(frozen=True)
class GridInterpolator:
    """Trilinear ln-flux interpolator over a model grid's (Teff, log g, [M/H]) nodes."""

    wavelength: NDArray[np.float64]
    """(n_pix,) vacuum Å."""
    axes: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
    """Sorted node values of Teff, log g, [M/H]."""
    index: NDArray[np.int64]
    """(n_teff, n_logg, n_feh) row of each node in ``log_flux``, -1 where missing."""
    log_flux: NDArray[np.float64]
    """(n_model, n_pix) ln F (floored)."""
    zero: NDArray[np.bool_]
    """(n_model, n_pix) True where the model flux is zero (ln F meaningless)."""

    @classmethod
    def from_library(cls, lib: SpectralLibrary) -> GridInterpolator:
        axes = tuple(np.unique(np.round(v, 4)) for v in (lib.teff, lib.logg, lib.feh))
        index = -np.ones(tuple(a.size for a in axes), dtype=np.int64)
        pos = [np.searchsorted(a, np.round(v, 4)) for a, v in zip(axes, (lib.teff, lib.logg,
                                                                         lib.feh), strict=True)]
        index[pos[0], pos[1], pos[2]] = np.arange(lib.n_star)
        flux = np.where(lib.mask, 0.0, lib.flux)
        return cls(wavelength=lib.wavelength, axes=axes,  # type: ignore[arg-type]
                   index=index, log_flux=np.log(np.maximum(flux, _TINY)), zero=flux <= 0)

    def __call__(self, teff: NDArray[np.float64], logg: NDArray[np.float64],
                 feh: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_],
                                                    NDArray[np.bool_]]:
        """Interpolate.

        Returns ``flux`` (m, n_pix) (0 where not available), ``mask`` (m, n_pix) (True where a
        corner's flux is zero or the point cannot be interpolated) and ``ok`` (m,) (all eight
        corners exist and the point lies inside the grid).
        """
        pts = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (teff, logg, feh)]
        m = pts[0].size
        lo_idx, frac, inside = [], [], np.ones(m, bool)
        for a, v in zip(self.axes, pts, strict=True):
            i = np.clip(np.searchsorted(a, v, side="right") - 1, 0, max(a.size - 2, 0))
            inside &= (v >= a[0]) & (v <= a[-1])
            if a.size == 1:
                lo_idx.append(np.zeros(m, np.int64))
                frac.append(np.zeros(m))
                continue
            lo_idx.append(i)
            frac.append(np.clip((v - a[i]) / (a[i + 1] - a[i]), 0.0, 1.0))
        out = np.zeros((m, self.wavelength.size))
        mask = np.zeros((m, self.wavelength.size), bool)
        ok = inside.copy()
        for corner in range(8):
            bits = [(corner >> k) & 1 for k in range(3)]
            idx = [np.minimum(lo_idx[k] + bits[k], self.axes[k].size - 1) for k in range(3)]
            w = np.ones(m)
            for k in range(3):
                w *= frac[k] if bits[k] else (1.0 - frac[k])
            rows = self.index[idx[0], idx[1], idx[2]]
            # a corner of zero weight need not exist (point on a face or an edge)
            needed = w > 0
            ok &= ~needed | (rows >= 0)
            safe = np.where(rows >= 0, rows, 0)
            out += w[:, None] * self.log_flux[safe]
            mask |= needed[:, None] & self.zero[safe]
        flux = np.where(ok[:, None] & ~mask, np.exp(out), 0.0)
        mask |= ~ok[:, None]
        return flux, mask, ok
