"""Format-independent checks of whether a spectrum as read can be used.

The pipeline flags a star (``Flag.COVERAGE``) and ``csstflux inspect`` lists the problems when
the good pixels of an input spectrum do not cover the range the model needs.
"""

from __future__ import annotations

import numpy as np

from csstflux.spectrum import Spectrum


def coverage_problems(spectrum: Spectrum, lo: float = 4000.0, hi: float = 7000.0,
                      min_good_fraction: float = 0.8) -> list[str]:
    """Human-readable reasons why ``spectrum`` does not cover ``lo``–``hi``; empty if it does.

    Parameters
    ----------
    spectrum
        The spectrum to check: ``wavelength`` (n_pix,) vacuum Å, ``mask`` (n_pix,) True = bad.
    lo, hi
        Vacuum wavelength range (Å) that the good pixels must span.
    min_good_fraction
        Smallest acceptable fraction of the pixels inside ``lo``–``hi`` that are good.

    Returns
    -------
    list of str
        One sentence per problem: no good pixel at all, good pixels starting above ``lo`` or
        ending below ``hi``, no pixel inside the range, or too small a fraction of good pixels
        inside it.
    """
    if not hi > lo:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    if not 0.0 <= min_good_fraction <= 1.0:
        raise ValueError(f"min_good_fraction must lie in [0, 1], got {min_good_fraction}")
    wave = np.asarray(spectrum.wavelength, dtype=np.float64)
    good = ~np.asarray(spectrum.mask, dtype=bool) & np.isfinite(wave)
    if not good.any():
        return ["no good pixels"]
    problems: list[str] = []
    w_good = wave[good]
    w_min, w_max = float(w_good.min()), float(w_good.max())
    if w_min > lo or w_max < hi:
        problems.append(f"good pixels span {w_min:.1f}-{w_max:.1f} A, "
                        f"not the whole of {lo:.1f}-{hi:.1f} A")
    inside = (wave >= lo) & (wave <= hi)
    n_inside = int(inside.sum())
    if n_inside == 0:
        problems.append(f"no pixels inside {lo:.1f}-{hi:.1f} A")
    else:
        frac = float(good[inside].sum()) / n_inside
        if frac < min_good_fraction:
            problems.append(f"only {100 * frac:.1f}% of the {n_inside} pixels in "
                            f"{lo:.1f}-{hi:.1f} A are good (need {100 * min_good_fraction:.0f}%)")
    return problems
