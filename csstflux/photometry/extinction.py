"""Interstellar extinction curves and reddening of SEDs.

``k(λ) = A(λ) / E(B−V) = R_V · A(λ)/A(V)`` from the R_V-dependent average curves of
``dust_extinction`` (Gordon 2024, JOSS 9, 7023):

* ``"F99"``: Fitzpatrick (1999, PASP 111, 63), valid for 1000–33 333 Å (x = 0.3–10 µm⁻¹)
  and R_V = 2.0–6.0;
* ``"G23"``: Gordon et al. (2023, ApJ 950, 86), valid for 912–320 000 Å
  (x = 0.0313–10.96 µm⁻¹) and R_V = 2.3–5.6.

The ranges are read from the ``dust_extinction`` classes themselves. The curves are defined on
vacuum wavelengths and the monochromatic points used here differ slightly from the broad-band
Johnson definition of E(B−V): for F99 at R_V = 3.1, k(4400 Å) − k(5500 Å) = 1.028 and
k(5500 Å) = 3.031; for G23, 0.998 and 3.095.
"""

from __future__ import annotations

import difflib

import astropy.units as u
import numpy as np
from dust_extinction.parameter_averages import F99, G23
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import ConfigError

__all__ = ["LAWS", "extinction_k", "law_ranges", "redden"]

#: Extinction laws :func:`extinction_k` knows.
LAWS: tuple[str, ...] = ("F99", "G23")
_CLASSES = {"F99": F99, "G23": G23}


def law_ranges(law: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Valid ranges of ``law``: ((λ_min, λ_max) in vacuum Å, (R_V min, R_V max))."""
    cls = _CLASSES[_law_name(law)]
    x_lo, x_hi = (float(v) for v in cls.x_range)
    rv_lo, rv_hi = (float(v) for v in cls.Rv_range)
    return (1e4 / x_hi, 1e4 / x_lo), (rv_lo, rv_hi)


def _law_name(law: str) -> str:
    by_upper = {k.upper(): k for k in LAWS}
    if law.upper() in by_upper:
        return by_upper[law.upper()]
    near = difflib.get_close_matches(law.upper(), list(by_upper), n=1, cutoff=0.0)
    hint = f"; did you mean {by_upper[near[0]]!r}?" if near else ""
    raise ConfigError(f"unknown extinction law {law!r}{hint}", expected=f"one of {LAWS}",
                      found=law)


def extinction_k(wavelength: ArrayLike, law: str = "F99", rv: float = 3.1) -> NDArray[np.float64]:
    """Extinction per unit colour excess, k(λ) = A(λ)/E(B−V).

    Parameters
    ----------
    wavelength : float array, any shape
        Vacuum wavelengths, Å, inside the law's valid range (see the module docstring).
    law : str
        One of :data:`LAWS` (case-insensitive).
    rv : float
        R_V = A(V)/E(B−V), inside the law's valid range.

    Returns
    -------
    float64 array, shape of ``wavelength``
        k(λ) = R_V · A(λ)/A(V), magnitudes per magnitude of E(B−V).

    Raises
    ------
    ConfigError
        Unknown law (the message suggests the nearest) or R_V outside its range.
    ValueError
        A wavelength non-finite or outside the law's range.
    """
    name = _law_name(law)
    (lam_lo, lam_hi), (rv_lo, rv_hi) = law_ranges(name)
    if not (np.isfinite(rv) and rv_lo <= rv <= rv_hi):
        raise ConfigError(f"R_V = {rv} is outside the valid range of {name}",
                          expected=f"{rv_lo:g} <= R_V <= {rv_hi:g}", found=rv)
    lam = np.asarray(wavelength, dtype=np.float64)
    if lam.size == 0:
        return lam.copy()
    if not np.all(np.isfinite(lam)):
        raise ValueError(f"non-finite wavelength: outside the valid range of {name}")
    if lam.min() < lam_lo or lam.max() > lam_hi:
        raise ValueError(f"wavelengths {lam.min():.1f}–{lam.max():.1f} Å are outside the valid "
                         f"range of {name}, {lam_lo:.1f}–{lam_hi:.1f} Å")
    model = _CLASSES[name](Rv=rv)
    a_av = np.asarray(model(lam.ravel() * u.AA), dtype=np.float64)
    return (rv * a_av).reshape(lam.shape)


def redden(flam: ArrayLike, ebv: ArrayLike, k: ArrayLike) -> NDArray[np.float64]:
    """Apply extinction to SEDs: ``flam * 10**(-0.4 · E(B−V) · k)``.

    Parameters
    ----------
    flam : (n, p) or (p,) float
        f_λ, any unit.
    ebv : (n,) float or scalar
        Colour excess E(B−V) per SED, mag (negative values de-redden).
    k : (p,) float
        k(λ) = A(λ)/E(B−V) at the SED's pixels (:func:`extinction_k`).

    Returns
    -------
    float64 array, shape of ``flam``
        Reddened f_λ, same unit.
    """
    f = np.asarray(flam, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    e = np.asarray(ebv, dtype=np.float64)
    if f.ndim not in (1, 2) or kk.shape != (f.shape[-1],):
        raise ValueError(f"flam {f.shape} and k {kk.shape} must be (n, p) or (p,) and (p,)")
    if f.ndim == 1:
        if e.ndim != 0:
            raise ValueError(f"one SED needs a scalar ebv, got shape {e.shape}")
        return f * 10.0 ** (-0.4 * e * kk)
    if e.ndim == 0:
        e = np.full(f.shape[0], float(e))
    if e.shape != (f.shape[0],):
        raise ValueError(f"ebv has shape {e.shape}, expected ({f.shape[0]},)")
    return f * 10.0 ** (-0.4 * e[:, None] * kk[None, :])
