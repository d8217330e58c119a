"""UaRA-net, exactly after Table 1 of the paper, and its analytic parameter count.

The network has two branches (Fig. 1b). The SED branch maps a normalised LAMOST-like spectrum
``flux`` through a strided convolution, six residual sub-units, batch normalisation and global
average pooling to a latent vector ``Z`` (16 values), then through four dense layers to the
mean ``μ`` of the scaled CSST-like SED. The uncertainty branch maps the spectrum's errors
``flux_err`` through one dense layer, concatenates the result with ``Z`` (eq. 10) and maps it
through two dense layers to ``σ > 0``, the standard deviation of the *relative* residual
``r = (μ − Y) / Y`` of eq. (12).

The model has one output of shape ``(N, 2, n_out)``: ``[:, 0]`` is ``μ``, ``[:, 1]`` is ``σ``.
"""

from __future__ import annotations

import numpy as np

from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.model._keras import keras
from csstflux.model.backend import use_full_float32
from csstflux.model.layers import GaussianHead, SubUnit, he_normal

__all__ = ["build_uaranet", "count_params_table1", "FIRST_CONV", "SUB_UNITS", "SED_DENSE",
           "ERR_DENSE", "LATENT"]

#: First convolution of the SED branch, Table 1: (channels, kernel size, stride).
FIRST_CONV: tuple[int, int, int] = (4, 3, 2)
#: Sub-units 1–6 of the SED branch, Table 1: (channels, kernel size, stride).
SUB_UNITS: tuple[tuple[int, int, int], ...] = (
    (4, 3, 2), (4, 3, 1), (8, 3, 2), (8, 3, 1), (16, 3, 2), (16, 3, 1))
#: Hidden dense widths of the SED branch (FC1–FC3, ReLU); FC4 has ``n_out`` linear units.
SED_DENSE: tuple[int, ...] = (100, 200, 300)
#: Dense widths of the uncertainty branch: FC'1 before the concatenation, FC'2 after it.
ERR_DENSE: tuple[int, int] = (16, 64)
#: Width of the latent vector Z (channels of the last sub-unit).
LATENT: int = SUB_UNITS[-1][0]
#: Smallest σ the network can return.
SIGMA_FLOOR: float = 1e-6


def build_uaranet(n_in: int = INPUT_GRID.n, n_out: int = OUTPUT_GRID.n,
                  seed: int | None = None) -> keras.Model:
    """Build an untrained UaRA-net (Table 1).

    Parameters
    ----------
    n_in : int
        Pixels of the input spectra (2238 on :data:`csstflux.grids.INPUT_GRID`).
    n_out : int
        Pixels of the output SED (574 on :data:`csstflux.grids.OUTPUT_GRID`).
    seed : int or None
        Seed of the He-normal initialisers; the same seed builds the same weights.
        None draws them at random.

    Returns
    -------
    keras.Model
        Inputs ``{"flux": (N, n_in), "flux_err": (N, n_in)}`` float32 (normalised flux and its
        error); output ``(N, 2, n_out)`` float32 with ``[:, 0] = μ`` (scaled SED) and
        ``[:, 1] = σ`` (relative error of ``μ``, > 0).
    """
    use_full_float32()
    if n_in < 2 or n_out < 1:
        raise ValueError(f"n_in must be >= 2 and n_out >= 1, got {n_in}, {n_out}")
    rng = np.random.default_rng(seed)

    def next_seed() -> int | None:
        # distinct, reproducible seeds; a sub-unit uses s .. s+7; all < 2**31 (JAX: uint32)
        return None if seed is None else int(rng.integers(0, 2**28)) * 8

    flux = keras.Input(shape=(n_in,), name="flux")
    flux_err = keras.Input(shape=(n_in,), name="flux_err")

    # SED branch
    x = keras.layers.Reshape((n_in, 1), name="to_channels")(flux)
    c, k, s = FIRST_CONV
    x = keras.layers.Conv1D(c, k, strides=s, padding="same", name="conv0",
                            kernel_initializer=he_normal(next_seed()))(x)
    for i, (c, k, s) in enumerate(SUB_UNITS, start=1):
        x = SubUnit(c, k, s, seed=next_seed(), name=f"subunit{i}")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    z = keras.layers.GlobalAveragePooling1D(name="gap")(x)                  # Z, eq. (7)
    h = z
    for i, width in enumerate(SED_DENSE, start=1):
        h = keras.layers.Dense(width, activation="relu", name=f"fc{i}",
                               kernel_initializer=he_normal(next_seed()))(h)
    mu = keras.layers.Dense(n_out, name=f"fc{len(SED_DENSE) + 1}",
                            kernel_initializer=he_normal(next_seed()))(h)  # eq. (8)

    # uncertainty branch
    m_e = keras.layers.Dense(ERR_DENSE[0], activation="relu", name="err_fc1",
                             kernel_initializer=he_normal(next_seed()))(flux_err)  # eq. (9)
    m = keras.layers.Concatenate(name="concat")([z, m_e])                  # eq. (10)
    m = keras.layers.Dense(ERR_DENSE[1], activation="relu", name="err_fc2",
                           kernel_initializer=he_normal(next_seed()))(m)
    s_raw = keras.layers.Dense(n_out, name="err_fc3",
                               kernel_initializer=he_normal(next_seed()))(m)  # eq. (11)

    out = GaussianHead(SIGMA_FLOOR, name="mu_sigma")([mu, s_raw])
    return keras.Model(inputs={"flux": flux, "flux_err": flux_err}, outputs=out, name="uaranet")


def _conv(k: int, c_in: int, c_out: int) -> int:
    return k * c_in * c_out + c_out


def _dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count_params_table1(n_in: int = INPUT_GRID.n, n_out: int = OUTPUT_GRID.n, *,
                        trainable_only: bool = False) -> int:
    """Parameter count of :func:`build_uaranet`, computed by hand from the layer definitions.

    Convolution: ``k·c_in·c_out + c_out``; batch normalisation: ``4·c`` of which ``2·c``
    (γ, β) are trainable; dense: ``in·out + out``. The attention of a sub-unit has three
    ``C → C`` convolutions; the zero-padded shortcut has no parameters.

    Parameters
    ----------
    n_in, n_out : int
        Input and output pixels, as given to :func:`build_uaranet`.
    trainable_only : bool
        Count only the trainable parameters (drop the BN moving mean and variance).

    Returns
    -------
    int
        Number of parameters.
    """
    bn = 2 if trainable_only else 4
    c0, k0, _ = FIRST_CONV
    total = _conv(k0, 1, c0)
    c_in = c0
    for c, k, _ in SUB_UNITS:
        total += _conv(k, c_in, c) + 3 * _conv(k, c, c) + 4 * bn * c   # main path
        total += 3 * _conv(k, c, c)                                     # attention, eq. (4)
        c_in = c
    total += bn * c_in                                                  # BN before GAP
    widths = (LATENT, *SED_DENSE, n_out)
    total += sum(_dense(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
    total += _dense(n_in, ERR_DENSE[0])
    total += _dense(LATENT + ERR_DENSE[0], ERR_DENSE[1]) + _dense(ERR_DENSE[1], n_out)
    return total
