"""Continuum colour of a spectrum: the broad shape that continuum normalisation removes.

The network sees only continuum-normalised spectra, in which a B star and a metal-poor F star
can look alike (few metal lines, Balmer wings divided out). Their f_λ slopes across 4000–7000 Å
differ by a factor of two or more. The colour here is

    c = ln( median f_λ over COLOR_WINDOWS[0] / median f_λ over COLOR_WINDOWS[1] )

in the rest frame, on whatever wavelength sampling the spectrum has: medians over windows
hundreds of Å wide do not depend on resolution, so a LAMOST spectrum (R≈1800) and an R=200 SED
give the same number for the same star. Dust makes c smaller (redder); flux-calibration errors
move it either way.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import COLOR_WINDOWS
from csstflux.stats import nanmedian_rows

#: Fewest good pixels inside each window for a colour to be returned (else NaN).
MIN_WINDOW_PIXELS = 5


def continuum_color(wavelength: ArrayLike, flux: ArrayLike, mask: ArrayLike | None = None,
                    z: ArrayLike = 0.0) -> NDArray[np.float64]:
    """Colour ``c`` of each spectrum (see the module docstring).

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Observed-frame vacuum wavelengths, Å.
    flux : (n_pix,) or (n_spec, n_pix) float
        f_λ in any unit (only ratios are used).
    mask : same shape as ``flux``, bool, optional
        True = bad pixel; non-finite flux is masked too.
    z : float or (n_spec,) float
        Redshift removed before the windows are applied (NaN counts as 0).

    Returns
    -------
    (n_spec,) float64, or a 0-d array for one spectrum
        NaN where a window has fewer than :data:`MIN_WINDOW_PIXELS` good pixels or a
        non-positive median.
    """
    f = np.asarray(flux, dtype=np.float64)
    one = f.ndim == 1
    f = np.atleast_2d(f)
    w = np.broadcast_to(np.atleast_2d(np.asarray(wavelength, dtype=np.float64)), f.shape)
    bad = ~np.isfinite(f)
    if mask is not None:
        bad |= np.atleast_2d(np.asarray(mask, dtype=bool))
    zz = np.broadcast_to(np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0), (f.shape[0],))
    rest = w / (1.0 + zz[:, None])
    medians = []
    for lo, hi in COLOR_WINDOWS:
        inside = (rest >= lo) & (rest <= hi) & ~bad
        cols = np.flatnonzero(inside.any(axis=0))      # the window's columns in some row
        med = nanmedian_rows(f[:, cols], ~inside[:, cols])
        med[inside.sum(axis=1) < MIN_WINDOW_PIXELS] = np.nan
        medians.append(med)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.log(medians[0] / medians[1])
    c[~((medians[0] > 0) & (medians[1] > 0))] = np.nan
    return c[0] if one else c
