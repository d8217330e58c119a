"""Gaussian-process regression from stellar parameters to spectra (paper, Appendix A).

One GP is shared by every wavelength pixel (multi-output): the kernel is a squared exponential
with an isotropic length scale plus white noise, on z-scored (Teff, log g, [Fe/H])::

    K(x, x') = σ_f² exp(-|x - x'|² / 2l²) + σ_n² δ(x, x')

Targets are centred on their mean spectrum. The hyperparameters {σ_f, σ_n, l} maximise the
marginal likelihood summed over pixels: the likelihood of scikit-learn's
:class:`~sklearn.gaussian_process.GaussianProcessRegressor` for this kernel (tests compare the two),
evaluated through the targets' n × n scatter matrix so that its cost does not depend on the number
of pixels. The fitted process is then held as
plain arrays (training inputs, Cholesky factor, weights) so that prediction and the analytic
leave-one-out residuals need only numpy, and a trained process can be stored compactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
from numpy.typing import NDArray
from scipy.spatial import Delaunay

Array = NDArray[np.float64]


@dataclass(frozen=True)
class GPHyperparameters:
    """Kernel hyperparameters in the units of the (centred) targets and z-scored inputs."""

    sigma_f: float
    """Signal standard deviation."""
    sigma_n: float
    """White-noise standard deviation."""
    length_scale: float
    """Isotropic length scale, in standard deviations of the inputs."""

    def to_dict(self) -> dict[str, float]:
        return {"sigma_f": self.sigma_f, "sigma_n": self.sigma_n,
                "length_scale": self.length_scale}


@dataclass(frozen=True)
class GaussianProcess:
    """A trained multi-output GP held as arrays.

    ``x_train``: (n, d) z-scored inputs. ``weights``: (n, p) = (K + σ_n² I)⁻¹ (y − y_mean).
    ``chol``: (n, n) lower Cholesky factor of K + σ_n² I. ``y_mean``: (p,).
    """

    x_mean: Array
    x_scale: Array
    x_train: Array
    y_mean: Array
    weights: Array
    chol: Array
    hyper: GPHyperparameters

    def _z(self, x: Array) -> Array:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != self.x_mean.size:
            raise ValueError(f"expected {self.x_mean.size} parameters per star, got {x.shape[1]}")
        return (x - self.x_mean) / self.x_scale

    def _k(self, za: Array, zb: Array) -> Array:
        return self.hyper.sigma_f**2 * np.exp(-0.5 * _sqdist(za, zb) / self.hyper.length_scale**2)

    def predict(self, x: Array) -> tuple[Array, Array]:
        """Predictive mean (m, p) and latent standard deviation (m,) at parameters ``x`` (m, d).

        The standard deviation is that of the noise-free function, the same for every pixel
        (one kernel for all outputs), in target units.
        """
        z = self._z(x)
        ks = self._k(z, self.x_train)
        mean = self.y_mean + ks @ self.weights
        v = scipy.linalg.solve_triangular(self.chol, ks.T, lower=True)
        var = self.hyper.sigma_f**2 - np.sum(v**2, axis=0)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def loo_residuals(self) -> Array:
        """Leave-one-out residuals y_i − μ₋ᵢ (n, p), exact and analytic (Rasmussen & Williams
        2006, eq. 5.12): the weights divided by the diagonal of (K + σ_n² I)⁻¹."""
        n = self.chol.shape[0]
        inv_chol = scipy.linalg.solve_triangular(self.chol, np.eye(n), lower=True)
        kinv_diag = np.sum(inv_chol**2, axis=0)
        return self.weights / kinv_diag[:, None]

    def in_hull(self, x: Array) -> NDArray[np.bool_]:
        """True where ``x`` (m, d) lies inside the convex hull of the training inputs."""
        z = self._z(x)
        return np.asarray(Delaunay(self.x_train).find_simplex(z) >= 0)

    def to_arrays(self) -> dict[str, Any]:
        """Plain arrays for storage; :meth:`from_arrays` inverts it."""
        return {"x_mean": self.x_mean, "x_scale": self.x_scale, "x_train": self.x_train,
                "y_mean": self.y_mean, "weights": self.weights, "chol": self.chol,
                "hyper": np.array([self.hyper.sigma_f, self.hyper.sigma_n,
                                   self.hyper.length_scale])}

    @classmethod
    def from_arrays(cls, a: dict[str, Any]) -> GaussianProcess:
        h = np.asarray(a["hyper"], dtype=np.float64)

        def arr(key: str) -> Array:
            return np.asarray(a[key], dtype=np.float64)

        return cls(x_mean=arr("x_mean"), x_scale=arr("x_scale"), x_train=arr("x_train"),
                   y_mean=arr("y_mean"), weights=arr("weights"), chol=arr("chol"),
                   hyper=GPHyperparameters(float(h[0]), float(h[1]), float(h[2])))


def log_marginal_likelihood(theta: Array, z: Array, yc: Array | None = None, *,
                            scatter: Array | None = None, n_out: int | None = None,
                            ) -> tuple[float, Array]:
    """Log marginal likelihood of the shared-kernel multi-output GP and its gradient.

    ``theta`` = (ln σ_f², ln l, ln σ_n²). With p outputs sharing one kernel K, and
    S = Y Yᵀ (n, n) the outputs' scatter matrix (computed once)::

        ln L = -½ tr(K⁻¹ S) - (p/2) ln|K| - (n p / 2) ln 2π
        ∂ln L/∂θ = ½ tr((K⁻¹ S K⁻¹ - p K⁻¹) ∂K/∂θ)

    so each evaluation costs O(n³) whatever the number of pixels (Rasmussen & Williams 2006,
    eqs. 2.30 and 5.9, summed over independent outputs).
    """
    if scatter is None:
        assert yc is not None
        scatter = yc @ yc.T
        n_out = yc.shape[1]
    assert n_out is not None
    n = z.shape[0]
    sf2, ell, sn2 = np.exp(theta)
    d2 = _sqdist(z, z)
    r = np.exp(-0.5 * d2 / ell**2)
    k = sf2 * r
    k[np.diag_indices(n)] += sn2 + 1e-10
    try:
        c = scipy.linalg.cho_factor(k, lower=True)
    except np.linalg.LinAlgError:
        return -np.inf, np.zeros(3)
    kinv = scipy.linalg.cho_solve(c, np.eye(n))
    kinv_s = scipy.linalg.cho_solve(c, scatter)
    logdet = 2.0 * np.sum(np.log(np.diag(c[0])))
    lml = -0.5 * np.trace(kinv_s) - 0.5 * n_out * logdet - 0.5 * n * n_out * np.log(2 * np.pi)
    inner = kinv_s @ kinv - n_out * kinv
    dk = (sf2 * r, sf2 * r * d2 / ell**2)
    grad = np.array([0.5 * np.sum(inner * dk[0]), 0.5 * np.sum(inner * dk[1]),
                     0.5 * sn2 * np.trace(inner)])
    return float(lml), grad


def fit_gp(x: Array, y: Array, *, seed: int = 0, restarts: int = 3,
           noise_bounds: tuple[float, float] = (1e-12, 1.0)) -> GaussianProcess:
    """Fit the shared-kernel GP of Appendix A by maximum marginal likelihood.

    The likelihood is that of scikit-learn's ``GaussianProcessRegressor`` with kernel
    ``ConstantKernel * RBF + WhiteKernel`` on multi-output targets (the tests check the two
    agree), but evaluated through the n × n scatter matrix of the targets, so its cost does not
    grow with the number of pixels (scikit-learn forms an n × n × p tensor per evaluation: minutes
    for a few hundred stars × 574 pixels). L-BFGS-B from the data-driven start plus ``restarts``
    seeded random starts; the best optimum wins.

    Parameters
    ----------
    x : (n, d) float
        Stellar parameters (e.g. Teff K, log g dex, [Fe/H] dex); z-scored internally.
    y : (n, p) float
        Targets (e.g. scaled SEDs); must be finite. Centred on their mean internally.
    seed, restarts : int
        Seed and number of random restarts of the optimiser.
    noise_bounds : (float, float)
        Bounds on the white-noise *variance* σ_n².
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} parameter rows but {y.shape[0]} target rows")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("GP inputs and targets must be finite")
    x_mean = x.mean(axis=0)
    x_scale = x.std(axis=0)
    x_scale[x_scale == 0] = 1.0
    z = (x - x_mean) / x_scale
    yc = y - y.mean(axis=0)
    scatter = yc @ yc.T
    amp = float(np.mean(np.var(yc, axis=0))) or 1.0
    bounds = [(np.log(amp * 1e-4), np.log(amp * 1e4)), (np.log(1e-2), np.log(1e3)),
              (np.log(noise_bounds[0]), np.log(noise_bounds[1]))]
    starts = [np.array([np.log(amp), 0.0, np.log(max(amp * 1e-3, noise_bounds[0] * 10))])]
    rng = np.random.default_rng(seed)
    starts += [np.array([rng.uniform(lo, hi) for lo, hi in bounds]) for _ in range(restarts)]

    def objective(theta: Array) -> tuple[float, Array]:
        lml, grad = log_marginal_likelihood(theta, z, scatter=scatter, n_out=y.shape[1])
        if not np.isfinite(lml):
            return 1e300, np.zeros(3)
        return -lml, -grad

    best = None
    for t0 in starts:
        res = scipy.optimize.minimize(objective, t0, jac=True, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    sf2, ell, sn2 = np.exp(best.x)
    hyper = GPHyperparameters(sigma_f=float(np.sqrt(sf2)), sigma_n=float(np.sqrt(sn2)),
                              length_scale=float(ell))
    return condition_gp(x, y, hyper, x_mean=x_mean, x_scale=x_scale)


def condition_gp(x: Array, y: Array, hyper: GPHyperparameters, *, x_mean: Array | None = None,
                 x_scale: Array | None = None, y_mean: Array | None = None) -> GaussianProcess:
    """The GP with fixed ``hyper`` conditioned on (x (n, d), y (n, p)); no optimisation.

    ``x_mean``/``x_scale`` default to the z-scoring of ``x`` itself and ``y_mean`` (the GP's
    constant mean function, (p,)) to the mean of ``y``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x_mean is None:
        x_mean = x.mean(axis=0)
    if x_scale is None:
        x_scale = x.std(axis=0)
        x_scale[x_scale == 0] = 1.0
    z = (x - x_mean) / x_scale
    if y_mean is None:
        y_mean = y.mean(axis=0)
    kmat = hyper.sigma_f**2 * np.exp(-0.5 * _sqdist(z, z) / hyper.length_scale**2)
    kmat[np.diag_indices_from(kmat)] += hyper.sigma_n**2 + 1e-10
    chol: Array = np.asarray(np.linalg.cholesky(kmat), dtype=np.float64)
    weights = scipy.linalg.cho_solve((chol, True), y - y_mean)
    return GaussianProcess(x_mean, x_scale, z, y_mean, weights, chol, hyper)


def _sqdist(a: Array, b: Array) -> Array:
    return np.maximum(np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T, 0.0)
