"""From fitted 2D flat polynomials to normalised flats with propagated errors.

A flat-field polynomial fitted to star flux ratios (:mod:`csstflux.flat.polyfit2d`) carries
the unknown overall throughput of the detector at that wavelength; the large-scale flat is
its shape, so it is divided by its own mean over the detector. Stacking the normalised flats
of all wavelengths gives the 3D flat-field cube (paper §5).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.flat.polyfit2d import DEFAULT_ORDER, Shape, design_matrix, term_powers

Array = NDArray[np.float64]


def detector_mean_functional(order: int) -> Array:
    """Mean of every term over the detector, shape (n_terms,).

    Over the square [-1, 1]², mean(u^i v^j) = m(i) m(j) with m(k) = 1/(k+1) for even k and 0
    for odd k; the detector mean of the polynomial is therefore the linear map μ·c.
    """
    def m(k: int) -> float:
        return 1.0 / (k + 1) if k % 2 == 0 else 0.0

    return np.array([m(i) * m(j) for i, j in term_powers(order)])


def normalise_flat(coeffs: ArrayLike, cov: ArrayLike, grid_x: ArrayLike, grid_y: ArrayLike,
                   order: int = DEFAULT_ORDER, *, shape: Shape) -> tuple[Array, Array]:
    """Flat on a coarse grid divided by its mean over the detector, with propagated errors.

    The flat ``f(g) = a_g·c`` on grid point ``g`` is divided by its exact mean over the whole
    detector area ``m = μ·c`` (:func:`detector_mean_functional`). The error is propagated
    through the linearised map ``c ↦ f/m`` with Jacobian ``J_g = (a_g − (f_g/m) μ)/m``, so the
    uncertainty of the mean itself, and its correlation with ``f_g``, are included:
    ``σ_g² = J_g Cov J_gᵀ``. An error that only rescales the whole flat therefore cancels
    (σ = 0), as it should.

    Parameters
    ----------
    coeffs : array_like, shape (n_terms,) or (n_wave, n_terms)
    cov : array_like, shape (n_terms, n_terms) or (n_wave, n_terms, n_terms)
    order : int
    shape : (int, int)
        Detector shape ``(n_y, n_x)``.
    grid_x : array_like, shape (n_gx,)
        Pixel x coordinates of the coarse grid.
    grid_y : array_like, shape (n_gy,)
        Pixel y coordinates of the coarse grid.

    Returns
    -------
    flat, sigma : ndarray, shape (n_gy, n_gx) or (n_wave, n_gy, n_gx)
        Dimensionless normalised flat (mean 1 over the detector) and its 1σ error.
    """
    c = np.asarray(coeffs, dtype=float)
    s = np.asarray(cov, dtype=float)
    single = c.ndim == 1
    c2 = c[None] if single else c
    s2 = s[None] if single else s
    gx, gy = np.asarray(grid_x, dtype=float), np.asarray(grid_y, dtype=float)
    xx, yy = np.meshgrid(gx, gy)
    a = design_matrix(xx.ravel(), yy.ravel(), order, shape=shape)  # (n_g, T)
    mu = detector_mean_functional(order)
    f = c2 @ a.T  # (W, n_g)
    m = c2 @ mu  # (W,)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = f / m[:, None]
        jac = (a[None, :, :] - ratio[:, :, None] * mu[None, None, :]) / m[:, None, None]
    var = np.einsum("wgt,wtu,wgu->wg", jac, s2, jac, optimize=True)
    out_shape = (c2.shape[0], gy.size, gx.size)
    flat = ratio.reshape(out_shape)
    sigma = np.sqrt(np.maximum(var, 0.0)).reshape(out_shape)
    return (flat[0], sigma[0]) if single else (flat, sigma)
