"""σ calibration: a σ 2× too small on Gaussian residuals gives factors ≈ 2 and coverage 0.683;
subset weights; the calibrated model's predictor scales sed_err by exactly the factors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.grids import BANDS, INPUT_GRID, OUTPUT_GRID
from csstflux.io.trainstore import TrainingArrays, write_trainstore
from csstflux.model.calibrate import (
    ONE_SIGMA,
    apply_calibration,
    fit_sigma_scale,
    scale_from_residuals,
    weighted_quantile,
)
from csstflux.model.evaluate import Residuals, band_coverage, predict_residuals

WL = OUTPUT_GRID.wavelength
TARGET = 1.0 + 0.3 * (WL / 5556.0 - 1.0)


def rows(n, subsets=("grid",)):
    """Clean inputs of 1.0 (the noisy input is 1 + r, r ~ N(0, 1/SNR²)); one common target."""
    sub = np.resize(np.array(subsets), n)
    return TrainingArrays(
        inputs=np.ones((n, INPUT_GRID.n)), input_mask=np.zeros((n, INPUT_GRID.n), bool),
        targets=np.tile(TARGET, (n, 1)), target_mask=np.zeros((n, OUTPUT_GRID.n), bool),
        teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n),
        split=np.full(n, 2, np.int8), subset=sub, name=np.array([f"s{i}" for i in range(n)]))


class TooConfident:
    """Residuals N(0, σ_true²) drawn from the input noise; predicted σ = σ_true / ``factor``.
    With ``hard`` set, rows whose flux at pixel 600 is < 0.75 get ``hard``× larger residuals."""

    def __init__(self, sigma_true=0.01, factor=2.0, hard=None):
        self.sigma_true, self.factor, self.hard = sigma_true, factor, hard

    def __call__(self, x, e):
        x, e = np.asarray(x, float), np.asarray(e, float)
        snr = 1.0 / e[:, :1]
        z = snr * (x[:, :OUTPUT_GRID.n] - 1.0)                    # standard normal
        sig = np.full(z.shape, self.sigma_true)
        if self.hard is not None:
            sig = np.where(x[:, 600:601] < 0.75, self.hard * sig, sig)
        sed = TARGET * (1.0 + sig * z)
        return sed, (self.sigma_true / self.factor) * np.abs(sed)


def test_weighted_quantile():
    v = np.array([3.0, 1.0, 2.0, 4.0])
    assert weighted_quantile(v, np.ones(4), 0.5) == pytest.approx(2.5)
    assert weighted_quantile(v, np.ones(4), 0.375) == pytest.approx(2.0)   # Hazen: (i+½)/n
    assert weighted_quantile([1.0, 2.0, 100.0], [1.0, 1.0, 0.0], 0.5) == pytest.approx(1.5)
    # weight 3 is close to three copies for many values
    v = np.random.default_rng(0).normal(size=2000)
    w = np.where(v > 0, 3.0, 1.0)
    assert weighted_quantile(v, w, ONE_SIGMA) == pytest.approx(
        np.percentile(np.concatenate([v, v[v > 0], v[v > 0]]), 100 * ONE_SIGMA), abs=0.01)


def test_twice_too_small_sigma_gives_factor_two_and_target_coverage():
    fake = TooConfident(factor=2.0)
    cal = fit_sigma_scale(fake, rows(600), snrs=(20, 40), seed=1)
    assert cal.scale.shape == (OUTPUT_GRID.n,)
    assert np.median(cal.scale) == pytest.approx(2.0, abs=0.02)
    assert np.all(np.abs(cal.scale - 2.0) < 0.15)
    # before: |z| < 0.5 for a standard normal, 0.383; after: the target in every band
    for band in BANDS:
        assert cal.coverage_before["all"][band] == pytest.approx(0.383, abs=0.01)
        assert cal.coverage_after["all"][band] == pytest.approx(ONE_SIGMA, abs=0.02)
        assert cal.coverage_after["by_snr"]["40"][band] == pytest.approx(ONE_SIGMA, abs=0.02)
    # held out: new rows, new noise
    res = predict_residuals(fake, rows(400), (20, 80), seed=99)
    for band, c in band_coverage(res, scale=cal.scale).items():
        assert c == pytest.approx(ONE_SIGMA, abs=0.02), band
    section = cal.card_section({"split": "validation"})
    assert section["method"] and section["fitted_on"] == {"rows": {"grid": 600},
                                                          "split": "validation"}
    assert len(section["sigma_scale"]) == OUTPUT_GRID.n


def test_subset_weights_mix_subsets_of_different_difficulty():
    data = rows(800, ("easy", "hard"))
    hard = data.subset == "hard"
    data.inputs[hard, 600] = 0.5                                   # marks the hard rows
    fake = TooConfident(factor=1.0, hard=3.0)                      # hard rows: σ 3× too small
    plain = fit_sigma_scale(fake, data, snrs=(40,), seed=2)
    only_hard = fit_sigma_scale(fake, data, snrs=(40,), seed=2,
                                subset_weights={"easy": 0.0})
    assert np.median(only_hard.scale) == pytest.approx(3.0, abs=0.1)
    assert only_hard.coverage_after["by_subset"]["hard"]["GV"] == pytest.approx(ONE_SIGMA,
                                                                                abs=0.02)
    assert only_hard.coverage_before["by_subset"]["easy"]["GV"] == pytest.approx(ONE_SIGMA,
                                                                                  abs=0.02)
    assert only_hard.coverage_after["by_subset"]["easy"]["GV"] > 0.99
    # equal weights: one factor between the two subsets' own
    assert 1.0 < np.median(plain.scale) < 3.0
    assert plain.coverage_after["all"]["GV"] == pytest.approx(ONE_SIGMA, abs=0.02)


def test_pixels_without_data_take_the_nearest_factor_and_floor():
    n = 50
    rng = np.random.default_rng(4)
    r = rng.normal(size=(n, OUTPUT_GRID.n)) * 0.01
    mask = np.zeros_like(r, bool)
    mask[:, :100] = True
    res = [Residuals(20.0, r, np.full_like(r, 0.01), mask)]
    s = scale_from_residuals(res, window=1)
    np.testing.assert_array_equal(s[:100], s[100])
    tiny = [Residuals(20.0, r * 1e-6, np.full_like(r, 0.01), mask)]
    assert np.all(scale_from_residuals(tiny, floor=1e-3) == 1e-3)
    with pytest.raises(ValueError, match="odd"):
        scale_from_residuals(res, window=4)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from csstflux.model.card import save_model
    from csstflux.model.network import build_uaranet

    d = tmp_path_factory.mktemp("cal")
    save_model(build_uaranet(seed=6), d / "m.keras", training_data={"note": "untrained"})
    return d / "m.keras"


@pytest.mark.slow
def test_apply_calibration_scales_sed_err_exactly(model_path, tmp_path):
    from csstflux.model.card import read_card
    from csstflux.model.predictor import load_predictor

    s = np.linspace(0.5, 4.0, OUTPUT_GRID.n)
    card = apply_calibration(model_path, s, tmp_path / "out", {"method": "test", "x": 1})
    assert card.calibration["method"] == "test" and card.training_data == {"note": "untrained"}
    assert card.calibration["base_model"]["archive_sha256"] == read_card(model_path)[0]. \
        archive_sha256
    rng = np.random.default_rng(0)
    x = 1.0 + 0.02 * rng.normal(size=(3, INPUT_GRID.n))
    e = np.full_like(x, 0.02)
    sed0, err0 = load_predictor(model_path)(x, e)
    sed1, err1 = load_predictor(tmp_path / "out" / "m.keras")(x, e)
    np.testing.assert_array_equal(sed1, sed0)
    np.testing.assert_allclose(err1, err0 * s.astype(np.float32), rtol=1e-6)
    # calibrating a calibrated model stores the product
    card2 = apply_calibration(tmp_path / "out" / "m.keras", np.full(OUTPUT_GRID.n, 2.0),
                              tmp_path / "out2.keras")
    np.testing.assert_allclose(card2.sigma_scale, 2.0 * s)
    assert card2.calibration["base_model"]["had_sigma_scale"]
    with pytest.raises(ValueError, match="positive"):
        apply_calibration(model_path, -s, tmp_path / "bad")


@pytest.mark.slow
def test_calibrate_command(model_path, tmp_path):
    n = 6
    data = rows(n, ("grid", "miles"))
    data = TrainingArrays(**{k: getattr(data, k) for k in (
        "inputs", "input_mask", "targets", "target_mask", "teff", "logg", "feh", "subset",
        "name")}, split=np.array([2] * 4 + [1] * 2, np.int8))
    data.inputs[:] = 1.0 - 0.3 * np.exp(-0.5 * ((INPUT_GRID.wavelength - 5000) / 20) ** 2)
    write_trainstore(tmp_path / "ts.zarr", data)
    out = tmp_path / "cal"
    res = CliRunner().invoke(cli, ["calibrate", "--model", str(model_path), "--trainset",
                                   str(tmp_path / "ts.zarr"), "--snrs", "20",
                                   "--subset-weights", "miles=2", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["rows"] == {"grid": 2, "miles": 2}
    card = json.loads((out / "m.json").read_text())
    cal = card["calibration"]
    assert len(cal["sigma_scale"]) == OUTPUT_GRID.n and cal["subset_weights"] == {"miles": 2.0}
    assert cal["fitted_on"]["split"] == "validation" and "coverage_after" in cal
    assert (out / "sigma_scale.csv").exists() and (out / "sigma_scale.png").exists()
    assert summary["coverage_after"]["all"]["GV"] == pytest.approx(ONE_SIGMA, abs=0.1)
