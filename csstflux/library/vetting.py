"""Library vetting (paper, Appendix B): reject stars a GP from parameters cannot reproduce.

A star is kept when it passes the quality cuts (parameters known, Teff inside the domain, and any
library-specific limits such as E(B−V) or parameter errors) and when its SED, predicted by the
shared-kernel GP from its parameters alone, agrees with its own SED to an RMSAE below the cut
(default 0.05, the paper's MILES value). The GP prediction for each star is its exact
leave-one-out prediction, so a star never vouches for itself. Outliers inflate the GP's noise
term, so the fit is repeated on the kept stars until the kept set no longer changes (at most a
few passes); rejected stars are then judged by the GP of the kept stars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import TEFF_DOMAIN
from csstflux.library.gpr import GPHyperparameters, fit_gp

Array = NDArray[np.float64]


@dataclass(frozen=True)
class VettingResult:
    """Outcome per star: ``kept`` (n,), ``reason`` (n,) ('' when kept), ``rmsae`` (n,) (NaN when
    not evaluated), the final GP hyperparameters and the pixels the GP used."""

    kept: NDArray[np.bool_]
    reason: NDArray[np.str_]
    rmsae: Array
    hyper: GPHyperparameters
    pixels_used: NDArray[np.bool_]
    passes: int
    cuts: dict[str, object] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


def quality_cuts(teff: Array, logg: Array, feh: Array, *,
                 teff_range: tuple[float, float] | None = TEFF_DOMAIN,
                 limits: Mapping[str, tuple[Array, float | None, float | None]] | None = None,
                 ) -> NDArray[np.str_]:
    """Reason each star fails the §2.2 quality cuts ('' when it passes), shape (n,).

    ``limits`` maps a column name to (values (n,), lower or None, upper or None); a NaN value
    fails its limit (the library does not say, so the star cannot be shown to pass).
    """
    n = len(teff)
    reason = np.full(n, "", dtype=object)
    params = np.stack([teff, logg, feh], axis=1)
    missing = ~np.all(np.isfinite(params), axis=1)
    reason[missing] = "missing Teff, log g or [Fe/H]"
    if teff_range is not None:
        lo, hi = teff_range
        out = ~missing & ((teff < lo) | (teff > hi))
        reason[out] = f"Teff outside {lo:g}-{hi:g} K"
    for name, (values, lo_v, hi_v) in (limits or {}).items():
        v = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(v)
        if lo_v is not None:
            bad |= v <= lo_v
        if hi_v is not None:
            bad |= v >= hi_v
        lo_s = "" if lo_v is None else f"{lo_v:g} < "
        hi_s = "" if hi_v is None else f" < {hi_v:g}"
        rng = f"{lo_s}{name}{hi_s}"
        reason[(reason == "") & bad] = f"fails {rng}"
    return reason.astype(str)


def vet(teff: Array, logg: Array, feh: Array, sed: Array, mask: NDArray[np.bool_] | None = None,
        *, rmsae_cut: float = 0.05, teff_range: tuple[float, float] | None = TEFF_DOMAIN,
        limits: Mapping[str, tuple[Array, float | None, float | None]] | None = None,
        min_pixel_fraction: float = 0.95, max_passes: int = 4, seed: int = 0) -> VettingResult:
    """Vet a library.

    Parameters
    ----------
    teff, logg, feh : (n,) float
        Stellar parameters (K, dex, dex); NaN where unknown.
    sed : (n, p) float
        Scaled SEDs (e.g. on the 574-pixel output grid).
    mask : (n, p) bool, optional
        True where an SED pixel is bad. The GP uses the pixels good in every candidate star;
        a candidate good over fewer than ``min_pixel_fraction`` of the pixels that most stars
        cover is rejected for coverage.
    rmsae_cut : float
        Stars whose leave-one-out RMSAE exceeds this are rejected.
    """
    sed = np.asarray(sed, dtype=np.float64)
    n, p = sed.shape
    mask = np.zeros((n, p), bool) if mask is None else np.asarray(mask, bool)
    mask = mask | ~np.isfinite(sed) | (sed <= 0)
    reason = quality_cuts(np.asarray(teff, float), np.asarray(logg, float),
                          np.asarray(feh, float), teff_range=teff_range,
                          limits=limits).astype(object)
    cand = reason == ""
    # pixels most candidates cover; candidates missing too many of them are dropped
    common = np.mean(~mask[cand], axis=0) >= 0.5 if cand.any() else np.zeros(p, bool)
    frac = np.sum(~mask[:, common], axis=1) / max(int(common.sum()), 1)
    short = cand & (frac < min_pixel_fraction)
    reason[short] = "SED does not cover the common wavelength range"
    cand &= ~short
    if cand.sum() < 5:
        raise ValueError(f"only {int(cand.sum())} stars pass the quality cuts; need at least 5")
    pix = common & np.all(~mask[cand], axis=0)
    x = np.stack([teff, logg, feh], axis=1).astype(np.float64)
    y = sed[:, pix]
    kept = cand.copy()
    rmsae = np.full(n, np.nan)
    gp = None
    passes = 0
    while passes < max_passes:
        passes += 1
        gp = fit_gp(x[kept], y[kept], seed=seed, restarts=1)
        loo = np.full((n, int(pix.sum())), np.nan)
        loo[kept] = gp.loo_residuals()
        pred = np.full_like(y, np.nan)
        pred[kept] = y[kept] - loo[kept]
        others = cand & ~kept
        if others.any():
            pred[others] = gp.predict(x[others])[0]
        rel = (pred - y) / y
        rmsae = np.where(cand, np.sqrt(np.mean(rel**2, axis=1)), np.nan)
        new_kept = cand & (rmsae <= rmsae_cut)
        if np.array_equal(new_kept, kept) or new_kept.sum() < 5:
            break
        kept = new_kept
    kept = cand & (rmsae <= rmsae_cut)
    reason[cand & ~kept] = f"GP RMSAE above {rmsae_cut:g}"
    assert gp is not None
    return VettingResult(kept=kept, reason=reason.astype(str), rmsae=rmsae, hyper=gp.hyper,
                         pixels_used=pix, passes=passes,
                         cuts={"rmsae_cut": rmsae_cut, "teff_range": teff_range,
                               "limits": {k: [v[1], v[2]] for k, v in (limits or {}).items()}})
