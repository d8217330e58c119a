"""The UaRA-net loss, eq. (17): Gaussian negative log-likelihood of the relative residual.

With ``r = (μ − Y) / Y`` and ``r ~ N(0, σ²)`` (eqs. 12–15), the loss per pixel is

    ℓ = r² / (2σ²) + log σ + log Y,

averaged over the valid pixels of the batch. ``log Y`` does not depend on the parameters; it is
kept so the value equals eq. (17) exactly (the constant ``½ log 2π`` is absent there and here).

β-NLL (Seitzer et al. 2022, "On the pitfalls of heteroscedastic uncertainty estimation"): the
Gaussian likelihood lets a pixel with a large σ keep a biased mean, since its residual is
divided by σ². :class:`BetaNLL` multiplies each pixel's ℓ by ``σ^(2β)`` with the gradient of
that factor stopped, so the mean is fitted as by a weighted squared error for β = 1 and by the
plain likelihood for β = 0, while σ still converges to the residual scatter.

Targets carry a per-pixel weight: ``y_true[:, 0]`` is the scaled target SED ``Y`` (> 0 where
valid) and ``y_true[:, 1]`` the weight, 1 for valid and 0 for masked pixels. A masked pixel adds
nothing to the sum and does not count in the mean; its ``Y`` may be anything (0, negative, NaN):
it is replaced by 1 before any arithmetic, so neither the value nor the gradient sees it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.model._keras import keras

ops = keras.ops

__all__ = ["BetaNLL", "make_loss", "uaranet_loss", "uaranet_loss_numpy", "pack_targets"]


@keras.saving.register_keras_serializable(package="csstflux")
def uaranet_loss(y_true: Any, y_pred: Any) -> Any:
    """Eq. (17), averaged over the valid pixels of the batch.

    Parameters
    ----------
    y_true : tensor, (N, 2, n_out)
        ``[:, 0]`` target SED ``Y``; ``[:, 1]`` pixel weight (1 valid, 0 masked; non-negative).
    y_pred : tensor, (N, 2, n_out)
        Model output: ``[:, 0]`` mean ``μ``; ``[:, 1]`` σ of the relative residual (> 0).

    Returns
    -------
    tensor, ()
        ``Σ w·ℓ / Σ w`` over all pixels of the batch; 0 when every pixel is masked.
    """
    return _loss(y_true, y_pred, 0.0)


def _loss(y_true: Any, y_pred: Any, beta: float) -> Any:
    y_true = ops.cast(y_true, y_pred.dtype)
    target, weight = y_true[:, 0, :], y_true[:, 1, :]
    mu, sigma = y_pred[:, 0, :], y_pred[:, 1, :]
    valid = weight > 0
    weight = ops.where(valid, weight, 0.0)              # NaN weight counts as masked
    target = ops.where(valid, target, 1.0)              # masked Y never reaches a division
    mu = ops.where(valid, mu, 1.0)
    r = (mu - target) / target                          # eq. (12)
    per_pixel = ops.square(r) / (2.0 * ops.square(sigma)) + ops.log(sigma) + ops.log(target)
    if beta:
        per_pixel = per_pixel * ops.stop_gradient(ops.power(sigma, 2.0 * beta))
    total = ops.sum(weight * per_pixel)
    return total / ops.maximum(ops.sum(weight), 1e-12)


@keras.saving.register_keras_serializable(package="csstflux")
class BetaNLL(keras.losses.Loss):
    """Eq. (17) with each pixel weighted by ``stop_gradient(σ^(2β))`` (module docstring)."""

    def __init__(self, beta: float = 0.5, name: str = "uaranet_beta_nll", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        self.beta = float(beta)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return _loss(y_true, y_pred, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta}


def make_loss(beta: float = 0.0) -> Any:
    """The training loss: eq. (17) itself for ``beta`` 0, else :class:`BetaNLL`."""
    return uaranet_loss if beta == 0 else BetaNLL(beta)


def uaranet_loss_numpy(y_true: ArrayLike, y_pred: ArrayLike, beta: float = 0.0) -> float:
    """Reference implementation of :func:`uaranet_loss` (and :class:`BetaNLL` for ``beta``)
    in float64 numpy (for tests).

    Parameters
    ----------
    y_true, y_pred : array_like, (N, 2, n_out)
        As for :func:`uaranet_loss`.
    beta : float
        β of :class:`BetaNLL` (0: eq. 17).

    Returns
    -------
    float
        The loss.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    w = t[:, 1]
    valid = w > 0
    if not valid.any():
        return 0.0
    y, mu, sigma, w = t[:, 0][valid], p[:, 0][valid], p[:, 1][valid], w[valid]
    r = (mu - y) / y
    per_pixel = (r**2 / (2 * sigma**2) + np.log(sigma) + np.log(y)) * sigma ** (2 * beta)
    return float(np.sum(w * per_pixel) / np.sum(w))


def pack_targets(sed: ArrayLike, valid: ArrayLike | None = None) -> NDArray[np.float32]:
    """Stack target SEDs and their pixel weights into the ``y_true`` layout of the loss.

    Parameters
    ----------
    sed : array_like, (N, n_out)
        Scaled target SEDs ``Y``.
    valid : array_like or None, (N, n_out)
        Pixel weights or a boolean validity mask; None marks every finite, positive pixel valid.

    Returns
    -------
    ndarray, (N, 2, n_out) float32
        ``[:, 0] = Y`` (masked pixels set to 1), ``[:, 1]`` = weight.
    """
    y = np.asarray(sed, dtype=np.float64)
    w = (np.isfinite(y) & (y > 0)) if valid is None else np.asarray(valid, dtype=np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), y.shape)
    y = np.where(w > 0, y, 1.0)
    return np.stack([y, w], axis=1).astype(np.float32)
