"""Batches for training: clean pairs from the store, eq. (1) noise drawn afresh per batch.

For a clean normalised input F (2238,) a batch draws an SNR from the configured set and
r ~ N(0, 1/SNR²) per pixel, and gives the network F' = F (1 + r) with the error vector
σ = |F| / SNR (paper eq. 1); masked pixels follow :func:`csstflux.model.predictor.fill_masked`.
Targets are packed with their pixel weights (0 where the target is masked) for the loss.
Batches are reproducible: batch *i* of epoch *e* uses a generator seeded by (seed, e, i).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from numpy.typing import NDArray

from csstflux.io.trainstore import TrainingArrays
from csstflux.model.loss import pack_targets
from csstflux.model.predictor import fill_masked


def noisy_inputs(inputs: NDArray[np.floating[Any]], mask: NDArray[np.bool_],
                 snr: NDArray[np.float64], rng: np.random.Generator
                 ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Eq. (1) noise on clean normalised inputs (n, 2238) with per-row ``snr`` (n,)."""
    f = np.asarray(inputs, dtype=np.float32)
    r = rng.standard_normal(f.shape, dtype=np.float32) / snr[:, None].astype(np.float32)
    noisy = f * (1.0 + r)
    err = np.abs(f) / snr[:, None].astype(np.float32)
    return fill_masked(noisy, err, mask)


class NoisyPairs(keras.utils.PyDataset):
    """A keras dataset of (inputs, y_true) batches with fresh noise.

    Parameters
    ----------
    data : TrainingArrays
        Clean pairs (held in memory; a few hundred MB for tens of thousands of rows).
    batch_size : int
    snrs : sequence of float
        SNRs drawn uniformly per spectrum.
    seed : int
    weights : (n,) float or None
        Sampling weights per row (e.g. to up-weight small empirical subsets); None samples
        every row once per epoch.
    fixed : bool
        Same noise and order every epoch (validation).
    steps : int or None
        Batches per epoch (default: one pass over the rows).
    """

    def __init__(self, data: TrainingArrays, batch_size: int, snrs: tuple[float, ...],
                 seed: int, *, weights: NDArray[np.float64] | None = None, fixed: bool = False,
                 steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.batch_size = int(batch_size)
        self.snrs = np.asarray(snrs, dtype=np.float64)
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
        snr = rng.choice(self.snrs, size=idx.size)
        x, e = noisy_inputs(self.data.inputs[idx], self.data.input_mask[idx], snr, rng)
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
