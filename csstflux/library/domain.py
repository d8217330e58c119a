"""The spectrum speaks for itself: stellar parameters and a novelty score from the input alone.

A catalogue Teff is not always there (a header scan has none), and a network trained on
5000–9750 K stars returns a confident SED for any input. The domain model answers two questions
from the normalised input spectrum (and its continuum colour) alone:

1. **What star is this?** A data-driven generative model in the manner of *The Cannon* (Ness et
   al. 2015): every input pixel is a low-order polynomial in the scaled labels
   ``a = (log10 Teff − a0)/s0``, ``b = (log g − b0)/s1``, ``c = ([Fe/H] − c0)/s2`` — all terms
   up to second order plus ``a³, a²b, a²c`` (13 terms), fitted by weighted least squares on the
   training rows, with a per-pixel intrinsic scatter measured on the real (empirical-input)
   rows. The continuum colour (:mod:`csstflux.spectra.color`) has a polynomial of its own.
   A spectrum's labels are the Levenberg–Marquardt best fit, started from the best of a grid of
   starting points that reaches well outside the training range (about 3000–14000 K), so that
   the cubic in log Teff can carry a K giant below 5000 K. Label errors are the inverse-Fisher
   errors, inflated by √χ²_red when the fit is poor, multiplied by a factor per label and
   added in quadrature to a systematic term per label; factor and term are measured on
   held-out stars so that the label z-scores spread by 1 at low and at high S/N alike.
2. **Is it like the training inputs?** Two novelty numbers: ``chi2``, the reduced χ² of the
   best fit with the input errors and the intrinsic scatter, each pixel's contribution capped
   at ``chi2_cap``² (a hard cap at |z| = 4, see below), and ``color_z``, how much bluer
   the spectrum is than the model's colour at the fitted labels, in units of the colour
   scatter. The colour test is one-sided because dust only makes a star redder: a hot B star
   whose normalised lines mimic a metal-poor F star (the continuum normalisation divides out
   its Balmer wings) is far bluer than any F star could be, while a reddened in-domain star is
   not penalised. The thresholds are chosen on held-out rows and stored with the model
   (:func:`calibrate_thresholds`: noise drawn as training draws it, χ² of real stars that the
   model scoring them never fitted).

Robust χ². A cosmic ray, a sky residual or the edge of a masked run gives a handful of
pixels tens of σ off; with plain χ² five pixels at 30σ add 4500 / 2238 ≈ 2 to the reduced
χ² and flag an in-domain star. Each pixel's z² is therefore capped at ``chi2_cap``² = 16: a
hard cap rather than a Huber loss, because Huber still grows linearly (five 30σ pixels would
add (2·4·30 − 16)·5 / 2238 ≈ 0.5, several times the ≈ 0.1 margin of the low-S/N thresholds),
while the cap bounds what any one pixel can add (16 / 2238 ≈ 0.007; five pixels 0.036). A
spectrum of a different star is still caught: its mismatch spreads over hundreds of pixels,
each of which counts up to the cap (every MILES star below 4000 K still exceeds the
threshold on χ² alone). The price: a single unfamiliar feature a few pixels wide (one narrow
emission or absorption line) now counts like an artefact. The labels are refitted without
the pixels beyond the cap (one reweighting step, from the grid of starts again), so that the
same few pixels do not pull the labels either. The same statistic is used in
:meth:`DomainModel.estimate` and, through it, in the calibration; the cap is stored with the
thresholds (:attr:`DomainModel.chi2_cap`).

The colour enters the label fit as well (one-sided): at low S/N it is what places an A star
(a LAMOST A2 star at S/N 9 comes out at 8940 K with it and 7540 K from its lines alone). A
colour offset therefore moves the labels towards it, and ``color_z`` is judged at labels that
already absorbed part of it.

The pipeline flags ``OUTSIDE_DOMAIN`` when no catalogue Teff exists and the estimated Teff is
not inside :data:`~csstflux.grids.TEFF_DOMAIN` by ``teff_margin`` times its error (1σ for the
shipped model), and ``OUT_OF_DISTRIBUTION`` when either novelty number exceeds its threshold.
Pure numpy; the fitted product is a few tens of kB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import GridMismatchError
from csstflux.grids import COLOR_WINDOWS, INPUT_GRID, TEFF_DOMAIN, TRAIN_SNRS
from csstflux.io.stores.arrays import load_input_product, save_input_product
from csstflux.spectra.noise import NoiseConfig, draw_mixed_noise

FloatArray = NDArray[np.float64]

#: Label scaling (offset, scale) of (log10 Teff, log g, [Fe/H]).
LABEL_OFFSET = np.array([np.log10(7000.0), 3.5, -0.3])
LABEL_SCALE = np.array([0.1, 1.0, 0.5])
#: Number of polynomial terms of :func:`design`.
N_TERMS = 13
#: Scaled-label box the fit may explore: Teff ≈ 2200–22000 K, log g −1…6.5, [Fe/H] −5…+2.
LABEL_BOUNDS = np.array([[-5.0, -4.5, -9.4], [5.0, 3.0, 4.6]])
#: Starting points of the fit (scaled labels): Teff ≈ 3100–13900 K × giant/dwarf × two [Fe/H].
_STARTS = np.array([[a, b, c] for a in np.linspace(-3.5, 3.0, 14) for b in (-1.5, 0.8)
                    for c in (0.0, -2.4)])
#: Allowance (ln units) added in quadrature to the colour scatter of library stars for the
#: relative flux-calibration errors of survey spectra (a few per cent across 4000–7000 Å).
FLUX_CALIBRATION_SCATTER = 0.05
#: Gauss–Newton iterations (the fit converges in ~5 from the grid's best start).
N_ITER = 12
#: Default cap of one pixel's |z| in ``chi2`` (module docstring, "Robust χ²").
CHI2_CAP = 4.0
#: Weight of the fill value of a masked input pixel (predictor convention: flux 1, error 1).
_MASKED_ERR = 1.0


def scale_labels(teff: ArrayLike, logg: ArrayLike, feh: ArrayLike) -> FloatArray:
    """(n, 3) scaled labels from Teff (K), log g and [Fe/H]."""
    lab = np.stack([np.log10(np.asarray(teff, np.float64)), np.asarray(logg, np.float64),
                    np.asarray(feh, np.float64)], axis=-1)
    return np.asarray((lab - LABEL_OFFSET) / LABEL_SCALE)


def design(lab: FloatArray) -> FloatArray:
    """(n, 13) polynomial terms of scaled labels (n, 3)."""
    a, b, c = np.asarray(lab, np.float64).T
    return np.stack([np.ones_like(a), a, b, c, a * a, b * b, c * c, a * b, a * c, b * c,
                     a ** 3, a * a * b, a * a * c], axis=1)


def design_jacobian(lab: FloatArray) -> FloatArray:
    """(n, 13, 3) derivatives of :func:`design` with respect to the scaled labels."""
    a, b, c = np.asarray(lab, np.float64).T
    z, o = np.zeros_like(a), np.ones_like(a)
    da = [z, o, z, z, 2 * a, z, z, b, c, z, 3 * a * a, 2 * a * b, 2 * a * c]
    db = [z, z, o, z, z, 2 * b, z, a, z, c, z, a * a, z]
    dc = [z, z, z, o, z, z, 2 * c, z, a, b, z, z, a * a]
    return np.stack([np.stack(da, 1), np.stack(db, 1), np.stack(dc, 1)], axis=2)


@dataclass(frozen=True)
class DomainEstimate:
    """Per-spectrum labels and novelty numbers, all (n,) float64."""

    teff: FloatArray
    """Estimated Teff, K."""
    teff_err: FloatArray
    logg: FloatArray
    logg_err: FloatArray
    feh: FloatArray
    feh_err: FloatArray
    chi2: FloatArray
    """Reduced χ² of the best fit, each pixel's z² capped at ``chi2_cap``² (≈1 for inputs
    like the training rows)."""
    snr: FloatArray
    """Median |flux| / error over the good input pixels."""
    color_z: FloatArray
    """(observed − model colour) / colour scatter at the fitted labels; NaN without colour."""

    def as_dict(self) -> dict[str, FloatArray]:
        return {k: getattr(self, k) for k in _EST_FIELDS}

    @staticmethod
    def concatenate(parts: Sequence[DomainEstimate]) -> DomainEstimate:
        """The estimates of ``parts``, one after the other."""
        return DomainEstimate(**{f: np.concatenate([getattr(e, f) for e in parts])
                                 for f in _EST_FIELDS})


@dataclass(frozen=True)
class DomainModel:
    """The fitted generative model and its thresholds (see the module docstring)."""

    coeffs: FloatArray
    """(13, 2238) polynomial coefficients per input pixel."""
    scatter: FloatArray
    """(2238,) intrinsic scatter per input pixel (normalised flux)."""
    color_coeffs: FloatArray
    """(13,) polynomial coefficients of the continuum colour."""
    color_scatter: float
    """Scatter of the colour about its polynomial on real stars (ln units)."""
    label_min: FloatArray
    """(3,) smallest Teff (K), log g, [Fe/H] of the training rows."""
    label_max: FloatArray
    """(3,) largest Teff (K), log g, [Fe/H] of the training rows."""
    systematic: FloatArray = field(default_factory=lambda: np.zeros(3))
    """(3,) systematic errors added in quadrature: log10 Teff (dex), log g, [Fe/H]."""
    stat_scale: FloatArray = field(default_factory=lambda: np.ones(3))
    """(3,) factors on the statistical (inverse-Fisher) errors of log10 Teff, log g, [Fe/H]
    before the systematic term is added (:func:`error_model_for_unit_z`; 1 in a file
    written before they existed)."""
    chi2_snr: FloatArray = field(default_factory=lambda: np.array([1.0]))
    """(k,) S/N nodes of the χ² threshold (median |flux|/error of the input)."""
    chi2_threshold: FloatArray = field(default_factory=lambda: np.array([np.inf]))
    """(k,) ``chi2`` above which a spectrum is OUT_OF_DISTRIBUTION, at ``chi2_snr``
    (interpolated in log S/N, constant beyond the end nodes): at low S/N noise dilutes the
    mismatch of an unfamiliar spectrum, so one threshold for all S/N would be too loose there
    or too tight at high S/N."""
    color_z_threshold: float = np.inf
    """``color_z`` above which a spectrum is OUT_OF_DISTRIBUTION (bluer than possible)."""
    teff_margin: float = 0.0
    """OUTSIDE_DOMAIN when Teff ∓ ``teff_margin`` × its error leaves the domain: 0 flags on
    the point estimate, 1 flags every star not inside at 1σ."""
    chi2_cap: float = CHI2_CAP
    """Largest |z| one pixel counts with in ``chi2`` (module docstring, "Robust χ²"); the
    thresholds are only valid for the cap they were calibrated with, so it is stored with
    them (a file written before the cap existed loads with ∞, its plain χ²)."""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coeffs.shape != (N_TERMS, INPUT_GRID.n) or self.scatter.shape != (INPUT_GRID.n,):
            raise ValueError("domain model is not on the model input grid")
        if not self.chi2_cap > 0:
            raise ValueError(f"chi2_cap must be positive, got {self.chi2_cap}")

    # -- inference ---------------------------------------------------------------------------
    def estimate(self, flux: ArrayLike, err: ArrayLike, mask: ArrayLike | None = None,
                 color: ArrayLike | None = None) -> DomainEstimate:
        """Labels and novelty numbers of normalised input spectra.

        Parameters
        ----------
        flux, err : (n, 2238) float
            Normalised input spectra on :data:`~csstflux.grids.INPUT_GRID` and their 1σ errors
            (the model's inputs; masked pixels may hold the predictor's fill, flux 1 error 1).
        mask : (n, 2238) bool, optional
            True = bad pixel. Pixels whose error is ≥ 1 (the fill) or not finite are ignored
            in any case.
        color : (n,) float, optional
            Continuum colours (:func:`csstflux.spectra.color.continuum_color`); NaN or None:
            no colour term and ``color_z`` NaN.

        A row with no usable pixel gets NaN labels, errors and χ². Pixels whose |z| at the
        first fit exceeds ``chi2_cap`` are left out of a second fit (module docstring) and
        count ``chi2_cap``² each in ``chi2``.
        """
        y = np.atleast_2d(np.asarray(flux, np.float64))
        e = np.atleast_2d(np.asarray(err, np.float64))
        if y.shape[1] != INPUT_GRID.n or e.shape != y.shape:
            raise ValueError(f"expected (n, {INPUT_GRID.n}) flux and error arrays, got "
                             f"{y.shape} and {e.shape}")
        bad = ~(np.isfinite(y) & (e > 0) & (e < _MASKED_ERR))      # NaN errors fail both
        if mask is not None:
            bad |= np.atleast_2d(np.asarray(mask, bool))
        y = np.where(bad, 0.0, y)
        e = np.where(bad, 1.0, e)
        ivar = 1.0 / (e * e + self.scatter ** 2)
        ivar[bad] = 0.0
        n_good = np.maximum((~bad).sum(axis=1), 1)
        snr = _row_median(np.abs(y) / e, bad)
        c_obs = (np.full(len(y), np.nan) if color is None
                 else np.broadcast_to(np.asarray(color, np.float64), (len(y),)).copy())
        has_c = np.isfinite(c_obs)
        c_obs = np.where(has_c, c_obs, 0.0)
        civar = np.where(has_c, 1.0 / self.color_scatter ** 2, 0.0)
        none = np.asarray(bad.all(axis=1), dtype=bool)
        stats = self._stats(y, ivar, c_obs, civar)
        lab = stats.fit(stats.best_start(), N_ITER)
        fisher, _ = stats.normal_equations(lab)
        # robust step: leave out the pixels beyond the cap and fit again, from the grid of
        # starts (a few wild pixels can hold the first fit in another local minimum)
        cap2 = self.chi2_cap ** 2
        z2 = self._z2(y, ivar, lab)
        redo = np.flatnonzero((z2 > cap2).any(axis=1) & ~none)
        if redo.size:
            keep_ivar = np.where(z2[redo] > cap2, 0.0, ivar[redo])
            sub = self._stats(y[redo], keep_ivar, c_obs[redo], civar[redo])
            lab[redo] = sub.fit(sub.best_start(), N_ITER)
            fisher[redo] = sub.normal_equations(lab[redo])[0]
            z2[redo] = self._z2(y[redo], ivar[redo], lab[redo])
        d = design(lab)
        chi2 = np.minimum(z2, cap2).sum(axis=1) / n_good
        cov = np.linalg.pinv(fisher + 1e-9 * np.eye(3))
        stat = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        stat *= np.sqrt(np.maximum(chi2, 1.0))[:, None]
        sig = np.sqrt((stat * self.stat_scale) ** 2
                      + (self.systematic / LABEL_SCALE) ** 2) * LABEL_SCALE
        labels = np.where(none[:, None], np.nan, lab * LABEL_SCALE + LABEL_OFFSET)
        sig = np.where(none[:, None], np.nan, sig)
        teff = 10.0 ** labels[:, 0]
        rc = c_obs - d @ self.color_coeffs
        color_z = np.where(has_c, rc / self.color_scatter, np.nan)
        return DomainEstimate(teff=teff, teff_err=teff * np.log(10.0) * sig[:, 0],
                              logg=labels[:, 1], logg_err=sig[:, 1], feh=labels[:, 2],
                              feh_err=sig[:, 2], chi2=np.where(none, np.nan, chi2),
                              snr=snr, color_z=color_z)

    def _stats(self, y: FloatArray, ivar: FloatArray, c_obs: FloatArray, civar: FloatArray
               ) -> _FitStats:
        """Sufficient statistics of the label fit. The model is linear in the 13 design
        terms, so χ², its gradient and the Fisher matrix need only these per-spectrum sums
        over pixels: s0 = Σ w y², h = C (w y), G = C diag(w) Cᵀ (C: the 13 × 2238
        coefficients)."""
        return _FitStats(s0=(ivar * y * y).sum(1), h=(ivar * y) @ self.coeffs.T,
                         g=(ivar @ self._coeff_products()).reshape(-1, N_TERMS, N_TERMS),
                         c_obs=c_obs, civar=civar, color_coeffs=self.color_coeffs)

    def _z2(self, y: FloatArray, ivar: FloatArray, lab: FloatArray) -> FloatArray:
        """(n, 2238) squared normalised residuals w (y − model)² at labels ``lab``."""
        return np.asarray(ivar * (y - design(lab) @ self.coeffs) ** 2)

    def _coeff_products(self) -> FloatArray:
        """(2238, 169) products C[k1, p] C[k2, p] (cached on first use)."""
        cached = self.__dict__.get("_cc")
        if cached is None:
            cached = (self.coeffs[:, None, :] * self.coeffs[None, :, :]).reshape(
                N_TERMS * N_TERMS, -1).T.copy()
            object.__setattr__(self, "_cc", cached)
        return np.asarray(cached)

    def flags(self, est: DomainEstimate) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """(outside_domain, out_of_distribution) from an estimate.

        ``outside_domain``: the estimated Teff lies outside :data:`TEFF_DOMAIN`.
        ``out_of_distribution``: ``chi2`` or ``color_z`` above its threshold (a NaN colour
        does not count); spectra with no usable pixel (NaN χ²) are flagged too.
        """
        k = self.teff_margin * est.teff_err
        outside = (est.teff - k < TEFF_DOMAIN[0]) | (est.teff + k > TEFF_DOMAIN[1])
        with np.errstate(invalid="ignore"):
            ood = ~(est.chi2 <= self.chi2_limit(est.snr)) | (est.color_z > self.color_z_threshold)
        return np.asarray(outside), np.asarray(ood)

    def chi2_limit(self, snr: ArrayLike) -> FloatArray:
        """The χ² threshold at S/N ``snr`` (see :attr:`chi2_threshold`)."""
        lsnr = np.log(np.clip(np.nan_to_num(np.asarray(snr, np.float64), nan=1.0), 1e-3, None))
        return np.asarray(np.interp(lsnr, np.log(self.chi2_snr), self.chi2_threshold))

    # -- storage -----------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, Any]:
        return {"coeffs": self.coeffs.astype(np.float32),
                "scatter": self.scatter.astype(np.float32),
                "color_coeffs": self.color_coeffs, "color_scatter": np.array(self.color_scatter),
                "label_min": self.label_min, "label_max": self.label_max,
                "systematic": self.systematic, "stat_scale": self.stat_scale,
                "chi2_snr": self.chi2_snr,
                "chi2_threshold": self.chi2_threshold,
                "color_z_threshold": np.array(self.color_z_threshold),
                "teff_margin": np.array(self.teff_margin), "chi2_cap": np.array(self.chi2_cap)}

    @classmethod
    def from_arrays(cls, a: dict[str, Any], provenance: dict[str, Any] | None = None
                    ) -> DomainModel:
        return cls(coeffs=np.asarray(a["coeffs"], np.float64),
                   scatter=np.asarray(a["scatter"], np.float64),
                   color_coeffs=np.asarray(a["color_coeffs"], np.float64),
                   color_scatter=float(a["color_scatter"]),
                   label_min=np.asarray(a["label_min"], np.float64),
                   label_max=np.asarray(a["label_max"], np.float64),
                   systematic=np.asarray(a["systematic"], np.float64),
                   stat_scale=np.asarray(a.get("stat_scale", np.ones(3)), np.float64),
                   chi2_snr=np.atleast_1d(np.asarray(a["chi2_snr"], np.float64)),
                   chi2_threshold=np.atleast_1d(np.asarray(a["chi2_threshold"], np.float64)),
                   color_z_threshold=float(a["color_z_threshold"]),
                   teff_margin=float(a["teff_margin"]),
                   chi2_cap=float(a.get("chi2_cap", np.inf)),
                   provenance=dict(provenance or {}))

    def describe(self) -> dict[str, Any]:
        """What a store records about the model that flagged its stars."""
        return {"chi2_snr": self.chi2_snr.tolist(),
                "chi2_threshold": self.chi2_threshold.tolist(),
                "color_z_threshold": self.color_z_threshold, "teff_margin": self.teff_margin,
                "chi2_cap": self.chi2_cap, "color_windows": [list(w) for w in COLOR_WINDOWS],
                "teff_domain": list(TEFF_DOMAIN),
                **{k: self.provenance.get(k) for k in ("sha256", "trainset", "created",
                                                       "n_train", "holdout")}}


@dataclass(frozen=True)
class _FitStats:
    """Per-spectrum sufficient statistics of the label fit (see :meth:`DomainModel.estimate`)."""

    s0: FloatArray
    """(n,) Σ w y²."""
    h: FloatArray
    """(n, 13) C (w y)."""
    g: FloatArray
    """(n, 13, 13) C diag(w) Cᵀ."""
    c_obs: FloatArray
    civar: FloatArray
    """(n,) colour inverse variance (0 without a colour)."""
    color_coeffs: FloatArray

    def line_chi2(self, d: FloatArray) -> FloatArray:
        """Σ w (y − d C)² for design rows ``d`` (n, 13)."""
        return np.asarray(self.s0 - 2.0 * (self.h * d).sum(1)
                          + (_outer(d, d) * self.g.reshape(len(d), -1)).sum(1))

    def color_residual(self, d: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(residual, active weight): only a colour bluer than the model counts (dust)."""
        r = self.c_obs - d @ self.color_coeffs
        return r, self.civar * (r > 0)

    def cost(self, lab: FloatArray) -> FloatArray:
        d = design(lab)
        r, w = self.color_residual(d)
        return self.line_chi2(d) + w * r * r

    def normal_equations(self, lab: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Gauss–Newton (n, 3, 3) matrix and (n, 3) right-hand side at ``lab``."""
        d = design(lab)
        dd = design_jacobian(lab)                                   # (n, 13, 3)
        gdd = self.g @ dd                                           # (n, 13, 3)
        a = np.swapaxes(dd, 1, 2) @ gdd
        b = (dd * (self.h - (self.g @ d[:, :, None])[:, :, 0])[:, :, None]).sum(1)
        r, w = self.color_residual(d)
        cj = (dd * self.color_coeffs[None, :, None]).sum(1)
        a += w[:, None, None] * cj[:, :, None] * cj[:, None, :]
        b += (w * r)[:, None] * cj
        return a, b

    def best_start(self) -> FloatArray:
        """(n, 3) the start of :data:`_STARTS` with the lowest cost, per spectrum."""
        d0 = design(_STARTS)                                          # (k, 13)
        chi0 = (self.s0[:, None] - 2.0 * self.h @ d0.T
                + self.g.reshape(len(self.g), -1) @ _outer(d0, d0).T)
        rc0 = self.c_obs[:, None] - (d0 @ self.color_coeffs)[None, :]
        chi0 += self.civar[:, None] * np.maximum(rc0, 0.0) ** 2
        return np.asarray(_STARTS[np.argmin(chi0, axis=1)].copy())

    def fit(self, lab: FloatArray, n_iter: int) -> FloatArray:
        """``n_iter`` Levenberg–Marquardt steps from ``lab`` (n, 3)."""
        lam = np.full(len(lab), 1e-3)
        for _ in range(n_iter):
            lab, lam = self.step(lab, lam)
        return lab

    def step(self, lab: FloatArray, lam: FloatArray) -> tuple[FloatArray, FloatArray]:
        """One Levenberg–Marquardt step per spectrum (kept only where it lowers the cost)."""
        a, b = self.normal_equations(lab)
        diag = np.einsum("njj->nj", a)
        damped = a + (lam[:, None] * np.maximum(diag, 1e-9))[:, :, None] * np.eye(3)
        step = np.linalg.solve(damped + 1e-12 * np.eye(3), b[..., None])[..., 0]
        trial = np.clip(lab + np.clip(step, -0.5, 0.5), LABEL_BOUNDS[0], LABEL_BOUNDS[1])
        better = self.cost(trial) <= self.cost(lab)
        return (np.where(better[:, None], trial, lab),
                np.where(better, lam * 0.3, lam * 10.0))


def _outer(u: FloatArray, v: FloatArray) -> FloatArray:
    """(n, 169) row-wise outer products u[:, t] v[:, s], flattened as t·13 + s (the layout
    of :attr:`_FitStats.g` reshaped to (n, 169))."""
    return np.asarray((u[:, :, None] * v[:, None, :]).reshape(len(u), -1))


def _row_median(values: FloatArray, bad: NDArray[np.bool_]) -> FloatArray:
    """Median of each row over its good entries; NaN for a row with none (vectorised: rows
    without a bad entry through :func:`numpy.median`, the others through one sort)."""
    out = np.full(len(values), np.nan)
    clean = ~bad.any(axis=1)
    if clean.any():
        out[clean] = np.median(values[clean], axis=1)
    some = np.flatnonzero(~clean & ~bad.all(axis=1))
    if some.size:
        # bad entries sort last as +inf; the median is then the middle of the good ones
        srt = np.sort(np.where(bad[some], np.inf, values[some]), axis=1)
        ng = (~bad[some]).sum(axis=1)
        rows = np.arange(some.size)
        out[some] = 0.5 * (srt[rows, (ng - 1) // 2] + srt[rows, ng // 2])
    return out


def robust_std(x: ArrayLike, axis: int | None = None) -> Any:
    """1.4826 × the median absolute deviation (NaN ignored)."""
    x = np.asarray(x, np.float64)
    med = np.nanmedian(x, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(x - med), axis=axis)


def fit_domain_model(inputs: ArrayLike, teff: ArrayLike, logg: ArrayLike, feh: ArrayLike,
                     color: ArrayLike, real: ArrayLike, weights: ArrayLike | None = None,
                     provenance: dict[str, Any] | None = None) -> DomainModel:
    """Fit the generative model on clean training rows.

    Parameters
    ----------
    inputs : (n, 2238) float
        Clean normalised inputs with no masked pixel.
    teff, logg, feh : (n,) float
        Labels (K, dex, dex).
    color : (n,) float
        Continuum colours of the rows (from their SEDs); NaN rows do not enter the colour fit.
    real : (n,) bool
        Rows whose inputs are real spectra (not emulated): the intrinsic scatter is measured
        on them (robust, per pixel), since emulated inputs are smoother than real stars.
    weights : (n,) float, optional
        Row weights of the least-squares fits (default 1).
    """
    x = np.asarray(inputs, np.float64)
    lab = scale_labels(teff, logg, feh)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    real = np.asarray(real, bool)
    if x.shape[1] != INPUT_GRID.n or not np.all(np.isfinite(x)):
        raise ValueError("domain model training inputs must be finite and on the input grid")
    if real.sum() < 2 * N_TERMS:
        raise ValueError(f"need at least {2 * N_TERMS} real rows to measure the scatter, "
                         f"got {int(real.sum())}")
    d = design(lab)
    ridge = 1e-6 * np.eye(N_TERMS)
    coeffs = np.linalg.solve(d.T @ (d * w[:, None]) + ridge, (d * w[:, None]).T @ x)
    resid = x[real] - d[real] @ coeffs
    scatter = np.maximum(robust_std(resid, axis=0), 1e-3)
    col = np.asarray(color, np.float64)
    ok = np.isfinite(col)
    cw = w[ok]
    color_coeffs = np.linalg.solve(d[ok].T @ (d[ok] * cw[:, None]) + ridge,
                                   (d[ok] * cw[:, None]).T @ col[ok])
    c_res = col[ok & real] - d[ok & real] @ color_coeffs
    labels = np.stack([np.asarray(teff, np.float64), np.asarray(logg, np.float64),
                       np.asarray(feh, np.float64)], 1)
    prov = dict(provenance or {})
    prov.update(n_train=int(len(x)), n_real=int(real.sum()))
    return DomainModel(coeffs=np.asarray(coeffs, np.float64), scatter=scatter,
                       color_coeffs=np.asarray(color_coeffs, np.float64),
                       color_scatter=float(np.hypot(robust_std(c_res), FLUX_CALIBRATION_SCATTER)),
                       label_min=labels.min(0), label_max=labels.max(0), provenance=prov)


def survey_noise(inputs: ArrayLike, rng: np.random.Generator, noise: NoiseConfig,
                 snrs: tuple[float, ...] = TRAIN_SNRS
                 ) -> tuple[FloatArray, FloatArray, NDArray[np.bool_], FloatArray]:
    """Noisy copies of clean inputs, drawn as training draws its noise.

    The S/N of each row comes from :func:`~csstflux.spectra.noise.draw_snr` (``snrs`` with
    probability ``noise.paper_fraction``, else log-uniform over ``noise.snr_range``); a
    fraction ``noise.lamost_fraction`` of the rows get LAMOST-like errors (a two-arm profile
    from :func:`~csstflux.spectra.error_profile.draw_error_profiles`, σ ∝ |F|^p with p
    uniform over ``noise.flux_power``), the others eq. (1), σ = |F| / S/N
    (:func:`~csstflux.spectra.noise.draw_mixed_noise`). These are the noise draws of
    ``csstflux.model.data.realistic_inputs`` without its augmentations (RV jitter,
    resolution, junction artefact, masked runs).

    Parameters
    ----------
    inputs : (n, 2238) float
        Clean normalised inputs.
    rng : numpy.random.Generator
    noise : NoiseConfig
        A training job's ``[train.noise]`` settings.
    snrs : tuple of float
        The paper's S/N set (``TrainConfig.snrs``).

    Returns
    -------
    noisy, err : (n, 2238) float64
    bad : (n, 2238) bool
        Pixels without a valid error (σ = 0).
    snr : (n,) float64
        The S/N drawn per row.
    """
    return draw_mixed_noise(inputs, noise, snrs, rng)


def calibrate_thresholds(model: DomainModel, inputs: ArrayLike, teff: ArrayLike,
                         logg: ArrayLike, feh: ArrayLike, color: ArrayLike,
                         rng: np.random.Generator, *, noise: NoiseConfig,
                         snrs: tuple[float, ...] = TRAIN_SNRS,
                         fold_models: Sequence[DomainModel] | None = None,
                         fold: ArrayLike | None = None, draws: int = 40, n_bins: int = 6,
                         quantile: float = 0.99, color_z_threshold: float = 3.0,
                         teff_margin: float = 0.0) -> tuple[DomainModel, dict[str, Any]]:
    """Systematic label errors and the χ² thresholds of ``model`` from held-out real rows.

    Each row (a clean input of a real star) is drawn ``draws`` times with survey noise
    (:func:`survey_noise` with ``noise`` and ``snrs``) and scored by a model that never fitted
    it: ``fold_models[fold[i]]`` when cross-fitted models are given (K-fold cross-fitting:
    model k was fitted without the rows of fold k), else ``model`` itself (the rows are then
    a held-out split). The scores are binned by the S/N that :meth:`DomainModel.estimate`
    records (``snr``, the median |flux|/error, which is what the pipeline passes to
    :meth:`DomainModel.chi2_limit`), in ``n_bins`` bins log-spaced over ``noise.snr_range``;
    each filled bin's threshold is the ``quantile`` of its ``chi2``, placed at the bin's
    median S/N, made non-decreasing in S/N. Every model must have ``model.chi2_cap``, so that
    the thresholds belong to the statistic ``model`` computes.

    The label errors' factor and systematic term are what makes the label z-scores (estimate
    − truth over the total error) spread by 1 over the same draws, in every S/N bin as far as
    two numbers per label allow (:func:`error_model_for_unit_z`): the factor lets the
    statistical errors grow where the inverse-Fisher errors undercount the scatter, instead of
    one systematic term standing in for both at every S/N. The draws are the cross-fitted
    ones when ``fold_models`` is given. ``color_z_threshold`` is a fixed one-sided limit.

    Returns
    -------
    model : DomainModel
        ``model`` with ``systematic``, ``stat_scale``, ``chi2_snr``, ``chi2_threshold``,
        ``color_z_threshold`` and ``teff_margin`` set.
    report : dict
        What was measured (per-bin counts and thresholds, the noise, the systematics).
    """
    x = np.asarray(inputs, np.float64)
    n = len(x)
    col = np.asarray(color, np.float64)
    if fold_models is None:
        models: Sequence[DomainModel] = [model]
        which_model = np.zeros(n, int)
    else:
        if fold is None:
            raise ValueError("fold_models needs fold, the fold of every row")
        models = list(fold_models)
        which_model = np.asarray(fold, int)
        if which_model.shape != (n,) or which_model.min() < 0 \
                or which_model.max() >= len(models):
            raise ValueError(f"fold must be ({n},) integers in [0, {len(models)})")
    if any(m.chi2_cap != model.chi2_cap for m in models):
        raise ValueError("every fold model must use the calibrated model's chi2_cap")
    parts, drawn = [], []
    for _ in range(draws):                 # one noisy copy of every row at a time (memory)
        noisy, err, bad, snr = survey_noise(x, rng, noise, snrs)
        fields: dict[str, FloatArray] = {f: np.full(n, np.nan) for f in _EST_FIELDS}
        for k, m in enumerate(models):
            rows = np.flatnonzero(which_model == k)
            if rows.size:
                e = m.estimate(noisy[rows], err[rows], bad[rows], col[rows])
                for f, v in e.as_dict().items():
                    fields[f][rows] = v
        parts.append(DomainEstimate(**fields))
        drawn.append(snr)
    est = DomainEstimate.concatenate(parts)
    true = scale_labels(np.tile(teff, draws), np.tile(logg, draws), np.tile(feh, draws))
    got = scale_labels(est.teff, est.logg, est.feh)
    stat = np.stack([est.teff_err / (est.teff * np.log(10.0)), est.logg_err, est.feh_err],
                    axis=1) / LABEL_SCALE
    used = np.tile(np.stack([m.systematic for m in models])[which_model], (draws, 1))
    used_k = np.tile(np.stack([m.stat_scale for m in models])[which_model], (draws, 1))
    stat = np.sqrt(np.clip(stat ** 2 - (used / LABEL_SCALE) ** 2, 0.0, None)) / used_k
    edges = np.geomspace(noise.snr_range[0], noise.snr_range[1], n_bins + 1)
    which = np.clip(np.searchsorted(edges, est.snr) - 1, 0, n_bins - 1)
    k_stat, sys_scaled = error_model_for_unit_z(got - true, stat, which)
    filled = [i for i in range(n_bins) if np.any(which == i)]   # an empty bin has no node
    nodes = np.array([np.median(est.snr[which == i]) for i in filled])
    thr = np.array([np.quantile(est.chi2[which == i], quantile) for i in filled])
    thr = np.maximum.accumulate(thr)       # non-decreasing in S/N: noise only dilutes a mismatch
    new = replace(model, systematic=np.asarray(sys_scaled * LABEL_SCALE), stat_scale=k_stat,
                  chi2_snr=nodes,
                  chi2_threshold=thr, color_z_threshold=color_z_threshold,
                  teff_margin=teff_margin)
    report = {"n_rows": n, "draws": draws, "folds": len(models) if fold_models else 0,
              "noise": {"lamost_fraction": noise.lamost_fraction,
                        "paper_fraction": noise.paper_fraction,
                        "snr_range": list(noise.snr_range), "snrs": list(snrs),
                        "red_blue_ratio": list(noise.red_blue_ratio),
                        "flux_power": list(noise.flux_power)},
              "quantile": quantile, "chi2_cap": model.chi2_cap, "n_bins": n_bins,
              "snr_drawn_median": float(np.median(np.concatenate(drawn))),
              "bin_counts": [int((which == i).sum()) for i in filled],
              "chi2_snr": nodes.round(2).tolist(), "chi2_threshold": thr.round(4).tolist(),
              "color_z_threshold": color_z_threshold, "teff_margin": teff_margin,
              "systematic": {"log10_teff": float(sys_scaled[0] * LABEL_SCALE[0]),
                             "logg": float(sys_scaled[1] * LABEL_SCALE[1]),
                             "feh": float(sys_scaled[2] * LABEL_SCALE[2])},
              "stat_scale": dict(zip(("log10_teff", "logg", "feh"), k_stat.tolist(),
                                     strict=True)),
              "label_z_spread_by_bin": {
                  name: [float(robust_std(((got - true)[:, j] / np.hypot(
                      k_stat[j] * stat[:, j], sys_scaled[j]))[which == i])) for i in filled]
                  for j, name in enumerate(("log10_teff", "logg", "feh"))}}
    return new, report


def systematic_for_unit_z(resid: FloatArray, stat: FloatArray) -> FloatArray:
    """Per column, the error ``s`` to add in quadrature to the statistical errors ``stat`` so
    that the robust scatter of ``resid / sqrt(stat² + s²)`` is 1 (0 where the statistical
    errors alone already give a scatter of at most 1).

    The residuals of noisy copies already carry the noise that ``stat`` describes: taking
    their plain scatter as the systematic term counts that noise twice (the label z-scores of
    held-out stars then spread by 0.6-0.9 instead of 1).
    """
    out = np.zeros(resid.shape[1])
    for j in range(resid.shape[1]):
        ok = np.isfinite(resid[:, j]) & np.isfinite(stat[:, j])
        r, e = resid[ok, j], stat[ok, j]
        if r.size == 0:
            continue
        lo, hi = 0.0, float(robust_std(r)) + 1e-12
        if robust_std(r / np.maximum(e, 1e-12)) <= 1.0:
            continue
        for _ in range(60):                      # the scatter falls as s grows: bisection
            mid = 0.5 * (lo + hi)
            if robust_std(r / np.sqrt(e ** 2 + mid ** 2)) > 1.0:
                lo = mid
            else:
                hi = mid
        out[j] = hi
    return out


#: Factors on the statistical label errors that :func:`error_model_for_unit_z` tries.
STAT_SCALES = np.geomspace(0.5, 4.0, 43)


def error_model_for_unit_z(resid: FloatArray, stat: FloatArray, group: ArrayLike
                           ) -> tuple[FloatArray, FloatArray]:
    """Per column, a factor ``k`` on the statistical errors and a systematic ``s`` such that
    ``z = resid / sqrt((k stat)² + s²)`` spreads by 1 (robustly) over all rows and as evenly
    as possible across the row groups ``group`` (S/N bins).

    For each ``k`` of :data:`STAT_SCALES`, ``s`` comes from :func:`systematic_for_unit_z`;
    the ``k`` kept is the one whose groups' spreads of ``z`` are closest to 1 (least squares
    in their logarithm, each group weighted by the square root of its size). Low S/N rows,
    whose errors are mostly statistical, set ``k``; high S/N rows, mostly systematic, set
    ``s``. Returns (k, s), each (n_col,).
    """
    g = np.asarray(group)
    groups = [np.flatnonzero(g == v) for v in np.unique(g)]
    ks, ss = np.ones(resid.shape[1]), np.zeros(resid.shape[1])
    for j in range(resid.shape[1]):
        ok = np.isfinite(resid[:, j]) & np.isfinite(stat[:, j])
        best = np.inf
        for k in STAT_SCALES:
            s = float(systematic_for_unit_z(resid[:, j:j + 1], k * stat[:, j:j + 1])[0])
            z = resid[:, j] / np.sqrt((k * stat[:, j]) ** 2 + s * s + 1e-300)
            cost = 0.0
            for rows in groups:
                r = rows[ok[rows]]
                if r.size >= 10:
                    cost += np.sqrt(r.size) * np.log(robust_std(z[r])) ** 2
            if cost < best:
                best, ks[j], ss[j] = cost, k, s
    return ks, ss


_EST_FIELDS = ("teff", "teff_err", "logg", "logg_err", "feh", "feh_err", "chi2", "snr",
               "color_z")


#: The domain model shipped inside the package (built by ``csstflux build-domain-model``).
DEFAULT_DOMAIN_MODEL = "domain_model.npz"
_KIND = "csstflux-domain-model"


def default_domain_model_path() -> Path:
    return Path(str(resources.files("csstflux") / "data" / DEFAULT_DOMAIN_MODEL))


def save_domain_model(model: DomainModel, path: str | os.PathLike[str]) -> Path:
    """Write the domain model (arrays + provenance) to ``path`` (``.npz``)."""
    return save_input_product(path, model.to_arrays(), _KIND, model.provenance,
                              color_windows=[list(w) for w in COLOR_WINDOWS])


def load_domain_model(path: str | os.PathLike[str] | None = None) -> DomainModel:
    """Load a domain model written by :func:`save_domain_model` (the shipped one when None)."""
    arrays, meta, prov = load_input_product(path, default_domain_model_path(), _KIND,
                                            "domain model", "csstflux build-domain-model")
    if meta.get("color_windows") != [list(w) for w in COLOR_WINDOWS]:
        raise GridMismatchError("domain model was built with other colour windows",
                                path=prov["path"], expected=[list(w) for w in COLOR_WINDOWS],
                                found=meta.get("color_windows"))
    return DomainModel.from_arrays(arrays, provenance=prov)
