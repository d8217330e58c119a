"""Custom Keras layers of UaRA-net: the soft-threshold attention and the residual sub-unit.

Both layers use only ``keras.ops`` and Keras layers, so they run unchanged on the TensorFlow,
JAX and PyTorch backends, and both are registered as serialisable under the ``csstflux``
package so a ``.keras`` archive loads with ``safe_mode=True``.

Shapes follow Keras' channels-last 1D convention: ``(batch, width, channels)``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from csstflux.model._keras import keras

ops = keras.ops

__all__ = ["SoftThresholdAttention", "SubUnit", "GaussianHead", "sub_seed", "he_normal",
           "weights_follow"]


def sub_seed(seed: int | None, k: int) -> int | None:
    """Seed of the ``k``-th initialiser derived from ``seed`` (None stays None: random)."""
    return None if seed is None else int(seed) + k


#: True while a network is rebuilt only to receive saved weights (:func:`weights_follow`).
_WEIGHTS_FOLLOW: contextvars.ContextVar[bool] = contextvars.ContextVar("weights_follow",
                                                                       default=False)


@contextlib.contextmanager
def weights_follow() -> Iterator[None]:
    """Layers built inside get zero initial weights: saved weights are about to replace them.

    Drawing random initial weights only to overwrite them is not free: with JAX every random
    initialiser is compiled for its own shape (14 s of a 15 s model load on 2 CPU cores).
    """
    token = _WEIGHTS_FOLLOW.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FOLLOW.reset(token)


def he_normal(seed: int | None) -> keras.initializers.Initializer:
    """He-normal initialiser, the paper's choice for every convolution and dense layer (§4.1);
    zeros inside :func:`weights_follow`."""
    if _WEIGHTS_FOLLOW.get():
        return keras.initializers.Zeros()
    return keras.initializers.HeNormal(seed=seed)


@keras.saving.register_keras_serializable(package="csstflux")
class SoftThresholdAttention(keras.layers.Layer):
    """Soft thresholding of a feature map by a learnt, element-wise threshold (eqs. 4–6).

    The attention map ``M_c`` comes from three sequential 1D convolutions of ``|M|`` (same
    number of channels, kernel 3, ``'same'`` padding); the threshold is ``τ = M_c ⊗ |M|`` and the
    output is ``M' = sgn(M) · max(|M| − τ, 0)``.

    All three convolutions use ReLU, as eq. (4) writes (Φ_cov,ReLU), so ``M_c ≥ 0`` is not
    bounded above: where the network drives ``M_c`` to 1 or more the threshold reaches ``|M|`` and
    the feature is zeroed (a true soft threshold); where ``M_c`` lies in [0, 1) the feature is
    shrunk to ``M · (1 − M_c)``, keeping its sign. (A sigmoid last layer, as in the deep residual
    shrinkage networks of Zhao et al. 2019, would bound ``M_c`` below 1 and so, with eq. 5's
    element-wise product, never zero anything.)

    Parameters
    ----------
    channels : int
        Number of channels ``C`` of the feature map; the input must have ``C`` channels.
    kernel_size : int
        Width of the three attention convolutions.
    seed : int or None
        Base seed of the He-normal initialisers (None: random).

    Notes
    -----
    Input and output shape: ``(batch, width, channels)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if channels <= 0 or kernel_size <= 0:
            raise ValueError(f"channels and kernel_size must be positive, got {channels}, "
                             f"{kernel_size}")
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.seed = seed
        acts = ("relu", "relu", "relu")
        self.convs = [
            keras.layers.Conv1D(self.channels, self.kernel_size, padding="same", activation=a,
                                kernel_initializer=he_normal(sub_seed(seed, k)),
                                name=f"attention_conv{k + 1}")
            for k, a in enumerate(acts)
        ]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] != self.channels:
            raise ValueError(f"{self.name}: expected {self.channels} channels, "
                             f"got input shape {input_shape}")
        for conv in self.convs:
            conv.build(input_shape)  # 'same' padding, C -> C: shape unchanged
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        magnitude = ops.abs(inputs)
        m_c = magnitude
        for conv in self.convs:
            m_c = conv(m_c)
        tau = m_c * magnitude                                            # eq. (5)
        return ops.sign(inputs) * ops.maximum(magnitude - tau, 0.0)      # eq. (6)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="csstflux")
class SubUnit(keras.layers.Layer):
    """Residual sub-unit of the SED branch (Fig. 1a, Table 1).

    Main path: four ``Conv1D(filters, kernel_size)`` layers, each followed by batch
    normalisation and ReLU, the first carrying the stride; then
    :class:`SoftThresholdAttention`. Output = attention(main) + shortcut.

    The shortcut is the paper's zero-padded identity (He et al. 2016, option A): the input is
    subsampled by the stride, ``x[:, ::stride, :]``, which has the ``ceil(W / stride)`` samples of
    the ``'same'``-padded strided convolution, and its channel axis is padded with zeros up to
    ``filters``. It has no parameters. (For even ``W`` the strided convolution centres its
    outputs half a step to the right of the kept samples; the literature's shortcut accepts this.)

    Parameters
    ----------
    filters : int
        Output channels; must be at least the input channels.
    kernel_size : int
        Width of the four convolutions.
    stride : int
        Stride of the first convolution and of the shortcut's subsampling.
    seed : int or None
        Base seed of the He-normal initialisers (None: random).

    Notes
    -----
    Input shape ``(batch, W, C_in)``, output shape ``(batch, ceil(W / stride), filters)``.
    """

    def __init__(self, filters: int, kernel_size: int = 3, stride: int = 1,
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if filters <= 0 or kernel_size <= 0 or stride <= 0:
            raise ValueError(f"filters, kernel_size and stride must be positive, got "
                             f"{filters}, {kernel_size}, {stride}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.seed = seed
        self.convs = [
            keras.layers.Conv1D(self.filters, self.kernel_size,
                                strides=self.stride if k == 0 else 1, padding="same",
                                kernel_initializer=he_normal(sub_seed(seed, k)),
                                name=f"conv{k + 1}")
            for k in range(4)
        ]
        self.norms = [keras.layers.BatchNormalization(name=f"bn{k + 1}") for k in range(4)]
        self.attention = SoftThresholdAttention(self.filters, self.kernel_size,
                                                seed=sub_seed(seed, 4), name="attention")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] is None or input_shape[-1] > self.filters:
            raise ValueError(f"{self.name}: input channels {input_shape[-1]} must be known and "
                             f"at most filters={self.filters}")
        shape = tuple(input_shape)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
        self.attention.build(shape)
        super().build(input_shape)

    def _shortcut(self, inputs: Any) -> Any:
        x = inputs[:, :: self.stride, :] if self.stride > 1 else inputs
        extra = self.filters - inputs.shape[-1]
        if extra > 0:
            x = ops.pad(x, [[0, 0], [0, 0], [0, extra]])
        return x

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = ops.relu(norm(conv(x), training=training))
        return self.attention(x) + self._shortcut(inputs)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        w = input_shape[1]
        out_w = None if w is None else -(-w // self.stride)
        return (input_shape[0], out_w, self.filters)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, stride=self.stride,
                      seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="csstflux")
class GaussianHead(keras.layers.Layer):
    """Stack the mean and a strictly positive σ into the model's one output tensor.

    ``σ = softplus(s) + floor``, so σ > 0 for every input.

    Parameters
    ----------
    floor : float
        Smallest σ; keeps ``log σ`` and ``1/σ²`` of the loss finite.

    Notes
    -----
    Inputs ``[mu, s]``, each ``(batch, n_out)``; output ``(batch, 2, n_out)`` with ``[:, 0] = mu``
    and ``[:, 1] = σ``.
    """

    def __init__(self, floor: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not floor > 0:
            raise ValueError(f"floor must be positive, got {floor}")
        self.floor = float(floor)

    def call(self, inputs: list[Any]) -> Any:
        mu, s = inputs
        return ops.stack([mu, ops.softplus(s) + self.floor], axis=1)

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]
                             ) -> tuple[int | None, ...]:
        batch, n = input_shape[0]
        return (batch, 2, n)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(floor=self.floor)
        return config
