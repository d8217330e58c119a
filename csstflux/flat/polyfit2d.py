"""Weighted 2D polynomial fits over a detector, built on normal equations.

The large-scale flat of one detector at one wavelength is a polynomial of total order ``N``
(paper §5: ``N = 2``, fitted to the flux ratios of ~400 stars), ``f = Σ_{i+j≤N} c_ij u^i v^j``,
in pixel coordinates mapped from the detector's full extent (pixel edges ``-0.5 … n - 0.5``)
onto ``u, v ∈ [-1, 1]`` (:func:`scale_coords`), which keeps the normal matrix well conditioned
on 9k × 9k detectors. Terms are ordered by total degree, then by decreasing power of ``u``
(:func:`term_powers`): ``1, u, v, u², uv, v², …``.

Everything is expressed through the weighted normal equations ``AᵀWA c = AᵀWb``. They are
additive over stars, so the stars of many exposures can be reduced chunk by chunk (a Dask tree
reduction is ``sum`` over :class:`NormalEquations`) and solved once (:func:`solve`). Every
function is batched over wavelength: ``values`` and ``weights`` are ``(n_star, n_wave)``, and
the positions are either ``(n_star,)`` (the same for every wavelength) or ``(n_star, n_wave)``
(slitless spectra land at different pixels for different wavelengths). A non-finite value or
weight, or a zero weight, drops that star at that wavelength.

Weights are inverse variances, ``1/σ²``: the covariance returned by :func:`solve` is then the
formal ``(AᵀWA)⁻¹``, not rescaled by the reduced χ² (multiply by it when the errors are known
only up to a factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]
Shape = tuple[int, int]

#: Total order of the paper's flat-field polynomial (§5: a 2nd-order 2D polynomial).
DEFAULT_ORDER = 2
#: Relative eigenvalue floor below which a normal matrix counts as singular.
SINGULAR_RTOL = 1e-12


def term_powers(order: int) -> list[tuple[int, int]]:
    """Powers ``(i, j)`` of ``u^i v^j`` for every term with ``i + j ≤ order``, in fit order."""
    if order < 0:
        raise ValueError(f"polynomial order must be >= 0, got {order}")
    return [(d - j, j) for d in range(order + 1) for j in range(d + 1)]


def n_terms(order: int) -> int:
    """Number of terms of a 2D polynomial of total order ``order``: (N+1)(N+2)/2."""
    return (order + 1) * (order + 2) // 2


def scale_coords(x: ArrayLike, y: ArrayLike, shape: Shape) -> tuple[Array, Array]:
    """Map pixel coordinates onto [-1, 1] over the detector.

    Parameters
    ----------
    x, y : array_like
        Pixel coordinates (0-based, pixel centres at integers), any matching shapes.
    shape : (int, int)
        Detector image shape in numpy order, ``(n_y, n_x)`` pixels.

    Returns
    -------
    u, v : ndarray
        ``u = (2x + 1)/n_x - 1``, so the outer pixel edges -0.5 and n_x - 0.5 map to ∓1.
    """
    ny, nx = _check_shape(shape)
    u = (2.0 * np.asarray(x, dtype=float) + 1.0) / nx - 1.0
    v = (2.0 * np.asarray(y, dtype=float) + 1.0) / ny - 1.0
    return u, v


def design_matrix(x: ArrayLike, y: ArrayLike, order: int = DEFAULT_ORDER, *,
                  shape: Shape) -> Array:
    """Polynomial design matrix.

    Parameters
    ----------
    x, y : array_like, shape (...)
        Pixel coordinates.
    order : int
        Total polynomial order N.
    shape : (int, int)
        Detector shape ``(n_y, n_x)``.

    Returns
    -------
    ndarray, shape (..., n_terms)
        ``A[..., t] = u^i v^j`` for term ``t = (i, j)`` of :func:`term_powers`.
    """
    u, v = scale_coords(x, y, shape)
    u, v = np.broadcast_arrays(u, v)
    upow = [np.ones_like(u)]
    vpow = [np.ones_like(v)]
    for _ in range(order):
        upow.append(upow[-1] * u)
        vpow.append(vpow[-1] * v)
    return np.stack([upow[i] * vpow[j] for i, j in term_powers(order)], axis=-1)


@dataclass(frozen=True)
class NormalEquations:
    """Weighted normal equations of a batch of stars; add two to pool their stars.

    Leading axes ``...`` are ``()`` for a single fit or ``(n_wave,)`` for a batch.
    """

    ata: Array
    """AᵀWA, shape (..., n_terms, n_terms)."""
    atb: Array
    """AᵀWb, shape (..., n_terms)."""
    btb: Array
    """Σ w b², shape (...): with the solution gives χ² = btb − c·atb."""
    n: NDArray[np.int64]
    """Number of stars that contributed (positive finite weight), shape (...)."""
    order: int
    """Total polynomial order."""
    shape: Shape
    """Detector shape ``(n_y, n_x)`` used to scale the coordinates."""

    def __add__(self, other: object) -> NormalEquations:
        if not isinstance(other, NormalEquations):
            return NotImplemented
        if other.order != self.order or tuple(other.shape) != tuple(self.shape):
            raise ValueError(f"cannot add normal equations of order {self.order} on "
                             f"{self.shape} and order {other.order} on {other.shape}")
        if other.ata.shape != self.ata.shape:
            raise ValueError(f"cannot add normal equations of shapes {self.ata.shape} "
                             f"and {other.ata.shape} (different number of wavelengths?)")
        return NormalEquations(self.ata + other.ata, self.atb + other.atb,
                               self.btb + other.btb, self.n + other.n, self.order, self.shape)

    def __radd__(self, other: object) -> NormalEquations:
        if isinstance(other, int) and other == 0:  # lets builtin sum() start from 0
            return self
        return self.__add__(other)


def _prepare(x: ArrayLike, y: ArrayLike, values: ArrayLike, weights: ArrayLike
             ) -> tuple[Array, Array, Array, Array, bool]:
    """Promote to batched (n_star, n_wave) values and weights with bad entries zero-weighted."""
    b = np.asarray(values, dtype=float)
    w = np.broadcast_to(np.asarray(weights, dtype=float), b.shape)
    single = b.ndim == 1
    if single:
        b, w = b[:, None], w[:, None]
    if b.ndim != 2:
        raise ValueError(f"values must be (n_star,) or (n_star, n_wave), got shape {b.shape}")
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.shape not in ((b.shape[0],), b.shape):
        raise ValueError(f"positions of shapes {xa.shape}, {ya.shape} do not match values "
                         f"of shape {b.shape}")
    pos_ok = np.isfinite(xa) & np.isfinite(ya)
    good = np.isfinite(b) & np.isfinite(w) & (w > 0) & (pos_ok if xa.ndim == 2 else
                                                          pos_ok[:, None])
    w = np.where(good, w, 0.0)
    b = np.where(good, b, 0.0)
    return xa, ya, b, w, single


def normal_equations(x: ArrayLike, y: ArrayLike, values: ArrayLike, weights: ArrayLike,
                     order: int = DEFAULT_ORDER, *, shape: Shape) -> NormalEquations:
    """Weighted normal equations of the stars in one chunk.

    Parameters
    ----------
    x, y : array_like, shape (n_star,) or (n_star, n_wave)
        Pixel coordinates of each star (per wavelength when 2D).
    values : array_like, shape (n_star,) or (n_star, n_wave)
        Values to fit (e.g. observed / predicted flux ratios).
    weights : array_like, broadcastable to ``values``
        Inverse variances 1/σ²; zero, NaN or a NaN value drop the entry.
    order : int
        Total polynomial order N (default 2).
    shape : (int, int)
        Detector shape ``(n_y, n_x)`` in pixels.

    Returns
    -------
    NormalEquations
        With leading axis (n_wave,) when ``values`` is 2D, none when it is 1D.
    """
    xa, ya, b, w, single = _prepare(x, y, values, weights)
    a = design_matrix(xa, ya, order, shape=shape)
    t = a.shape[-1]
    if a.ndim == 2:  # same positions at every wavelength: one matmul
        outer = (a[:, :, None] * a[:, None, :]).reshape(a.shape[0], t * t)
        ata = (w.T @ outer).reshape(-1, t, t)
        atb = (w * b).T @ a
    else:
        ata = np.einsum("sw,swt,swu->wtu", w, a, a, optimize=True)
        atb = np.einsum("sw,swt->wt", w * b, a, optimize=True)
    btb = np.sum(w * b * b, axis=0)
    n = np.sum(w > 0, axis=0).astype(np.int64)
    if single:
        ata, atb, btb, n = ata[0], atb[0], btb[0], n[0]
    return NormalEquations(ata, atb, np.asarray(btb), np.asarray(n), order,
                           (int(shape[0]), int(shape[1])))


@dataclass(frozen=True)
class PolyFit:
    """Solution of a (batched) 2D polynomial fit.

    Leading axes ``...`` are ``()`` or ``(n_wave,)``; rows that could not be solved are NaN.
    """

    coeffs: Array
    """Coefficients, shape (..., n_terms), in :func:`term_powers` order."""
    cov: Array
    """Covariance of the coefficients, shape (..., n_terms, n_terms): (AᵀWA)⁻¹."""
    ok: NDArray[np.bool_]
    """False where the normal matrix was singular or had fewer stars than terms, shape (...)."""
    chi2: Array
    """χ² of the kept stars, shape (...)."""
    n: NDArray[np.int64]
    """Number of stars used, shape (...)."""
    order: int
    """Total polynomial order."""
    shape: Shape
    """Detector shape ``(n_y, n_x)``."""
    kept: NDArray[np.bool_] | None = None
    """Stars kept after sigma clipping, shape (n_star, ...); None for :func:`solve`."""
    n_iter: int = 0
    """Clipping iterations performed (0 for :func:`solve`)."""

    @property
    def dof(self) -> NDArray[np.int64]:
        """Degrees of freedom, n − n_terms."""
        return np.asarray(self.n - n_terms(self.order))

    @property
    def reduced_chi2(self) -> Array:
        """χ² / dof (NaN where dof ≤ 0)."""
        dof = self.dof
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dof > 0, self.chi2 / np.maximum(dof, 1), np.nan)


def solve(neq: NormalEquations) -> PolyFit:
    """Solve normal equations by Cholesky decomposition.

    A wavelength whose normal matrix is singular (smallest eigenvalue below
    ``SINGULAR_RTOL`` × largest, or non-positive) or that has fewer stars than terms gets NaN
    coefficients and covariance and ``ok = False``; nothing raises.

    Returns
    -------
    PolyFit
        coeffs (..., n_terms), cov (..., n_terms, n_terms), ok, and chi2 = btb − c·atb
        (which cancels: accurate only to ~1e-16 × btb; :func:`fit_sigma_clip` sums residuals).
    """
    t = n_terms(neq.order)
    ata = np.asarray(neq.ata, dtype=float).reshape(-1, t, t)
    atb = np.asarray(neq.atb, dtype=float).reshape(-1, t)
    n = np.asarray(neq.n).reshape(-1)
    coeffs = np.full((ata.shape[0], t), np.nan)
    cov = np.full((ata.shape[0], t, t), np.nan)
    finite = np.isfinite(ata).all(axis=(1, 2)) & np.isfinite(atb).all(axis=1)
    eig = np.linalg.eigvalsh(np.where(finite[:, None, None], ata, 0.0))
    ok = finite & (n >= t) & (eig[:, 0] > SINGULAR_RTOL * np.maximum(eig[:, -1], 0.0))
    idx = np.flatnonzero(ok)
    try:
        chol = np.linalg.cholesky(ata[idx])
    except np.linalg.LinAlgError:  # one of them is not positive definite: go one by one
        chol = np.full((idx.size, t, t), np.nan)
        for i, k in enumerate(idx):
            try:
                chol[i] = np.linalg.cholesky(ata[k])
            except np.linalg.LinAlgError:
                ok[k] = False
    good = np.isfinite(chol).all(axis=(1, 2))
    idx, chol = idx[good], chol[good]
    inv_l = np.linalg.solve(chol, np.broadcast_to(np.eye(t), chol.shape))  # L⁻¹
    cov[idx] = np.swapaxes(inv_l, 1, 2) @ inv_l  # (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹
    coeffs[idx] = np.einsum("wtu,wu->wt", cov[idx], atb[idx])
    chi2 = np.asarray(neq.btb, dtype=float).reshape(-1) - np.einsum("wt,wt->w", coeffs, atb)
    lead = np.shape(neq.n)
    return PolyFit(coeffs.reshape(*lead, t), cov.reshape(*lead, t, t), ok.reshape(lead),
                   np.maximum(chi2, 0.0).reshape(lead), np.asarray(neq.n), neq.order,
                   neq.shape)


def evaluate(coeffs: ArrayLike, x: ArrayLike, y: ArrayLike, order: int = DEFAULT_ORDER, *,
             shape: Shape) -> Array:
    """Evaluate the polynomial(s).

    Parameters
    ----------
    coeffs : array_like, shape (n_terms,) or (n_wave, n_terms)
    x, y : array_like, shape (n,) or, with 2D ``coeffs``, (n, n_wave)
        Pixel coordinates.

    Returns
    -------
    ndarray, shape (n,) or (n, n_wave)
    """
    c = np.asarray(coeffs, dtype=float)
    a = design_matrix(x, y, order, shape=shape)
    if c.ndim == 1:
        return a @ c
    if a.ndim == 2:
        return a @ c.T
    return np.einsum("swt,wt->sw", a, c)


def evaluate_with_error(coeffs: ArrayLike, cov: ArrayLike, x: ArrayLike, y: ArrayLike,
                        order: int = DEFAULT_ORDER, *, shape: Shape) -> tuple[Array, Array]:
    """Evaluate the polynomial(s) and their 1σ error, σ² = a Cov aᵀ.

    Shapes as in :func:`evaluate`; ``cov`` is (n_terms, n_terms) or (n_wave, n_terms, n_terms).

    Returns
    -------
    value, sigma : ndarray, shape (n,) or (n, n_wave)
    """
    c = np.asarray(coeffs, dtype=float)
    s = np.asarray(cov, dtype=float)
    a = design_matrix(x, y, order, shape=shape)
    if c.ndim == 1:
        var = np.einsum("...t,tu,...u->...", a, s, a)
    elif a.ndim == 2:
        var = np.einsum("st,wtu,su->sw", a, s, a, optimize=True)
    else:
        var = np.einsum("swt,wtu,swu->sw", a, s, a, optimize=True)
    return evaluate(c, x, y, order, shape=shape), np.sqrt(np.maximum(var, 0.0))


def fit_sigma_clip(x: ArrayLike, y: ArrayLike, values: ArrayLike, errors: ArrayLike,
                   order: int = DEFAULT_ORDER, *, shape: Shape, nsigma: float = 3.0,
                   max_iter: int = 5) -> PolyFit:
    """Weighted fit with iterative sigma clipping, independently per wavelength.

    Each iteration fits the kept stars with weights 1/σ², forms ``z = (value − model)/σ`` for
    every star and keeps those with ``|z| ≤ nsigma · max(1, s)``, where ``s = 1.4826 · MAD(z)``
    of the kept stars: the errors set the floor of the threshold and a scatter wider than they
    claim widens it. Clipped stars may come back. Stops when no mask changes or after
    ``max_iter`` clipping passes (``n_iter`` of the result).

    Parameters
    ----------
    x, y : array_like, shape (n_star,) or (n_star, n_wave)
    values, errors : array_like, shape (n_star,) or (n_star, n_wave)
        Non-finite or non-positive errors exclude the entry.

    Returns
    -------
    PolyFit
        With ``kept`` (n_star,) or (n_star, n_wave) and ``chi2`` over the kept stars.
    """
    b = np.asarray(values, dtype=float)
    err = np.broadcast_to(np.asarray(errors, dtype=float), b.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        w0 = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
    xa, ya, bb, w0, single = _prepare(x, y, b, w0)
    sig = np.sqrt(np.divide(1.0, w0, out=np.full_like(w0, np.inf), where=w0 > 0))
    kept = w0 > 0

    def fit_kept() -> tuple[PolyFit, Array]:
        f = solve(normal_equations(xa, ya, bb, np.where(kept, w0, 0.0), order, shape=shape))
        return f, np.where(w0 > 0, (bb - evaluate(f.coeffs, xa, ya, order, shape=shape)) / sig,
                           np.nan)

    fit, z = fit_kept()
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        zk = np.where(kept, z, np.nan)
        scale = 1.4826 * _nanmedian_cols(np.abs(zk - _nanmedian_cols(zk)))
        thresh = nsigma * np.maximum(1.0, np.nan_to_num(scale, nan=1.0))
        new = (w0 > 0) & (np.abs(z) <= thresh) & fit.ok
        if np.array_equal(new, kept):
            break
        kept = new
        fit, z = fit_kept()
    chi2 = np.sum(np.where(kept, z, 0.0) ** 2, axis=0)
    chi2 = np.where(fit.ok, chi2, np.nan)
    if single:
        return PolyFit(fit.coeffs[0], fit.cov[0], fit.ok[0], chi2[0], fit.n[0], order,
                       fit.shape, kept[:, 0], n_iter)
    return PolyFit(fit.coeffs, fit.cov, fit.ok, chi2, fit.n, order, fit.shape, kept, n_iter)


def _nanmedian_cols(a: Array) -> Array:
    """Median over axis 0 ignoring NaN, NaN (without a warning) for an all-NaN column."""
    out = np.full(a.shape[1:], np.nan)
    has = np.isfinite(a).any(axis=0)
    if has.any():
        out[has] = np.nanmedian(a[:, has], axis=0)
    return out


def _check_shape(shape: Any) -> tuple[int, int]:
    dims = tuple(int(v) for v in shape) if isinstance(shape, tuple | list) else ()
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"shape must be a positive (n_y, n_x), got {shape!r}")
    return dims[0], dims[1]
