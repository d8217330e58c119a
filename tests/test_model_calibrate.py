"""σ calibration: a σ 2× too small on Gaussian residuals gives factors ≈ 2 and coverage 0.683;
subset weights; a residual N(0, (2σ)² + 0.01²) with σ ∝ 1/SNR gives s ≈ 2, τ ≈ 0.01 and the
target coverage at every SNR (the scale-only method cannot); the calibrated model's predictor
applies exactly what the card carries."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.grids import BANDS, INPUT_GRID, OUTPUT_GRID
from csstflux.io.stores.trainset import SPLITS, TrainingArrays, write_trainstore
from csstflux.model.calibrate import (
    METHOD,
    METHOD_FLOOR,
    ONE_SIGMA,
    apply_calibration,
    apply_reference_sigma,
    fit_reference_sigma,
    fit_sigma_scale,
    reference_sigma_from_residuals,
    scale_floor_from_residuals,
    scale_from_residuals,
    sed_factor_from_residuals,
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


class Floored:
    """Predicted relative σ = ``c``/SNR (times a smooth shape along λ); true residuals
    N(0, (s σ)² + τ²), drawn from the input noise: the error has a part that does not shrink
    with SNR."""

    SHAPE = 1.0 + 0.5 * np.sin(np.arange(OUTPUT_GRID.n) / 40.0)

    def __init__(self, s=2.0, tau=0.01, c=0.25):
        self.s, self.tau, self.c = s, tau, c

    def __call__(self, x, e):
        x, e = np.asarray(x, float), np.asarray(e, float)
        snr = 1.0 / e[:, :1]
        z = snr * (x[:, :OUTPUT_GRID.n] - 1.0)                    # standard normal
        sig = self.c / snr * self.SHAPE
        sed = TARGET * (1.0 + np.sqrt((self.s * sig) ** 2 + self.tau ** 2) * z)
        return sed, sig * np.abs(sed)


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


SNRS = (20.0, 40.0, 80.0)


@pytest.fixture(scope="module")
def floored_fits():
    """Both methods fitted on 300 rows of :class:`Floored` at SNR 20, 40, 80."""
    fake, data = Floored(), rows(300)
    return (fit_sigma_scale(fake, data, snrs=SNRS, seed=1),
            fit_sigma_scale(fake, data, snrs=SNRS, seed=1, method="scale"))


def test_scale_and_floor_recovers_the_two_term_error_model(floored_fits):
    cal, _ = floored_fits
    assert cal.method == "scale+floor"
    # σ_pred 2× too small plus a 1 % floor: s ≈ 2 and τ ≈ 0.01 at every pixel (within 10 %)
    assert np.median(cal.scale) == pytest.approx(2.0, rel=0.02)
    assert np.median(cal.sigma_floor) == pytest.approx(0.01, rel=0.02)
    assert np.all(np.abs(cal.scale / 2.0 - 1.0) < 0.10)
    assert np.all(np.abs(cal.sigma_floor / 0.01 - 1.0) < 0.10)
    assert np.all(np.abs(cal.touch_up - 1.0) < 0.05)          # the Gaussian fit is nearly right
    # in sample: exactly the target pooled over SNRs, and close to it at each SNR
    for band in BANDS:
        assert cal.coverage_after["all"][band] == pytest.approx(ONE_SIGMA, abs=0.005)
        for snr in ("20", "40", "80"):
            assert cal.coverage_after["by_snr"][snr][band] == pytest.approx(ONE_SIGMA,
                                                                           abs=0.02)
    section = cal.card_section({"split": "validation"})
    assert section["method"] == METHOD_FLOOR and section["method_key"] == "scale+floor"
    assert len(section["sigma_scale"]) == len(section["sigma_floor"]) == OUTPUT_GRID.n
    assert set(section["coverage_after"]) == {"all", "by_subset", "by_snr", "by_teff"}
    assert set(section["coverage_before"]["by_snr"]) == {"20", "40", "80"}


def test_only_the_floor_gives_target_coverage_at_every_snr_held_out(floored_fits):
    cal, scale_only = floored_fits
    assert scale_only.sigma_floor is None and scale_only.method == "scale"
    assert scale_only.card_section()["method"] == METHOD
    assert "sigma_floor" not in scale_only.card_section()
    # held out: new rows, new noise, the fitting SNRs and beyond
    res = predict_residuals(Floored(), rows(300), (10.0, *SNRS, 160.0), seed=99)
    measured = {}
    for x in res:
        both = band_coverage([x], scale=cal.scale, floor=cal.sigma_floor)
        one = band_coverage([x], scale=scale_only.scale)
        measured[x.snr] = (both["all"], one["all"])
        for band, c in both.items():
            assert c == pytest.approx(ONE_SIGMA, abs=0.02), (x.snr, band)
    # one factor for all SNRs: too wide at low SNR, too narrow at high SNR
    assert measured[20.0][1] > ONE_SIGMA + 0.08 and measured[80.0][1] < ONE_SIGMA - 0.1
    assert measured[10.0][1] > measured[20.0][1] and measured[160.0][1] < measured[80.0][1]
    assert scale_only.coverage_after["by_snr"]["80"]["GV"] < ONE_SIGMA - 0.1


def test_floor_stays_zero_when_the_data_cannot_tell_it_apart():
    """σ the same at every SNR (or one SNR): τ = 0 and the scale-only factors, exactly; no
    floor in the truth: τ = 0 at most pixels (the likelihood-ratio test's 5 % false alarms)."""
    for snrs in ((40.0,), SNRS):
        res = predict_residuals(TooConfident(factor=2.0), rows(60), snrs, seed=3)
        s, tau, _ = scale_floor_from_residuals(res)
        np.testing.assert_array_equal(tau, 0.0)
        np.testing.assert_allclose(s, scale_from_residuals(res), rtol=1e-12)
    res = predict_residuals(Floored(tau=0.0), rows(200), SNRS, seed=3)
    s, tau, _ = scale_floor_from_residuals(res)
    assert np.mean(tau > 0) < 0.1 and tau.max() < 0.005
    assert np.all(np.abs(s / 2.0 - 1.0) < 0.1)


def test_vectorised_fit_matches_scipy_per_pixel():
    res = predict_residuals(Floored(s=1.5, tau=0.02), rows(150), SNRS, seed=5)
    keep = np.zeros(OUTPUT_GRID.n, bool)
    keep[[10, 11, 300, 301, 302, 570]] = True
    res = [Residuals(x.snr, x.residual, x.sigma, x.mask | ~keep) for x in res]
    fast = scale_floor_from_residuals(res, window=3)
    slow = scale_floor_from_residuals(res, window=3, solver="scipy")
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a[keep], b[keep], rtol=1e-4)
    assert np.all(fast[1][keep] > 0)


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
    s, tau, c = scale_floor_from_residuals(res, window=1)
    np.testing.assert_array_equal(s[:100], s[100])
    np.testing.assert_array_equal(tau[:100], tau[100])
    with pytest.raises(ValueError, match="no finite"):
        scale_floor_from_residuals([Residuals(20.0, r, r, np.ones_like(mask))])
    with pytest.raises(ValueError, match="method"):
        fit_sigma_scale(TooConfident(), rows(4), method="floor")


class Biased(TooConfident):
    """TooConfident whose SED is ``1 + bias(λ)`` times too bright (bias from −4 % to +6 %)."""

    bias = -0.04 + 0.10 * (WL - WL[0]) / (WL[-1] - WL[0])

    def __call__(self, x, e):
        sed, err = super().__call__(x, e)
        return sed * (1.0 + self.bias), err * (1.0 + self.bias)


def test_sed_factor_removes_a_common_bias_before_sigma():
    """Residuals r = (1 + b)(1 + σz) − 1: the factor is 1/(1 + b) to the sampling error of a
    median of 200 × 3 × 9 values, and σ is then calibrated on the corrected residuals."""
    data = rows(200)
    cal = fit_sigma_scale(Biased(), data, (20.0, 40.0, 80.0), seed=3, method="scale",
                          correct_sed=True)
    inner = slice(5, -5)                       # full windows: the bias is linear across them
    np.testing.assert_allclose(cal.sed_factor[inner], 1.0 / (1.0 + Biased.bias[inner]),
                               rtol=2e-3)
    assert cal.coverage_after["all"]["GV"] == pytest.approx(ONE_SIGMA, abs=0.01)
    # uncorrected, the 1-6 % bias swamps the 1 % scatter: the scale-only σ must grow ~3×
    plain = fit_sigma_scale(Biased(), data, (20.0, 40.0, 80.0), seed=3, method="scale")
    gi = BANDS["GI"].mask(WL)
    assert np.median(plain.scale[gi]) > 2.5 * np.median(cal.scale[gi])
    assert plain.sed_factor is None and "sed_factor" not in plain.card_section()
    section = cal.card_section()
    assert len(section["sed_factor"]) == OUTPUT_GRID.n and "median" in \
        section["sed_factor_description"]
    # the corrected residuals: median 0 per pixel
    res = predict_residuals(Biased(), data, (40.0,), seed=4)
    r = res[0].residual
    k = sed_factor_from_residuals(res, window=1)
    assert np.max(np.abs(np.median(k * (r + 1.0) - 1.0, axis=0))) < 1e-12


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from csstflux.model.card import save_model
    from csstflux.model.network import build_uaranet

    d = tmp_path_factory.mktemp("cal")
    save_model(build_uaranet(seed=6), d / "m.keras", training_data={"note": "untrained"})
    return d / "m.keras"


def predict_both(before, after, seed, load=None):
    """(sed, sed_err) of two saved models on the same noisy flat inputs."""
    from csstflux.model.predictor import load_predictor

    load = load or load_predictor
    rng = np.random.default_rng(seed)
    x = 1.0 + 0.02 * rng.normal(size=(3, INPUT_GRID.n))
    e = np.full_like(x, 0.02)
    return load(before)(x, e), load(after)(x, e)


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
    assert card2.sigma_floor is None and "sigma_floor" not in card2.calibration


@pytest.mark.slow
def test_scale_and_floor_card_round_trip_and_composition(model_path, tmp_path):
    from csstflux.model.card import read_card
    from csstflux.model.predictor import load_predictor

    s = np.linspace(0.5, 4.0, OUTPUT_GRID.n)
    tau = np.linspace(0.0, 0.03, OUTPUT_GRID.n)
    card = apply_calibration(model_path, s, tmp_path / "a", {"sigma_floor": [9.0]},
                             floor=tau)                       # info's sigma_floor is ignored
    assert card.calibration["base_model"]["had_sigma_floor"] is False
    back = read_card(tmp_path / "a" / "m.keras")[0]
    assert back == card
    np.testing.assert_array_equal(back.sigma_scale, s)
    np.testing.assert_array_equal(back.sigma_floor, tau)
    rng = np.random.default_rng(1)
    x = 1.0 + 0.02 * rng.normal(size=(3, INPUT_GRID.n))
    e = np.full_like(x, 0.02)
    sed0, err0 = load_predictor(model_path)(x, e)
    sed1, err1 = load_predictor(tmp_path / "a")(x, e)
    np.testing.assert_array_equal(sed1, sed0)
    want = np.abs(sed0) * np.sqrt((s * err0 / np.abs(sed0)) ** 2 + tau ** 2)
    np.testing.assert_allclose(err1, want, rtol=1e-5)
    # on top of (s0, τ0): σ² = s1²(s0²σ² + τ0²) + τ1²
    s1, t1 = np.full(OUTPUT_GRID.n, 2.0), np.full(OUTPUT_GRID.n, 0.01)
    card2 = apply_calibration(tmp_path / "a", s1, tmp_path / "b.keras", floor=t1)
    np.testing.assert_allclose(card2.sigma_scale, 2.0 * s)
    np.testing.assert_allclose(card2.sigma_floor, np.hypot(2.0 * tau, 0.01))
    card3 = apply_calibration(tmp_path / "a", s1, tmp_path / "c.keras")     # scale on top
    np.testing.assert_allclose(card3.sigma_floor, 2.0 * tau)
    assert card3.calibration["base_model"]["had_sigma_floor"]
    with pytest.raises(ValueError, match="non-negative"):
        apply_calibration(model_path, s, tmp_path / "bad", floor=-tau - 1)


@pytest.mark.slow
def test_sed_factor_on_the_card_scales_sed_and_err(model_path, tmp_path):
    """The predictor returns k μ and |k μ| σ_cal; a second factor composes as k₁ k₀."""
    from csstflux.model.card import read_card

    s = np.linspace(0.5, 4.0, OUTPUT_GRID.n)
    k = np.linspace(0.9, 1.1, OUTPUT_GRID.n)
    card = apply_calibration(model_path, s, tmp_path / "a", sed_factor=k)
    assert read_card(tmp_path / "a" / "m.keras")[0] == card
    assert card.calibration["base_model"]["had_sed_factor"] is False
    (sed0, err0), (sed1, err1) = predict_both(model_path, tmp_path / "a", seed=2)
    np.testing.assert_allclose(sed1, k * sed0, rtol=1e-6)
    np.testing.assert_allclose(err1, k * s * err0, rtol=1e-5)
    card2 = apply_calibration(tmp_path / "a", np.ones(OUTPUT_GRID.n), tmp_path / "b.keras",
                              sed_factor=np.full(OUTPUT_GRID.n, 2.0))
    np.testing.assert_allclose(card2.sed_factor, 2.0 * k)
    card3 = apply_calibration(tmp_path / "a", np.ones(OUTPUT_GRID.n), tmp_path / "c.keras")
    np.testing.assert_allclose(card3.sed_factor, k)            # kept when only σ is refitted
    with pytest.raises(ValueError, match="sed_factor"):
        apply_calibration(model_path, s, tmp_path / "bad", sed_factor=-k)


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
    summary = json.loads(res.stdout)
    assert summary["rows"] == {"grid": 2, "miles": 2}
    card = json.loads((out / "m.json").read_text())
    cal = card["calibration"]
    assert len(cal["sigma_scale"]) == OUTPUT_GRID.n and cal["subset_weights"] == {"miles": 2.0}
    assert cal["fitted_on"]["split"] == "validation" and "coverage_after" in cal
    assert (out / "sigma_scale.csv").exists() and (out / "sigma_scale.png").exists()
    assert summary["coverage_after"]["all"]["GV"] == pytest.approx(ONE_SIGMA, abs=0.1)
    # default: scale+floor at SNR 20, 40, 80
    assert summary["method"] == cal["method_key"] == "scale+floor"
    assert len(cal["sigma_floor"]) == OUTPUT_GRID.n and cal["snrs"] == [20.0]
    assert (out / "sigma_scale.csv").read_text().splitlines()[0] == \
        "wavelength,sigma_scale,sigma_floor"
    out2 = tmp_path / "cal2"
    res = CliRunner().invoke(cli, ["calibrate", "--model", str(model_path), "--trainset",
                                   str(tmp_path / "ts.zarr"), "--method", "scale",
                                   "--out", str(out2)])
    assert res.exit_code == 0, res.output
    assert "method scale" in res.output and "SNR 80" in res.output
    cal2 = json.loads((out2 / "m.json").read_text())["calibration"]
    assert cal2["method_key"] == "scale" and "sigma_floor" not in cal2
    assert cal2["snrs"] == [20.0, 40.0, 80.0]
    # --correct-sed on an untrained network, whose median SED is negative at some pixels:
    # a clear refusal (a configuration error, exit 2) naming them, and no model written
    out3 = tmp_path / "cal3"
    res = CliRunner().invoke(cli, ["calibrate", "--model", str(model_path), "--trainset",
                                   str(tmp_path / "ts.zarr"), "--correct-sed", "--out",
                                   str(out3)])
    assert res.exit_code == 2 and "median predicted SED is not positive" in res.output
    assert not (out3 / "m.json").exists()


@pytest.mark.slow
def test_calibrate_command_writes_the_sed_factors(model_path, tmp_path, monkeypatch):
    """--correct-sed end to end: the command's predictor (here the Biased stand-in, so the
    factors are known) gives factors 1/(1 + b) that land in the written card, the CSV and the
    summary, and the written model applies them."""
    import csstflux.model.predictor as predictor_module

    write_trainstore(tmp_path / "ts.zarr", rows(120))
    real = predictor_module.load_predictor
    monkeypatch.setattr(predictor_module, "load_predictor", lambda path: Biased())
    out = tmp_path / "cal"
    res = CliRunner().invoke(cli, ["calibrate", "--model", str(model_path), "--trainset",
                                   str(tmp_path / "ts.zarr"), "--method",
                                   "scale", "--correct-sed", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "m.json").read_text())
    k = np.array(card["calibration"]["sed_factor"])
    np.testing.assert_allclose(k[5:-5], 1.0 / (1.0 + Biased.bias[5:-5]), rtol=3e-3)
    assert json.loads(res.stdout)["sed_factor"]["max"] == pytest.approx(k.max())
    assert (out / "sigma_scale.csv").read_text().splitlines()[0] == \
        "wavelength,sigma_scale,sed_factor"
    (sed0, _), (sed1, _) = predict_both(model_path, out / "m.keras", seed=5, load=real)
    np.testing.assert_allclose(sed1, k * sed0, rtol=1e-5)


def test_prioritise_keeps_one_subset_per_pixel():
    """Where MILES has rows only MILES counts; elsewhere Pickles; the grid only where neither."""
    from csstflux.model.calibrate import prioritise

    n_pix = OUTPUT_GRID.n
    subset = np.array(["grid"] * 4 + ["miles"] * 3 + ["pickles"] * 3)
    mask = np.zeros((10, n_pix), bool)
    mask[4:7, :200] = True          # MILES: no flux in the first 200 pixels
    mask[7:10, :100] = True         # Pickles: none in the first 100
    r = np.ones((10, n_pix))
    out = prioritise([Residuals(20.0, r, r, mask)], subset, ("miles", "pickles", "grid"))
    keep = ~out[0].mask
    assert keep[4:7, 200:].all() and not keep[:4, 200:].any() and not keep[7:, 200:].any()
    assert keep[7:, 100:200].all() and not keep[:4, 100:200].any()
    assert keep[:4, :100].all() and not keep[4:, :100].any()
    # a subset with fewer rows than min_rows at a pixel does not take it
    out2 = prioritise([Residuals(20.0, r, r, mask)], subset, ("miles", "pickles", "grid"),
                      min_rows=4)
    assert (~out2[0].mask)[:4].all() and not (~out2[0].mask)[4:].any()


def test_prioritise_pools_the_subsets_of_one_entry():
    """"miles+pickles": both sets' rows wherever either has enough, the grid only beyond both;
    the group's row count (not each set's) decides whether it takes a pixel."""
    from csstflux.model.calibrate import prioritise

    n_pix = OUTPUT_GRID.n
    subset = np.array(["grid"] * 4 + ["miles"] * 3 + ["pickles"] * 3)
    mask = np.zeros((10, n_pix), bool)
    mask[4:7, :200] = True          # MILES: no flux in the first 200 pixels
    mask[7:10, :100] = True         # Pickles: none in the first 100
    mask[8:10, 100:150] = True      # only one Pickles row at pixels 100-149
    r = np.ones((10, n_pix))
    keep = ~prioritise([Residuals(20.0, r, r, mask)], subset, ("miles+pickles", "grid"))[0].mask
    assert keep[4:, 200:].all() and not keep[:4, 200:].any()          # pooled where both have
    assert keep[7:, 150:200].all() and not keep[:7, 150:200].any()     # Pickles alone
    # pixels 100-149: the group has one usable row (< min_rows 3), so the grid takes them
    assert keep[:4, 100:150].all() and not keep[4:, 100:150].any()
    assert keep[:4, :100].all() and not keep[4:, :100].any()
    # the same rows with the entries apart: MILES alone where it has flux
    apart = ~prioritise([Residuals(20.0, r, r, mask)], subset,
                        ("miles", "pickles", "grid"))[0].mask
    assert not apart[7:, 200:].any() and keep[7:, 200:].all()
    with pytest.raises(ValueError, match="twice"):
        prioritise([Residuals(20.0, r, r, mask)], subset, ("miles+pickles", "pickles"))


def test_prioritise_refuses_a_name_with_no_rows():
    from csstflux.model.calibrate import prioritise

    r = np.ones((2, OUTPUT_GRID.n))
    res = [Residuals(20.0, r, r, np.zeros(r.shape, bool))]
    with pytest.raises(ValueError, match="'mile'.*did you mean 'miles'"):
        prioritise(res, np.array(["miles", "grid"]), ("mile", "grid"))


def test_reference_sigma_recovers_a_term_added_in_quadrature():
    """r ~ N(0, σ² + ρ²) with σ = 0.01 and ρ = 0.02 given: ρ is recovered to the sampling error
    of a 68th percentile of 3 × 600 × 9 values, and hypot(σ, ρ) covers 0.683 of fresh draws;
    residuals already inside σ give ρ = 0 exactly."""
    rng = np.random.default_rng(11)
    shape = (600, OUTPUT_GRID.n)
    sig = np.full(shape, 0.01)

    def draws(scale):
        return [Residuals(snr, scale * rng.normal(size=shape), sig, np.zeros(shape, bool))
                for snr in (20.0, 40.0, 80.0)]

    rho = reference_sigma_from_residuals(draws(np.hypot(0.01, 0.02)), window=9)
    np.testing.assert_allclose(np.median(rho), 0.02, rtol=0.02)
    assert np.all(np.abs(rho / 0.02 - 1.0) < 0.1)
    fresh = draws(np.hypot(0.01, 0.02))
    assert band_coverage(fresh, floor=rho)["all"] == pytest.approx(ONE_SIGMA, abs=0.01)
    assert band_coverage(fresh)["all"] < 0.4
    assert np.all(reference_sigma_from_residuals(draws(0.005), window=9) == 0.0)


def library_rows(n_per_group, delta=0.02, seed=0):
    """Validation and test rows of a training library ("miles", targets as predicted) and of
    an independent one ("pickles") whose every star is off by its own gray factor 1 + δ,
    δ ~ N(0, delta²): the libraries disagree star by star."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("validation", "test"):
        split_code = SPLITS[split]
        d = rows(2 * n_per_group, ("miles", "pickles"))
        pk = np.asarray([str(s) for s in d.subset]) == "pickles"
        targets = d.targets.copy()
        targets[pk] *= 1.0 + delta * rng.normal(size=(int(pk.sum()), 1))
        out[split] = TrainingArrays(**{k: getattr(d, k) for k in (
            "inputs", "input_mask", "target_mask", "teff", "logg", "feh", "subset", "name")},
            targets=targets, split=np.full(len(d), split_code, np.int8))
    return out


def test_fit_reference_sigma_measures_the_library_disagreement_out_of_sample():
    """A predictor whose σ is right for the training library: the reference term fitted on the
    independent library is its star-to-star disagreement (δ of 2 %, next to σ of 1 %), each
    group judged with the term fitted on the other covers ~0.683, and the training library's
    coverage with σ alone stays ~0.683."""
    data = library_rows(300)
    fit = fit_reference_sigma(TooConfident(factor=1.0), data, ["pickles"], seed=2)
    gv = BANDS["GV"].mask(WL)
    # |r| < hypot(σ, ρ) with r ≈ σz − δ: ρ² is the 68th percentile of δ² + σ²(z² − 1)
    assert np.median(fit.sigma[gv]) == pytest.approx(0.02, rel=0.15)
    assert set(fit.fold_sigma) == {"validation", "test"}
    before, after = fit.coverage_without["by_subset"], fit.coverage_crossfit["by_subset"]
    assert before["pickles"]["GV"] < 0.45
    assert after["pickles"]["GV"] == pytest.approx(ONE_SIGMA, abs=0.05)
    assert before["miles"]["GV"] == pytest.approx(ONE_SIGMA, abs=0.02)
    assert after["miles"]["GV"] > 0.9                 # the term is not for the training scale
    assert fit.subset_counts == {"validation": {"miles": 300, "pickles": 300},
                                 "test": {"miles": 300, "pickles": 300}}
    section = fit.card_section({"trainset": "x"})
    assert section["reference"] == ["pickles"] and section["fitted_on"]["trainset"] == "x"
    with pytest.raises(ValueError, match="two groups"):
        fit_reference_sigma(TooConfident(), {"test": data["test"]}, ["pickles"])
    with pytest.raises(ValueError, match="no rows of the reference"):
        fit_reference_sigma(TooConfident(), data, ["ngsl"])


def test_reference_sigma_on_the_card_leaves_sed_and_err_alone(model_path, tmp_path):
    from csstflux.model.card import read_card
    from csstflux.model.predictor import load_predictor

    rho = np.linspace(0.0, 0.05, OUTPUT_GRID.n)
    card = apply_reference_sigma(model_path, rho, tmp_path / "ref", {"reference": ["pickles"]})
    assert card.reference_sigma == pytest.approx(list(rho))
    assert card.calibration["reference"]["base_model"]["archive_sha256"] == \
        read_card(model_path)[0].archive_sha256
    assert load_predictor(tmp_path / "ref" / "m.keras").reference_sigma == pytest.approx(rho)
    assert load_predictor(model_path).reference_sigma is None
    (sed0, err0), (sed1, err1) = predict_both(model_path, tmp_path / "ref" / "m.keras", seed=1)
    np.testing.assert_array_equal(sed0, sed1)
    np.testing.assert_array_equal(err0, err1)
    with pytest.raises(ValueError, match="non-negative"):
        apply_reference_sigma(model_path, -rho - 0.1, tmp_path / "bad")


def test_calibrate_reference_command(model_path, tmp_path, monkeypatch):
    import csstflux.model.predictor as predictor_module

    data = library_rows(60, seed=4)
    write_trainstore(tmp_path / "ts.zarr",
                     TrainingArrays.concatenate([data["validation"], data["test"]]))
    monkeypatch.setattr(predictor_module, "load_predictor",
                        lambda path: TooConfident(factor=1.0))
    out = tmp_path / "ref"
    args = ["calibrate-reference", "--model", str(model_path), "--trainset",
            str(tmp_path / "ts.zarr"), "--reference", "pickles", "--out", str(out)]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    card = json.loads((out / "m.json").read_text())
    rho = np.array(card["calibration"]["reference_sigma"])
    assert rho.shape == (OUTPUT_GRID.n,) and summary["groups"] == ["validation", "test"]
    assert summary["reference_sigma_at"]["5000"] == pytest.approx(
        np.interp(5000.0, WL, rho))
    assert summary["coverage_crossfit"]["pickles"]["GV"] > \
        summary["coverage_without"]["pickles"]["GV"] + 0.15
    assert card["calibration"]["reference"]["groups"] == ["validation", "test"]
    assert (out / "reference_sigma.csv").read_text().splitlines()[0] == \
        "wavelength,reference_sigma,without_validation,without_test"
    assert (out / "reference_sigma.png").exists()
    for bad, message in ((["--splits", "test"], "two or more"),
                         (["--reference", "gird"], "no rows of the reference")):
        res = CliRunner().invoke(cli, [*args, "--overwrite", *bad])
        assert res.exit_code == 2 and message in res.output, res.output
