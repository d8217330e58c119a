"""How much a prediction moves when the input is not what the catalogue promised.

Two checks on held-out rows, each in units of the predicted σ (``sed_err``), pixel by pixel:

``rv``
    A residual radial-velocity error: the clean input is shifted by ``+v`` and ``−v`` km/s
    (:func:`~csstflux.spectra.augment.shift_rv`) and predicted at ``snr_ref``;
    ``Δ = (sed(±v) − sed(0)) / sed_err(0)``.
``noise``
    Noise down to ``snr``: ``draws`` noisy copies of each input at ``snr`` (eq. 1) are
    predicted and their mean compared with the prediction at ``snr_ref``;
    ``Δ = (mean sed(snr) − sed(snr_ref)) / sed_err(snr)``. A network whose output is biased by
    noise shows it here; noise that only scatters the output averages out.

Per band (GU, GV, GI, where each row has target coverage or not: the prediction exists
everywhere) the report gives the median and the 90th percentile of ``|Δ|`` over rows and
pixels, and the RMS.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import BANDS, OUTPUT_GRID
from csstflux.io.stores.trainset import TrainingArrays
from csstflux.model.evaluate import PredictorLike
from csstflux.model.predictor import fill_masked
from csstflux.spectra.augment import shift_rv

FloatArray = NDArray[np.float64]


def _predict(predictor: PredictorLike, x: FloatArray, mask: NDArray[np.bool_], snr: float
             ) -> tuple[FloatArray, FloatArray]:
    with np.errstate(invalid="ignore"):
        err = np.abs(x) / snr
    f, e = fill_masked(x, err, mask)
    sed, sed_err = predictor(f, e)
    return np.asarray(sed, np.float64), np.asarray(sed_err, np.float64)


def band_stats(delta: FloatArray) -> dict[str, dict[str, float]]:
    """Median, 90th percentile and RMS of ``|delta|`` (rows × 574) per band."""
    wl = OUTPUT_GRID.wavelength
    out = {}
    for name, band in BANDS.items():
        d = np.abs(delta[:, band.mask(wl)])
        d = d[np.isfinite(d)]
        out[name] = {"median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                     "rms": float(np.sqrt(np.mean(d * d)))}
    return out


def robustness(predictor: PredictorLike, data: TrainingArrays, *, rv_kms: float = 30.0,
               snr: float = 20.0, snr_ref: float = 300.0, draws: int = 16, seed: int = 0
               ) -> dict[str, Any]:
    """Both checks of the module docstring on ``data`` (clean held-out rows).

    Returns ``{"rv": {"rv_kms", "bands": {band: stats}}, "noise": {"snr", "draws",
    "bands": ..., "sampling_floor": {band: median}}, "n_rows", "snr_ref"}``.
    """
    x = np.asarray(data.inputs, np.float64)
    mask = np.asarray(data.input_mask, bool)
    ref, ref_err = _predict(predictor, x, mask, snr_ref)
    deltas = []
    for v in (rv_kms, -rv_kms):
        xs, ms = shift_rv(x, np.full(len(x), v), mask)
        s, _ = _predict(predictor, xs, ms, snr_ref)
        deltas.append((s - ref) / ref_err)
    rv = band_stats(np.concatenate(deltas))
    rng = np.random.default_rng(seed)
    total = np.zeros_like(ref)
    total2 = np.zeros_like(ref)
    err_sum = np.zeros_like(ref)
    for _ in range(draws):
        e = np.abs(x) / snr
        noisy = x + e * rng.standard_normal(x.shape)
        f, ee = fill_masked(noisy, e, mask)
        s, se = predictor(f, ee)
        s = np.asarray(s, np.float64)
        total += s
        total2 += s * s
        err_sum += np.asarray(se, np.float64)
    mean, sig = total / draws, err_sum / draws
    spread = np.sqrt(np.maximum(total2 / draws - mean * mean, 0.0) * draws / max(draws - 1, 1))
    noise = band_stats((mean - ref) / sig)
    # median |Δ| that noise alone would give: 0.674 × the standard error of the mean
    floor = band_stats(0.6745 * spread / np.sqrt(draws) / sig)
    return {"n_rows": len(x), "snr_ref": snr_ref,
            "rv": {"rv_kms": rv_kms, "bands": rv},
            "noise": {"snr": snr, "draws": draws, "bands": noise,
                      "sampling_floor": {k: v["median"] for k, v in floor.items()}}}
