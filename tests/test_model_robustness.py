"""Robustness checks against analytic predictors."""

from __future__ import annotations

import numpy as np
import pytest

from csstflux.constants import C_KMS
from csstflux.grids import BANDS, INPUT_GRID, OUTPUT_GRID
from csstflux.io.stores.trainset import TrainingArrays
from csstflux.model.robustness import robustness


def _rows(x: np.ndarray) -> TrainingArrays:
    n = len(x)
    return TrainingArrays(
        inputs=x.astype(np.float32), input_mask=np.zeros(x.shape, bool),
        targets=np.ones((n, OUTPUT_GRID.n), np.float32),
        target_mask=np.zeros((n, OUTPUT_GRID.n), bool), teff=np.full(n, 6000.0),
        logg=np.full(n, 4.0), feh=np.zeros(n), split=np.ones(n, np.int8),
        subset=np.full(n, "grid"), name=np.array([f"s{i}" for i in range(n)]))


def test_an_input_blind_model_does_not_move():
    def blind(f, e):
        return np.ones((len(f), OUTPUT_GRID.n)), np.full((len(f), OUTPUT_GRID.n), 0.01)

    rep = robustness(blind, _rows(np.ones((3, INPUT_GRID.n))), draws=4)
    for key in ("rv", "noise"):
        for st in rep[key]["bands"].values():
            assert st["median"] == st["p90"] == st["rms"] == 0.0


def test_rv_shift_of_a_ramp_and_noise_bias_of_a_square():
    """sed = x[k] of a ramp in ln λ moves by slope·v/c per pixel of dlnλ; sed = mean(x²)
    is biased by mean(e²) = mean(x²)/snr² under noise."""
    k = 1000
    slope = 0.01                                   # flux per pixel
    x = 1.0 + slope * (np.arange(INPUT_GRID.n) - k)
    sigma = 0.01

    def ramp(f, e):
        out = np.repeat(np.asarray(f, np.float64)[:, k:k + 1], OUTPUT_GRID.n, axis=1)
        return out, np.full_like(out, sigma)

    v = 30.0
    rep = robustness(ramp, _rows(x[None, :]), rv_kms=v, draws=2)
    expect = slope * (v / C_KMS) / INPUT_GRID.dlnlambda / sigma
    for st in rep["rv"]["bands"].values():
        assert st["median"] == pytest.approx(expect, rel=0.01)

    snr = 10.0
    x2 = np.full((1, INPUT_GRID.n), 2.0)

    def square(f, e):
        m = np.mean(np.asarray(f, np.float64) ** 2, axis=1, keepdims=True)
        out = np.repeat(m, OUTPUT_GRID.n, axis=1)
        return out, np.full_like(out, sigma)

    rep = robustness(square, _rows(x2), snr=snr, snr_ref=1e6, draws=200)
    bias = (4.0 / snr ** 2) / sigma
    for band in BANDS:
        assert rep["noise"]["bands"][band]["median"] == pytest.approx(bias, rel=0.05)
