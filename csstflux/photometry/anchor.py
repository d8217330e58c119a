"""Photometric anchoring: a relative SED becomes an absolute, reddened flux standard.

The network predicts each star's intrinsic SED ``S(λ)`` scaled to 1 in
:data:`csstflux.grids.SCALING_WINDOW`, with a 1σ ``σ_S(λ)``. The star as seen is

    f(λ) = s · S(λ) · 10^(−0.4 E k(λ))    [erg s⁻¹ cm⁻² Å⁻¹]

with ``s`` the intrinsic flux in the scaling window, ``E`` = E(B−V) and ``k = A(λ)/E(B−V)``
of an extinction law (:mod:`csstflux.photometry.extinction`). Its AB magnitude in band ``b`` is
``m_b = μ + M_b(E)`` with ``μ = −2.5 log10 s`` and ``M_b(E)`` the synthetic magnitude of the
reddened relative SED (:mod:`csstflux.photometry.synth`). :func:`fit_anchor` fits ``μ`` and
``E ≥ 0`` to a star's catalogue magnitudes, vectorised over stars.

Errors. The magnitudes' covariance is the photometric variance (catalogue error, or
``floor_mag`` where none is given, added in quadrature to ``floor_mag`` otherwise) plus the
SED's own error propagated into every band, ``C_sed = J Σ J^T`` with ``J_bp = ∂M_b/∂ln S_p``
and ``Σ_pq = σ_p σ_q exp(−|ln λ_p − ln λ_q| / ℓ)``: the network's errors are correlated
across wavelength (a wrong temperature tilts the whole SED), so two bands do not average
them down. ``ℓ`` is :attr:`AnchorConfig.correlation_length` (ln λ). The kernel is applied
through its leading eigenvectors (those above 1e-4 of the largest eigenvalue), so the cost per
star is a few (band × pixel × mode) products. Past the grid end (10500 Å) the SED is the
power-law continuation of :meth:`~csstflux.photometry.synth.SyntheticPhotometry.extend`, and
its fractional error is that of the last grid pixel plus :data:`EXTENSION_ERROR` in
quadrature. An optional Gaussian prior on
``E`` (e.g. a dust-map value) adds one row to the fit.

Fit. Gauss–Newton in ``(μ, E)`` from ``E = 0.1`` (``M_b`` is nearly linear in ``E``:
``∂M_b/∂E`` is the band's effective ``k``), :data:`N_ITER` steps; where the unconstrained
``E`` is negative the star is refitted with ``E = 0`` (only ``μ`` free). Errors are the
inverse curvature of the unconstrained problem (at the bound they describe the local slope,
not a truncated posterior).

Rejection rule. With at least ``min_bands + 1`` bands in the fit, each band is predicted from
a fit to the others (leave-one-out, linearised at the current solution) and its deletion
residual ``z_b = (m_b − m̂_b) / sqrt(C_bb + var m̂_b)`` computed; the band with the largest
``|z_b|`` is dropped when that exceeds ``reject_nsigma`` (default 4), the fit is redone, and
the rule is applied again while bands remain above ``min_bands``. Dropped bands are recorded.

Outcomes per star: ``NO_PHOTOMETRY`` when fewer than 2 usable bands remain (1 with an E(B−V)
prior): nothing is fitted. ``PHOT_INCONSISTENT`` when the final fit's χ² has a p-value below
``p_inconsistent`` (default 1e-3) for its degrees of freedom (n_used + prior − 2). Both are
:class:`csstflux.flags.Flag` bits.

The absolute SED's error (:meth:`Anchor.sed_abs`) propagates the SED's error through the fit
as well: an SED too bright in the fitted bands gives a scale too small, so near the bands the
two cancel; the cross term between them is kept, not only their sum in quadrature.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import chi2 as chi2_dist

from csstflux.flags import Flag
from csstflux.photometry.synth import SyntheticPhotometry

Array = NDArray[np.float64]

#: Fractional error added in quadrature past the grid end, where the SED is extrapolated.
EXTENSION_ERROR = 0.03
#: Gauss–Newton steps (the model is nearly linear in E: 4 reach 1e-6 mag).
N_ITER = 6
_LN10_04 = 0.4 * np.log(10.0)
_MAG = 2.5 / np.log(10.0)
_BIG = 1e6   # variance (mag²) given to bands outside the fit


@dataclass(frozen=True)
class AnchorConfig:
    """How catalogue photometry anchors a relative SED."""

    floor_mag: float = 0.02
    """Error floor, mag, added in quadrature to every catalogue error (calibration of the
    input catalogue, variability); used alone where a band has no error."""
    correlation_length: float = 0.2
    """Correlation length of the SED's error across wavelength, in ln λ (0.2 ≈ 1100 Å at
    5500 Å)."""
    reject_nsigma: float = 4.0
    """Deletion-residual threshold of the rejection rule."""
    min_bands: int = 3
    """Rejection stops when this many bands are left."""
    p_inconsistent: float = 1e-3
    """χ² p-value below which PHOT_INCONSISTENT is set."""
    ebv_max: float = 5.0
    """Upper bound of E(B−V)."""

    def __post_init__(self) -> None:
        if not self.floor_mag >= 0 or not self.correlation_length > 0:
            raise ValueError("floor_mag must be >= 0 and correlation_length > 0")
        if not self.reject_nsigma > 0 or self.min_bands < 2 or not 0 < self.p_inconsistent < 1:
            raise ValueError("reject_nsigma > 0, min_bands >= 2, 0 < p_inconsistent < 1")


@dataclass(frozen=True)
class AnchorResult:
    """Per-star results of :func:`fit_anchor` (n stars, nb bands, p grid pixels)."""

    ebv: Array
    """(n,) E(B−V), mag (NaN: not fitted)."""
    ebv_err: Array
    mu: Array
    """(n,) −2.5 log10 scale."""
    mu_err: Array
    cov_mu_ebv: Array
    chi2: Array
    """(n,) χ² of the final fit (NaN: not fitted)."""
    ndof: NDArray[np.int64]
    used: NDArray[np.bool_]
    """(n, nb) bands in the final fit."""
    rejected: NDArray[np.bool_]
    """(n, nb) bands dropped by the rejection rule."""
    flags: NDArray[np.uint32]
    gain: Array
    """(n, 2, nb) ∂(μ, E)/∂m of the final fit (zero for bands outside it)."""

    @property
    def scale(self) -> Array:
        """(n,) intrinsic flux in the scaling window, erg s⁻¹ cm⁻² Å⁻¹."""
        return 10.0 ** (-0.4 * self.mu)

    @property
    def scale_err(self) -> Array:
        return self.scale * _LN10_04 * self.mu_err


@dataclass(frozen=True, eq=False)
class Anchor:
    """The fit's fixed ingredients: synthetic photometry and extinction on its grid."""

    synth: SyntheticPhotometry
    k: Array
    """(n_ext,) A(λ)/E(B−V) on ``synth.wavelength``."""
    config: AnchorConfig = AnchorConfig()

    def __post_init__(self) -> None:
        if np.shape(self.k) != np.shape(self.synth.wavelength):
            raise ValueError("k must be given on synth.wavelength")

    @cached_property
    def _modes(self) -> Array:
        """(n_ext, r) factor L of the correlation kernel, K ≈ L Lᵀ."""
        lnw = np.log(self.synth.wavelength)
        kern = np.exp(-np.abs(lnw[:, None] - lnw[None, :]) / self.config.correlation_length)
        val, vec = np.linalg.eigh(kern)
        keep = val > 1e-4 * val.max()
        return np.asarray(vec[:, keep] * np.sqrt(val[keep]))

    def extend(self, sed: ArrayLike, sed_err: ArrayLike) -> tuple[Array, Array]:
        """Relative SED and its error (n, p) → (n, n_ext), see the module docstring."""
        sed = np.atleast_2d(np.asarray(sed, float))
        err = np.atleast_2d(np.asarray(sed_err, float))
        ext = self.synth.extend(sed)
        n = self.synth.n_grid
        frac = np.abs(err[:, -1:] / sed[:, -1:])
        e_ext = np.empty_like(ext)
        e_ext[:, :n] = err
        e_ext[:, n:] = np.abs(ext[:, n:]) * np.sqrt(frac**2 + EXTENSION_ERROR**2)
        return ext, e_ext

    def band_model(self, sed_ext: Array, ebv: Array) -> tuple[Array, Array, Array]:
        """Synthetic AB mags of the reddened relative SEDs, ∂M/∂E and the Jacobian factor.

        Returns ``M (n, nb)``, ``g (n, nb)`` and ``q (n, nb, n_ext)`` with
        ``q_bp = ∂M_b/∂ln S_p`` (mag).
        """
        red = sed_ext * 10.0 ** (-0.4 * ebv[:, None] * self.k[None, :])
        contrib = red[:, None, :] * self.synth.weights[None, :, :]   # (n, nb, n_ext)
        flux = contrib.sum(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mags = -2.5 * np.log10(flux) - 48.60
            q = -_MAG * contrib / flux[:, :, None]
            g = (contrib * self.k).sum(axis=2) / flux
        return mags, g, q

    def sed_covariance(self, q: Array, rel_err_ext: Array) -> Array:
        """(n, nb, nb) magnitude covariance from the SED's correlated fractional error
        ``rel_err_ext = σ / S`` (n, n_ext)."""
        a = np.einsum("nbp,np,pr->nbr", np.nan_to_num(q), np.nan_to_num(rel_err_ext),
                      self._modes, optimize=True)
        return np.einsum("nbr,ncr->nbc", a, a)

    def sed_abs(self, sed: ArrayLike, sed_err: ArrayLike, result: AnchorResult
                ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Absolute observed-frame SED and its 1σ (n, p) float32, erg s⁻¹ cm⁻² Å⁻¹.

        The error of ``ln f(λ)`` is that of ``ln S(λ) − 0.4 ln10 (μ + E k(λ))`` with the
        fitted (μ, E) moved by the same SED error that moved the bands they were fitted to:
        ``var = σ_rel² + c² hᵀ Cov h + 2 c hᵀ G A Lᵀ σ_rel``, with ``c = 0.4 ln10``,
        ``h = (1, k(λ))``, ``G`` the fit's gain, ``A = J diag(σ_rel) L`` the bands' share of
        the SED error modes ``L``. Near the fitted bands the anchor follows the SED's own
        error, so the absolute SED is better known there than either alone.
        """
        sed = np.atleast_2d(np.asarray(sed, float))
        err = np.atleast_2d(np.asarray(sed_err, float))
        n_grid = sed.shape[1]
        k = self.k[:n_grid]
        red = 10.0 ** (-0.4 * result.ebv[:, None] * k[None, :])
        flux = result.scale[:, None] * sed * red
        filled, ferr, _ = _fill_gaps(sed, err)
        ext, e_ext = self.extend(filled, ferr)
        rel_ext = np.abs(e_ext / ext)
        _, _, q = self.band_model(ext, np.nan_to_num(result.ebv))
        a = np.einsum("nbp,np,pr->nbr", np.nan_to_num(q), np.nan_to_num(rel_ext), self._modes,
                      optimize=True)
        u = np.einsum("nib,nbr->nir", np.nan_to_num(result.gain), a)      # (n, 2, r)
        lt = self._modes[:n_grid].T                                          # (r, p)
        cross = 2 * _LN10_04 * rel_ext[:, :n_grid] * (u[:, 0, :] @ lt
                                                      + k[None, :] * (u[:, 1, :] @ lt))
        var_fit = _LN10_04**2 * (result.mu_err[:, None] ** 2
                                 + k[None, :] ** 2 * result.ebv_err[:, None] ** 2
                                 + 2 * k[None, :] * result.cov_mu_ebv[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            var = (err / sed) ** 2 + var_fit + cross
            rel = np.sqrt(np.maximum(var, 0.01 * (err / sed) ** 2))   # rounding guard
        return flux.astype(np.float32), (np.abs(flux) * rel).astype(np.float32)


def fit_anchor(anchor: Anchor, sed: ArrayLike, sed_err: ArrayLike, mag_ab: ArrayLike,
               mag_err: ArrayLike, *, fit_bands: ArrayLike | None = None,
               ebv_prior: ArrayLike | None = None, ebv_prior_err: ArrayLike | None = None
               ) -> AnchorResult:
    """Fit scale and E(B−V) of each star to its photometry (module docstring).

    Parameters
    ----------
    anchor : Anchor
    sed, sed_err : (n, p)
        Relative SEDs and 1σ on the grid (``p = anchor.synth.n_grid``); NaN pixels are
        filled by interpolation in ln λ, and a star with no finite pixel is not fitted.
    mag_ab, mag_err : (n, nb)
        Catalogue magnitudes converted to AB, and their 1σ (NaN: no error given, the floor
        is used); NaN magnitudes are missing.
    fit_bands : (nb,) bool, optional
        Bands allowed in the fit (False: held out); default all.
    ebv_prior, ebv_prior_err : (n,), optional
        Gaussian prior on E(B−V) (NaN: none for that star).
    """
    cfg = anchor.config
    sed = np.atleast_2d(np.asarray(sed, float))
    err = np.atleast_2d(np.asarray(sed_err, float))
    mag = np.atleast_2d(np.asarray(mag_ab, float))
    merr = np.atleast_2d(np.asarray(mag_err, float))
    n, nb = mag.shape
    allowed = np.ones(nb, bool) if fit_bands is None else np.asarray(fit_bands, bool)
    prior = np.full(n, np.nan) if ebv_prior is None else np.asarray(ebv_prior, float)
    prior_err = np.full(n, np.nan) if ebv_prior_err is None else np.asarray(ebv_prior_err,
                                                                            float)
    has_prior = np.isfinite(prior) & np.isfinite(prior_err) & (prior_err > 0)
    sed, err, good_sed = _fill_gaps(sed, err)
    var_phot = np.where(np.isfinite(merr), merr**2, 0.0) + cfg.floor_mag**2
    usable = np.isfinite(mag) & allowed[None, :] & anchor.synth.usable()[None, :] & \
        good_sed[:, None]
    need = np.where(has_prior, 1, 2)
    fitted = usable.sum(axis=1) >= need
    used = usable & fitted[:, None]
    rejected = np.zeros_like(used)
    ext, e_ext = anchor.extend(sed, err)
    e_ext = np.abs(e_ext / ext)   # fractional: the Jacobian is taken in ln S
    state = _solve(anchor, ext, e_ext, mag, var_phot, used, prior, prior_err, has_prior)
    for _ in range(nb):
        loo = _deletion_residuals(state, mag, used, prior, prior_err, has_prior)
        worst = np.argmax(np.where(used, np.abs(loo), -1.0), axis=1)
        zmax = np.abs(loo[np.arange(n), worst])
        drop = (used.sum(axis=1) > cfg.min_bands) & (zmax > cfg.reject_nsigma)
        if not drop.any():
            break
        rows = np.flatnonzero(drop)
        used[rows, worst[rows]] = False
        rejected[rows, worst[rows]] = True
        state = _solve(anchor, ext, e_ext, mag, var_phot, used, prior, prior_err, has_prior)
    mu, ebv, cov, chi2 = state.mu, state.ebv, state.cov, state.chi2
    ndof = used.sum(axis=1) + has_prior - 2
    flags = np.zeros(n, np.uint32)
    flags[~fitted] |= np.uint32(Flag.NO_PHOTOMETRY)
    with np.errstate(invalid="ignore"):
        p = np.where(ndof > 0, chi2_dist.sf(chi2, np.maximum(ndof, 1)), 1.0)
    flags[fitted & (p < cfg.p_inconsistent)] |= np.uint32(Flag.PHOT_INCONSISTENT)
    nan = np.where(fitted, 1.0, np.nan)
    return AnchorResult(ebv=ebv * nan, ebv_err=np.sqrt(cov[:, 1, 1]) * nan, mu=mu * nan,
                        mu_err=np.sqrt(cov[:, 0, 0]) * nan, cov_mu_ebv=cov[:, 0, 1] * nan,
                        chi2=chi2 * nan, ndof=np.where(fitted, ndof, 0), used=used,
                        rejected=rejected, flags=flags, gain=state.gain)


def _fill_gaps(sed: Array, err: Array) -> tuple[Array, Array, NDArray[np.bool_]]:
    """Interpolate NaN or non-positive SED pixels (error: the largest neighbour's, ×2)."""
    ok = np.isfinite(sed) & (sed > 0) & np.isfinite(err)
    good = ok.sum(axis=1) >= 2
    if ok.all():
        return sed, err, good
    x = np.arange(sed.shape[1])
    sed, err = sed.copy(), err.copy()
    for i in np.flatnonzero(good & ~ok.all(axis=1)):
        m = ok[i]
        sed[i, ~m] = np.exp(np.interp(x[~m], x[m], np.log(sed[i, m])))
        err[i, ~m] = 2.0 * np.interp(x[~m], x[m], err[i, m] / sed[i, m]) * sed[i, ~m]
    sed[~good] = 1.0
    err[~good] = 1.0
    return sed, err, good


@dataclass(frozen=True)
class _State:
    mu: Array
    ebv: Array
    cov: Array
    """(n, 2, 2) covariance of (μ, E), unconstrained curvature."""
    chi2: Array
    model: Array
    """(n, nb) linearisation point: magnitudes at the solution."""
    design: Array
    """(n, nb, 2) ∂m/∂(μ, E)."""
    var: Array
    """(n, nb, nb) magnitude covariance (bands outside the fit: decoupled, _BIG)."""
    gain: Array
    """(n, 2, nb) ∂(μ, E)/∂m: how an error in each band's magnitude moves the fit."""


def _masked_cov(c_sed: Array, var_phot: Array, used: NDArray[np.bool_]) -> Array:
    both = used[:, :, None] & used[:, None, :]
    c = np.where(both, c_sed, 0.0)
    d = np.where(used, var_phot, _BIG)
    idx = np.arange(c.shape[1])
    c[:, idx, idx] += d
    return c


def _inv(a: Array) -> Array:
    """Inverse of the (n, k, k) float64 stack ``a``: float64, as ``np.linalg.inv`` returns for
    float64 input (its stubs only promise a floating type)."""
    return np.asarray(np.linalg.inv(a), dtype=np.float64)


def _gls(design: Array, resid: Array, cinv: Array, prior_rows: tuple[Array, Array, Array]
         ) -> tuple[Array, Array]:
    """Solve the (n, 2) normal equations with an optional prior on the second parameter.

    ``prior_rows`` = (weight (n,), value (n,), current E (n,)): adds ``w (E + δ − value)²``.
    """
    w, value, e_now = prior_rows
    a = np.einsum("nbi,nbc,ncj->nij", design, cinv, design)
    b = np.einsum("nbi,nbc,nc->ni", design, cinv, resid)
    a[:, 1, 1] += w
    a[:, [0, 1], [0, 1]] += 1e-10   # keeps stars without bands (not fitted) invertible
    b[:, 1] += w * (value - e_now)
    cov = np.linalg.inv(a)
    return np.einsum("nij,nj->ni", cov, b), cov


def _solve(anchor: Anchor, ext: Array, e_ext: Array, mag: Array, var_phot: Array,
           used: NDArray[np.bool_], prior: Array, prior_err: Array,
           has_prior: NDArray[np.bool_]) -> _State:
    """Gauss–Newton for (μ, E) with E clamped to [0, ebv_max]; the SED covariance is
    evaluated at the start and again before the last step."""
    n, nb = mag.shape
    w_prior = np.where(has_prior, 1.0 / np.where(has_prior, prior_err, 1.0) ** 2, 0.0)
    value = np.where(has_prior, prior, 0.0)
    m_obs = np.where(used, mag, 0.0)
    ebv = np.full(n, 0.1)
    model, g, q = anchor.band_model(ext, ebv)
    diff = np.where(used, m_obs - model, 0.0)
    mu = diff.sum(axis=1) / np.maximum(used.sum(axis=1), 1)
    cinv = _inv(_masked_cov(anchor.sed_covariance(q, e_ext), var_phot, used))
    free = np.ones(n, bool)
    for it in range(N_ITER):
        model, g, q = anchor.band_model(ext, ebv)
        if it == N_ITER - 2:
            cinv = _inv(_masked_cov(anchor.sed_covariance(q, e_ext), var_phot, used))
        design = np.stack([np.ones((n, nb)), np.where(free[:, None], g, 0.0)], axis=2)
        design = np.where(used[:, :, None], np.nan_to_num(design), 0.0)
        resid = np.where(used, m_obs - (mu[:, None] + np.nan_to_num(model)), 0.0)
        step, _ = _gls(design, resid, cinv, (np.where(free, w_prior, 1.0), value, ebv))
        mu = mu + step[:, 0]
        ebv = np.where(free, ebv + step[:, 1], 0.0)
        free = ebv > 0   # negative E: clamp to 0 and fit μ alone from here on
        ebv = np.clip(ebv, 0.0, anchor.config.ebv_max)
    model, g, q = anchor.band_model(ext, ebv)
    full = np.stack([np.ones((n, nb)), np.nan_to_num(g)], axis=2)
    full = np.where(used[:, :, None], full, 0.0)
    resid = np.where(used, m_obs - (mu[:, None] + np.nan_to_num(model)), 0.0)
    _, cov = _gls(full, np.zeros((n, nb)), cinv, (w_prior, value, ebv))
    chi2 = np.einsum("nb,nbc,nc->n", resid, cinv, resid) + w_prior * (ebv - value) ** 2
    var = _inv(cinv)
    gain = np.einsum("nij,nbj,nbc->nic", cov, full, cinv)
    return _State(mu=mu, ebv=ebv, cov=cov, chi2=chi2,
                  model=mu[:, None] + np.nan_to_num(model),
                  design=np.stack([np.ones((n, nb)), np.nan_to_num(g)], axis=2), var=var,
                  gain=gain)


def _deletion_residuals(state: _State, mag: Array, used: NDArray[np.bool_], prior: Array,
                        prior_err: Array, has_prior: NDArray[np.bool_]) -> Array:
    """(n, nb) leave-one-out standardised residuals, linearised at ``state`` (NaN: band not
    in the fit or too few left to predict it)."""
    n, nb = mag.shape
    out = np.full((n, nb), np.nan)
    w_prior = np.where(has_prior, 1.0 / np.where(has_prior, prior_err, 1.0) ** 2, 0.0)
    value = np.where(has_prior, prior, 0.0)
    for b in range(nb):
        rows = used[:, b] & (used.sum(axis=1) - 1 + has_prior >= 2)
        if not rows.any():
            continue
        u = used[rows].copy()
        u[:, b] = False
        var = state.var[rows]
        both = u[:, :, None] & u[:, None, :]
        c = np.where(both, var, 0.0)
        idx = np.arange(nb)
        c[:, idx, idx] = np.where(u, np.diagonal(var, axis1=1, axis2=2), _BIG)
        cinv = np.linalg.inv(c)
        design = np.where(u[:, :, None], state.design[rows], 0.0)
        resid = np.where(u, mag[rows] - state.model[rows], 0.0)
        step, cov = _gls(design, resid, cinv, (w_prior[rows], value[rows],
                                               state.ebv[rows]))
        d_b = state.design[rows, b]
        pred = state.model[rows, b] + np.einsum("ni,ni->n", d_b, step)
        var_pred = np.einsum("ni,nij,nj->n", d_b, cov, d_b)
        out[rows, b] = (mag[rows, b] - pred) / np.sqrt(var[:, b, b] + var_pred)
    return out
