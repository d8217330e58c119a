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
   errors, inflated by √χ²_red when the fit is poor, added in quadrature to the systematic
   scatter measured on held-out stars.
2. **Is it like the training inputs?** Two novelty numbers: ``chi2``, the reduced χ² of the
   best fit with the input errors and the intrinsic scatter, and ``color_z``, how much bluer
   the spectrum is than the model's colour at the fitted labels, in units of the colour
   scatter. The colour test is one-sided because dust only makes a star redder: a hot B star
   whose normalised lines mimic a metal-poor F star (the continuum normalisation divides out
   its Balmer wings) is far bluer than any F star could be, while a reddened in-domain star is
   not penalised. The thresholds are chosen on held-out rows and stored with the model.

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
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import GridMismatchError
from csstflux.grids import COLOR_WINDOWS, INPUT_GRID, TEFF_DOMAIN
from csstflux.io.stores.arrays import load_input_product, save_input_product

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
    """Reduced χ² of the best fit (≈1 for inputs like the training rows)."""
    snr: FloatArray
    """Median |flux| / error over the good input pixels."""
    color_z: FloatArray
    """(observed − model colour) / colour scatter at the fitted labels; NaN without colour."""

    def as_dict(self) -> dict[str, FloatArray]:
        return {k: getattr(self, k) for k in ("teff", "teff_err", "logg", "logg_err", "feh",
                                             "feh_err", "chi2", "snr", "color_z")}


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
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coeffs.shape != (N_TERMS, INPUT_GRID.n) or self.scatter.shape != (INPUT_GRID.n,):
            raise ValueError("domain model is not on the model input grid")

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

        A row with no usable pixel gets NaN labels, errors and χ².
        """
        y = np.atleast_2d(np.asarray(flux, np.float64))
        e = np.atleast_2d(np.asarray(err, np.float64))
        if y.shape[1] != INPUT_GRID.n or e.shape != y.shape:
            raise ValueError(f"expected (n, {INPUT_GRID.n}) flux and error arrays, got "
                             f"{y.shape} and {e.shape}")
        bad = ~(np.isfinite(y) & np.isfinite(e) & (e > 0) & (e < _MASKED_ERR))
        if mask is not None:
            bad |= np.atleast_2d(np.asarray(mask, bool))
        y = np.where(bad, 0.0, y)
        ivar = np.where(bad, 0.0, 1.0 / (np.where(bad, 1.0, e) ** 2 + self.scatter ** 2))
        n_good = np.maximum((~bad).sum(axis=1), 1)
        snr = _row_median(np.abs(y) / np.where(bad, 1.0, e), bad)
        c_obs = (np.full(len(y), np.nan) if color is None
                 else np.broadcast_to(np.asarray(color, np.float64), (len(y),)).copy())
        has_c = np.isfinite(c_obs)
        c_obs = np.where(has_c, c_obs, 0.0)
        civar = np.where(has_c, 1.0 / self.color_scatter ** 2, 0.0)
        # The model is linear in the 13 design terms, so χ², its gradient and the Fisher
        # matrix need only these per-spectrum sums over pixels (computed once):
        #   s0 = Σ w y², h = C (w y), G = C diag(w) Cᵀ   (C: the 13 × 2238 coefficients)
        stats = _FitStats(s0=(ivar * y * y).sum(1), h=(ivar * y) @ self.coeffs.T,
                          g=(ivar @ self._coeff_products()).reshape(-1, N_TERMS, N_TERMS),
                          c_obs=c_obs, civar=civar, color_coeffs=self.color_coeffs)
        d0 = design(_STARTS)                                          # (k, 13)
        chi0 = (stats.s0[:, None] - 2.0 * stats.h @ d0.T
                + np.einsum("kt,nts,ks->nk", d0, stats.g, d0))
        rc0 = c_obs[:, None] - (d0 @ self.color_coeffs)[None, :]
        chi0 += civar[:, None] * np.maximum(rc0, 0.0) ** 2
        lab = _STARTS[np.argmin(chi0, axis=1)].copy()
        lam = np.full(len(y), 1e-3)
        for _ in range(N_ITER):
            lab, lam = stats.step(lab, lam)
        d = design(lab)
        chi2 = stats.line_chi2(d) / n_good
        fisher, _ = stats.normal_equations(lab)
        cov = np.linalg.pinv(fisher + 1e-9 * np.eye(3))
        stat = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        stat *= np.sqrt(np.maximum(chi2, 1.0))[:, None]
        sig = np.sqrt(stat ** 2 + (self.systematic / LABEL_SCALE) ** 2) * LABEL_SCALE
        none = np.asarray(bad.all(axis=1), dtype=bool)
        labels = np.where(none[:, None], np.nan, lab * LABEL_SCALE + LABEL_OFFSET)
        sig = np.where(none[:, None], np.nan, sig)
        teff = 10.0 ** labels[:, 0]
        rc = c_obs - d @ self.color_coeffs
        color_z = np.where(has_c, rc / self.color_scatter, np.nan)
        return DomainEstimate(teff=teff, teff_err=teff * np.log(10.0) * sig[:, 0],
                              logg=labels[:, 1], logg_err=sig[:, 1], feh=labels[:, 2],
                              feh_err=sig[:, 2], chi2=np.where(none, np.nan, chi2),
                              snr=snr, color_z=color_z)

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
                "systematic": self.systematic, "chi2_snr": self.chi2_snr,
                "chi2_threshold": self.chi2_threshold,
                "color_z_threshold": np.array(self.color_z_threshold),
                "teff_margin": np.array(self.teff_margin)}

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
                   chi2_snr=np.atleast_1d(np.asarray(a["chi2_snr"], np.float64)),
                   chi2_threshold=np.atleast_1d(np.asarray(a["chi2_threshold"], np.float64)),
                   color_z_threshold=float(a["color_z_threshold"]),
                   teff_margin=float(a["teff_margin"]),
                   provenance=dict(provenance or {}))

    def describe(self) -> dict[str, Any]:
        """What a store records about the model that flagged its stars."""
        return {"chi2_snr": self.chi2_snr.tolist(),
                "chi2_threshold": self.chi2_threshold.tolist(),
                "color_z_threshold": self.color_z_threshold, "teff_margin": self.teff_margin,
                "color_windows": [list(w) for w in COLOR_WINDOWS],
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
                          + np.einsum("nt,nts,ns->n", d, self.g, d))

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
        a = np.einsum("ntj,nts,nsk->njk", dd, self.g, dd)
        b = np.einsum("ntj,nt->nj", dd, self.h - np.einsum("nts,ns->nt", self.g, d))
        r, w = self.color_residual(d)
        cj = np.einsum("ntj,t->nj", dd, self.color_coeffs)
        a += w[:, None, None] * cj[:, :, None] * cj[:, None, :]
        b += (w * r)[:, None] * cj
        return a, b

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


def _row_median(values: FloatArray, bad: NDArray[np.bool_]) -> FloatArray:
    """Median of each row over its good entries; NaN for a row with none."""
    out = np.full(len(values), np.nan)
    has = ~bad.all(axis=1)
    if has.any():
        out[has] = np.nanmedian(np.where(bad[has], np.nan, values[has]), axis=1)
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


def calibrate_thresholds(model: DomainModel, inputs: ArrayLike, teff: ArrayLike,
                         logg: ArrayLike, feh: ArrayLike, color: ArrayLike,
                         rng: np.random.Generator, *, draws: int = 40,
                         snr_range: tuple[float, float] = (10.0, 300.0), n_bins: int = 6,
                         quantile: float = 0.99, color_z_threshold: float = 3.0,
                         teff_margin: float = 0.0) -> tuple[DomainModel, dict[str, Any]]:
    """Systematic label errors and the χ² thresholds from held-out rows (clean inputs).

    Each row is drawn ``draws`` times with noise at an S/N log-uniform over ``snr_range``;
    the draws are binned in log S/N (``n_bins``) and each bin's χ² threshold is the
    ``quantile`` of its χ², placed at the bin's median S/N. The systematic errors are the
    robust scatter of the label residuals. ``color_z_threshold`` is a fixed one-sided limit.
    Returns the updated model and what was measured.
    """
    x = np.asarray(inputs, np.float64)
    n = len(x)
    lo, hi = np.log(snr_range[0]), np.log(snr_range[1])
    snr = np.exp(rng.uniform(lo, hi, size=(draws, n)))
    col = np.asarray(color, np.float64)
    parts = []
    for k in range(draws):                 # one noisy copy of every row at a time (memory)
        errs = np.abs(x) / snr[k][:, None]
        parts.append(model.estimate(x + errs * rng.standard_normal(x.shape), errs, color=col))
    est = DomainEstimate(**{f: np.concatenate([getattr(e, f) for e in parts])
                            for f in parts[0].as_dict()})
    true = scale_labels(np.tile(teff, draws), np.tile(logg, draws), np.tile(feh, draws))
    got = scale_labels(est.teff, est.logg, est.feh)
    sys_scaled = robust_std(got - true, axis=0)
    edges = np.geomspace(snr_range[0], snr_range[1], n_bins + 1)
    which = np.clip(np.searchsorted(edges, est.snr) - 1, 0, n_bins - 1)
    filled = [i for i in range(n_bins) if np.any(which == i)]   # an empty bin has no node
    nodes = np.array([np.median(est.snr[which == i]) for i in filled])
    thr = np.array([np.quantile(est.chi2[which == i], quantile) for i in filled])
    thr = np.maximum.accumulate(thr)       # non-decreasing in S/N: noise only dilutes a mismatch
    new = replace(model, systematic=np.asarray(sys_scaled * LABEL_SCALE), chi2_snr=nodes,
                  chi2_threshold=thr, color_z_threshold=color_z_threshold,
                  teff_margin=teff_margin)
    report = {"n_rows": n, "draws": draws, "snr_range": list(snr_range), "quantile": quantile,
              "chi2_snr": nodes.round(2).tolist(), "chi2_threshold": thr.round(4).tolist(),
              "color_z_threshold": color_z_threshold, "teff_margin": teff_margin,
              "systematic": {"log10_teff": float(sys_scaled[0] * LABEL_SCALE[0]),
                             "logg": float(sys_scaled[1] * LABEL_SCALE[1]),
                             "feh": float(sys_scaled[2] * LABEL_SCALE[2])}}
    return new, report


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
