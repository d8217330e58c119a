"""Effective temperature from a star's own R = 200 SED, for library stars whose inputs are emulated.

Why
---
A library without input-range spectra of its own (Pickles; NGSL where only the SED is used)
gets its LAMOST-like inputs from the emulator at the star's parameters. Parameters read off a
spectral type carry the scatter of the type–Teff calibration (a few hundred K within one
subtype, more for giants and for composite types), so the emulated input and the library SED
then describe two different stars, and the network is trained and tested on a pair that no
real star could give. Measured on the Pickles stars of 5000–9750 K with the spectral-type
Teff: the held-out rows' coverage of ±σ in GV was 0.37, against 0.70 for MILES, whose inputs
are the stars' own spectra.

What
----
:func:`fit_teff` takes the Teff at which the model-atmosphere SED (the shipped CK04 grid,
:class:`~csstflux.library.sed_grid.SedGrid`) at the star's log g and [Fe/H] best matches the
star's own SED shape over ``window`` (default 4000–9000 Å: the continuum slope that sets the
colours, and clear of the near-ultraviolet, where model atmospheres and libraries differ by
10–30 % at 3000 Å). The match is least squares in ln F with a free scale (the SEDs are
relative), on a logarithmic Teff grid refined by a parabola through the three best points.
The emulated input is then the one a star with that SED would show.

Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import OUTPUT_GRID
from csstflux.library.sed_grid import SedGrid, load_sed_grid

__all__ = ["TeffFit", "fit_teff", "FIT_WINDOW"]

FloatArray = NDArray[np.float64]

#: Wavelengths (Å) whose SED shape sets the fitted Teff.
FIT_WINDOW: tuple[float, float] = (4000.0, 9000.0)


@dataclass(frozen=True)
class TeffFit:
    """Result of :func:`fit_teff` (one value per star)."""

    teff: FloatArray
    """Best-fitting Teff, K; NaN where no grid SED could be compared."""
    rms: FloatArray
    """RMS of the ln F residual at the best Teff over the window (after the free scale)."""
    n_pixels: NDArray[np.int64]
    """Pixels compared."""


def fit_teff(sed: ArrayLike, mask: ArrayLike | None, logg: ArrayLike, feh: ArrayLike, *,
             grid: SedGrid | None = None, window: tuple[float, float] = FIT_WINDOW,
             teff_range: tuple[float, float] | None = None, n_teff: int = 301) -> TeffFit:
    """Teff of each SED (rows on :data:`~csstflux.grids.OUTPUT_GRID`) at fixed log g, [Fe/H].

    Parameters
    ----------
    sed : (n, 574) float
        Relative f_λ (any scale); pixels ≤ 0 or non-finite are left out.
    mask : (n, 574) bool or None
        True where a pixel is not usable.
    logg, feh : float or (n,) float
        Held fixed; moved onto the grid's nearest existing point where the grid lacks them.
    grid : SedGrid or None
        The shipped CK04 grid when None.
    window : (float, float)
        Wavelength range compared, Å.
    teff_range : (float, float) or None
        Teff searched, K; the grid's whole Teff axis when None.
    n_teff : int
        Logarithmically spaced trial temperatures before the parabolic refinement.

    Returns
    -------
    TeffFit
    """
    g = grid if grid is not None else load_sed_grid()
    f = np.atleast_2d(np.asarray(sed, np.float64))
    n = f.shape[0]
    bad = ~np.isfinite(f) | (f <= 0)
    if mask is not None:
        bad |= np.atleast_2d(np.asarray(mask, bool))
    w = OUTPUT_GRID.wavelength
    bad |= ((w < window[0]) | (w > window[1]))[None, :]
    lo, hi = teff_range if teff_range is not None else (float(g.teff[0]), float(g.teff[-1]))
    trial = np.geomspace(lo, hi, n_teff)
    lg = np.broadcast_to(np.asarray(logg, np.float64), (n,))
    fe = np.broadcast_to(np.asarray(feh, np.float64), (n,))
    ln_f = np.log(np.where(bad, 1.0, f))
    use = ~bad
    npix = use.sum(axis=1)
    cost = np.full((n, n_teff), np.inf)
    for i in range(n):
        if npix[i] < 3:
            continue
        pts = g.nearest_inside(trial, np.full(n_teff, lg[i]), np.full(n_teff, fe[i]))
        model, ok = g(trial, pts[:, 1], pts[:, 2])
        d = ln_f[i][None, use[i]] - np.log(model[:, use[i]])
        d -= d.mean(axis=1, keepdims=True)                  # the free scale
        c = np.mean(d ** 2, axis=1)
        cost[i] = np.where(ok & np.isfinite(c), c, np.inf)
    best = np.argmin(cost, axis=1)
    teff = np.full(n, np.nan)
    rms = np.full(n, np.nan)
    for i in range(n):
        k = best[i]
        if not np.isfinite(cost[i, k]):
            continue
        x = np.log(trial)
        t = x[k]
        if 0 < k < n_teff - 1 and np.all(np.isfinite(cost[i, k - 1:k + 2])):
            y0, y1, y2 = cost[i, k - 1:k + 2]
            den = y0 - 2 * y1 + y2
            if den > 0:
                t = x[k] + 0.5 * (y0 - y2) / den * (x[k + 1] - x[k])
        teff[i] = float(np.exp(t))
        rms[i] = float(np.sqrt(cost[i, k]))
    return TeffFit(teff=teff, rms=rms, n_pixels=npix.astype(np.int64))
