"""Batches for training: clean pairs from the store, noise and augmentations drawn per batch.

The paper's noise (the default): for a clean normalised input F (2238,) a batch draws an SNR
from the configured set and r ~ N(0, 1/SNR²) per pixel, and gives the network F' = F (1 + r)
with the error vector σ = |F| / SNR (paper eq. 1), exactly as before these options existed.

With a :class:`~csstflux.spectra.noise.NoiseConfig` or an enabled
:class:`~csstflux.spectra.augment.AugmentConfig` (:func:`realistic_inputs`): the clean input is
first augmented (residual RV, R ≈ 1800, arm-junction artefact, masked runs;
:mod:`csstflux.spectra.augment`), then gets noise of 1σ e(λ) |F|^p / SNR with a LAMOST-like
two-arm profile e for a fraction of the spectra and eq. (1) (e = 1, p = 1) for the rest, the
SNR drawn from the paper's set or log-uniformly (:mod:`csstflux.spectra.noise`). The arm
junction is drawn once per spectrum and shared by the error profile and the flux artefact.

Masked pixels follow :func:`csstflux.model.predictor.fill_masked`. Targets are packed with
their pixel weights (0 where the target is masked) for the loss. Batches are reproducible:
batch *i* of epoch *e* uses a generator seeded by (seed, e, i).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.io.stores.trainset import TrainingArrays
from csstflux.model._keras import keras
from csstflux.model.loss import pack_targets
from csstflux.model.predictor import fill_masked
from csstflux.spectra.augment import AugmentConfig, augment
from csstflux.spectra.error_profile import JUNCTION_RANGE
from csstflux.spectra.noise import NoiseConfig, draw_mixed_noise


def noisy_inputs(inputs: NDArray[np.floating[Any]], mask: NDArray[np.bool_],
                 snr: NDArray[np.float64], rng: np.random.Generator
                 ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Eq. (1) noise on clean normalised inputs (n, 2238) with per-row ``snr`` (n,)."""
    f = np.asarray(inputs, dtype=np.float32)
    r = rng.standard_normal(f.shape, dtype=np.float32) / snr[:, None].astype(np.float32)
    noisy = f * (1.0 + r)
    err = np.abs(f) / snr[:, None].astype(np.float32)
    return fill_masked(noisy, err, mask)


def realistic_inputs(inputs: NDArray[np.floating[Any]], mask: NDArray[np.bool_],
                     snrs: tuple[float, ...], noise: NoiseConfig, aug: AugmentConfig,
                     rng: np.random.Generator
                     ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Augmented inputs with mixed LAMOST-like / eq. (1) noise (module docstring).

    Parameters
    ----------
    inputs : (n, 2238) float
        Clean normalised inputs on the input grid.
    mask : (n, 2238) bool
        True = bad input pixel.
    snrs : tuple of float
        The paper's SNR set (drawn with probability ``noise.paper_fraction``).
    noise : NoiseConfig
    aug : AugmentConfig
    rng : numpy.random.Generator
        Draws the SNRs and the noise; the augmentations and the error profiles draw from its
        ``spawn`` children, so they do not shift the noise stream.

    Returns
    -------
    flux, err : (n, 2238) float32
        Network inputs, masked pixels filled by :func:`fill_masked`.
    """
    n = inputs.shape[0]
    r_aug, r_prof = rng.spawn(2)
    junction = np.asarray(r_prof.uniform(JUNCTION_RANGE[0], JUNCTION_RANGE[1], size=n))
    f, m = augment(inputs, mask, aug, r_aug, junction)
    noisy, err, bad, _ = draw_mixed_noise(f, noise, snrs, rng, r_prof, junction, m)
    return fill_masked(noisy, err, bad)


class NoisyPairs(keras.utils.PyDataset):
    """A keras dataset of (inputs, y_true) batches with fresh noise.

    Parameters
    ----------
    data : TrainingArrays
        Clean pairs (held in memory; a few hundred MB for tens of thousands of rows).
    batch_size : int
    snrs : sequence of float
        The paper's SNRs, drawn uniformly per spectrum (all of them with the default noise).
    seed : int
    noise : NoiseConfig or None
        Noise model; None (or the default NoiseConfig) is eq. (1) at ``snrs``.
    augment : AugmentConfig or None
        Augmentations; None (or the default) applies none.
    weights : (n,) float or None
        Sampling weights per row (e.g. to up-weight small empirical subsets); None samples
        every row once per epoch.
    fixed : bool
        Same noise and order every epoch (validation).
    steps : int or None
        Batches per epoch (default: one pass over the rows).
    """

    def __init__(self, data: TrainingArrays, batch_size: int, snrs: tuple[float, ...],
                 seed: int, *, noise: NoiseConfig | None = None,
                 augment: AugmentConfig | None = None,
                 weights: NDArray[np.float64] | None = None, fixed: bool = False,
                 steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.batch_size = int(batch_size)
        self.snrs = np.asarray(snrs, dtype=np.float64)
        self.noise = noise or NoiseConfig()
        self.augment = augment or AugmentConfig()
        # the paper's noise alone keeps the original random stream, batch for batch
        self._paper_only = self.noise.is_paper and not self.augment.enabled
        self.seed = int(seed)
        self.fixed = fixed
        n = len(data)
        self.weights = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        self.steps = steps or max(1, -(-n // self.batch_size))
        self.y = pack_targets(data.targets, ~data.target_mask)
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self) -> NDArray[np.int64]:
        rng = np.random.default_rng([self.seed, 0 if self.fixed else self.epoch, 7919])
        n = len(self.data)
        total = self.steps * self.batch_size
        if self.weights is None:
            reps = -(-total // n)
            return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total]
        return rng.choice(n, size=total, replace=True, p=self.weights)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[dict[str, NDArray[np.float32]], NDArray[np.float32]]:
        idx = np.sort(self._order[i * self.batch_size:(i + 1) * self.batch_size])
        rng = np.random.default_rng([self.seed, 0 if self.fixed else self.epoch, i])
        if self._paper_only:
            snr = rng.choice(self.snrs, size=idx.size)
            x, e = noisy_inputs(self.data.inputs[idx], self.data.input_mask[idx], snr, rng)
        else:
            x, e = realistic_inputs(self.data.inputs[idx], self.data.input_mask[idx],
                                    tuple(self.snrs), self.noise, self.augment, rng)
        return {"flux": x, "flux_err": e}, self.y[idx]

    def on_epoch_end(self) -> None:
        if not self.fixed:
            self.epoch += 1
            self._order = self._make_order()

    def set_epoch(self, epoch: int) -> None:
        """Position the sampler at ``epoch`` (used when resuming)."""
        if not self.fixed:
            self.epoch = int(epoch)
            self._order = self._make_order()
