"""Evaluation tables (paper Figs. 2–5) against a hand computation with a fake predictor whose
residuals and σ are known exactly; the ``csstflux evaluate`` command on a tiny store."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.errors import ModelFileError
from csstflux.grids import BANDS, INPUT_GRID, OUTPUT_GRID, SIGMA_CHECK_WAVELENGTHS
from csstflux.io.stores.trainset import SPLITS, TrainingArrays, write_trainstore
from csstflux.model.evaluate import (
    PAPER_TEST_SIGMA,
    evaluate_rows,
    nearest_reference_sed,
    predict_residuals,
    subset_rows,
    teff_bin_edges,
)

WL = OUTPUT_GRID.wavelength


def make_rows(rng, n=24):
    """Clean inputs of 1.0 (so the noisy input is 1 + r), smooth positive targets, 3 % of the
    target pixels masked; Teff around 6000 K and 8000 K; two subsets."""
    teff = np.concatenate([rng.uniform(5800, 6200, n // 2), rng.uniform(7800, 8200, n - n // 2)])
    targets = 1.0 + rng.uniform(0.1, 0.5, (n, 1)) * (WL / 5556.0 - 1.0)
    return TrainingArrays(
        inputs=np.ones((n, INPUT_GRID.n)), input_mask=np.zeros((n, INPUT_GRID.n), bool),
        targets=targets, target_mask=rng.random((n, OUTPUT_GRID.n)) < 0.03, teff=teff,
        logg=np.full(n, 4.0), feh=np.zeros(n), split=np.ones(n, np.int8),
        subset=np.array(["grid", "miles"] * (n // 2)), name=np.array([f"s{i}" for i in range(n)]))


class FakePredictor:
    """sed = target·(1 + D), sed_err = S·|sed|, with D = a_i · w_λ · SNR · (x − 1) (Gaussian,
    scale a_i w_λ) and S = 0.8 a_i w_λ; records every call."""

    def __init__(self, data):
        self.targets = data.targets
        self.a = np.where(data.teff < 7000, 0.02, 0.005)[:, None]
        self.w = np.where(WL < 4200, 3.0, 1.0)[None, :]
        self.calls = []

    def __call__(self, x, e):
        x, e = np.asarray(x, float), np.asarray(e, float)
        snr = float(np.round(1.0 / e[0, 0]))
        d = self.a * self.w * snr * (x[:, :OUTPUT_GRID.n] - 1.0)
        s = 0.8 * self.a * self.w * np.ones_like(d)
        sed = self.targets * (1.0 + d)
        self.calls.append({"snr": snr, "x": x, "e": e, "d": d, "s": s})
        return sed, s * np.abs(sed)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    data = make_rows(rng)
    fake = FakePredictor(data)
    ev = evaluate_rows(fake, data, snrs=(20, 40, 80), seed=5)
    return data, fake, ev


def hand_band_stats(d, mask, rows, band):
    """Paper's typical values by loops: per pixel across rows, then median over band pixels."""
    med, sig, std = [], [], []
    for p in np.flatnonzero(band.mask(WL)):
        v = d[rows, p][~mask[rows, p]]
        if v.size:
            p16, p50, p84 = np.percentile(v, [16, 50, 84])
            med.append(p50)
            sig.append((p84 - p16) / 2)
            std.append(np.sqrt(np.mean((v - v.mean()) ** 2)))
    return np.median(med), np.median(sig), np.median(std)


def test_noise_is_eq1_seeded_per_snr(case):
    data, fake, _ = case
    assert [c["snr"] for c in fake.calls] == [20, 40, 80]
    for c in fake.calls:
        np.testing.assert_allclose(c["e"], 1.0 / c["snr"], rtol=1e-6)      # σ = |F| / SNR
        assert np.std(c["x"] - 1.0) == pytest.approx(1.0 / c["snr"], rel=0.01)
    # the draw at SNR 40 does not depend on the other SNRs asked for
    again = FakePredictor(data)
    predict_residuals(again, data, (40,), seed=5)
    np.testing.assert_array_equal(again.calls[0]["x"], fake.calls[1]["x"])


def test_band_tables_match_hand_computation(case):
    data, fake, ev = case
    assert ev.teff_edges[0] == 4750 and np.all(np.diff(ev.teff_edges) == 500)
    for k, c in enumerate(fake.calls):
        for b in range(ev.teff_edges.size - 1):
            rows = (data.teff >= ev.teff_edges[b]) & (data.teff < ev.teff_edges[b + 1])
            assert ev.binned[k].count[b] == rows.sum()
            if not rows.any():
                continue
            for j, band in enumerate(BANDS.values()):
                m, s, sd = hand_band_stats(c["d"], data.target_mask, rows, band)
                assert ev.binned[k].median[b, j] == pytest.approx(m, abs=1e-12)
                assert ev.binned[k].sigma[b, j] == pytest.approx(s, rel=1e-9)
                assert ev.binned[k].std[b, j] == pytest.approx(sd, rel=1e-9)
        all_rows = np.ones(len(data), bool)
        for j, band in enumerate(BANDS.values()):
            _, s, _ = hand_band_stats(c["d"], data.target_mask, all_rows, band)
            assert ev.typical["sigma"][k, j] == pytest.approx(s, rel=1e-9)


def test_sigma_check_and_coverage_match_hand_computation(case):
    data, fake, ev = case
    pix = [int(np.argmin(np.abs(WL - w))) for w in SIGMA_CHECK_WAVELENGTHS]
    np.testing.assert_array_equal(ev.check_pixels, pix)
    b6000 = int(np.searchsorted(ev.teff_edges, 6000.0, side="right") - 1)
    rows = (data.teff >= ev.teff_edges[b6000]) & (data.teff < ev.teff_edges[b6000 + 1])
    inside_all, n_all = {k: 0 for k in BANDS}, {k: 0 for k in BANDS}
    for k, c in enumerate(fake.calls):
        for i, p in enumerate(pix):
            ok = rows & ~data.target_mask[:, p]
            assert ev.predicted_sigma[k, b6000, i] == pytest.approx(np.median(c["s"][ok, p]))
            p16, p84 = np.percentile(c["d"][ok, p], [16, 84])
            assert ev.empirical_sigma[k, b6000, i] == pytest.approx((p84 - p16) / 2)
        for name, band in BANDS.items():
            sel = ~data.target_mask & band.mask(WL)[None, :]
            inside = int((np.abs(c["d"]) < c["s"])[sel].sum())
            assert ev.coverage[f"{c['snr']:g}"][name] == pytest.approx(inside / sel.sum())
            inside_all[name] += inside
            n_all[name] += int(sel.sum())
    for name in BANDS:
        assert ev.coverage["all"][name] == pytest.approx(inside_all[name] / n_all[name])
        # Gaussian residuals with σ_pred = 0.8 σ: coverage ≈ erf(0.8/√2) = 0.576
        assert ev.coverage["all"][name] == pytest.approx(0.576, abs=0.03)
    grid = data.subset == "grid"
    d = np.concatenate([c["d"][grid] for c in fake.calls])
    s = np.concatenate([c["s"][grid] for c in fake.calls])
    sel = np.tile(~data.target_mask[grid], (3, 1)) & BANDS["GV"].mask(WL)[None, :]
    assert ev.coverage_by_subset["grid"]["GV"] == pytest.approx(
        (np.abs(d) < s)[sel].sum() / sel.sum())


def test_coverage_with_the_reference_term_matches_hand_computation(case):
    """With ρ given, each subset's coverage is also counted against hypot(σ, ρ); without it
    the table is empty."""
    data, _, ev = case
    assert ev.coverage_with_reference_by_subset == {}
    rho = np.where(WL < 5000, 0.03, 0.01)
    fake = FakePredictor(data)
    ev2 = evaluate_rows(fake, data, snrs=(20, 40, 80), seed=5, reference_sigma=rho)
    miles = data.subset == "miles"
    d = np.concatenate([c["d"][miles] for c in fake.calls])
    s = np.concatenate([c["s"][miles] for c in fake.calls])
    sel = np.tile(~data.target_mask[miles], (3, 1)) & BANDS["GV"].mask(WL)[None, :]
    inside = (np.abs(d) < np.hypot(s, rho[None, :]))[sel]
    assert ev2.coverage_with_reference_by_subset["miles"]["GV"] == pytest.approx(inside.mean())
    assert inside.mean() > ev2.coverage_by_subset["miles"]["GV"]
    low, high = ev2.coverage_with_reference_interval_by_subset["miles"]["GV"]
    assert low <= inside.mean() <= high
    summary = ev2.summary()
    assert summary["coverage_with_reference_by_subset"]["grid"]["GU"] == \
        ev2.coverage_with_reference_by_subset["grid"]["GU"]


def test_nearest_reference_sed_takes_the_median_of_the_nearest_stars():
    """Reference inputs 1 + a_j·shape with targets a_j·λ/5556: a row whose input is the
    reference's a = 0.30 gets, with k = 3, the median of the targets of a = 0.25, 0.30, 0.35
    (its three nearest), i.e. exactly a = 0.30's; masked input pixels do not count in the
    distance, and a pixel where none of the neighbours has flux is masked."""
    a = np.array([0.05, 0.25, 0.30, 0.35, 0.90, 1.50])
    shape = np.sin(INPUT_GRID.wavelength / 300.0)
    n = a.size
    ref = TrainingArrays(
        inputs=1.0 + a[:, None] * shape, input_mask=np.zeros((n, INPUT_GRID.n), bool),
        targets=a[:, None] * WL / 5556.0, target_mask=np.zeros((n, OUTPUT_GRID.n), bool),
        teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n),
        split=np.zeros(n, np.int8), subset=np.array(["miles"] * n),
        name=np.array([f"r{i}" for i in range(n)]))
    ref.target_mask[1:4, 100] = True                 # no neighbour of the row has flux here
    row_in = 1.0 + 0.30 * shape
    row_mask = np.zeros(INPUT_GRID.n, bool)
    row_mask[:500] = True
    row_in[:500] = 1.0 + 5.0 * shape[:500]           # wrong, but masked: must not count
    data = TrainingArrays(
        inputs=row_in[None], input_mask=row_mask[None], targets=np.ones((1, OUTPUT_GRID.n)),
        target_mask=np.zeros((1, OUTPUT_GRID.n), bool), teff=np.array([6000.0]),
        logg=np.array([4.0]), feh=np.zeros(1), split=np.full(1, 2, np.int8),
        subset=np.array(["pickles"]), name=np.array(["p"]))
    sed, bad = nearest_reference_sed(ref, data, k=3)
    expected = 0.30 * WL / 5556.0
    keep = np.arange(OUTPUT_GRID.n) != 100
    np.testing.assert_allclose(sed[0, keep], expected[keep], rtol=1e-12)
    assert bad[0, 100] and sed[0, 100] == 0.0 and bad.sum() == 1
    sed1, _ = nearest_reference_sed(ref, data, k=1)
    np.testing.assert_allclose(sed1[0, keep], expected[keep], rtol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        nearest_reference_sed(ref, data, k=7)


def test_baseline_in_the_evaluation_matches_hand_computation(case):
    """The baseline's median residual per subset is that of the noise-free nearest-star SED;
    the network-minus-baseline median pools the network's residuals over the SNRs."""
    data, _, _ = case
    fake = FakePredictor(data)
    ref = data.take(np.arange(0, len(data), 2))
    ev = evaluate_rows(fake, data, snrs=(20, 80), seed=5, baseline=ref, baseline_k=1,
                       baseline_name="ref")
    sed_b, bad_b = nearest_reference_sed(ref, data, 1)
    p = int(np.argmin(np.abs(WL - 5000.0)))
    miles = data.subset == "miles"
    ok = miles & ~data.target_mask[:, p] & ~bad_b[:, p]
    r_b = sed_b[ok, p] / data.targets[ok, p] - 1.0
    b = ev.baseline_by_subset["miles"]
    assert b["reference"] == "ref" and b["k"] == 1
    assert b["median"]["5000"] == pytest.approx(np.median(r_b))
    r_net = np.concatenate([c["d"][ok, p] for c in fake.calls])
    assert b["network_minus_baseline"]["5000"] == pytest.approx(
        np.median(r_net - np.tile(r_b, 2)))
    assert ev.summary()["baseline_by_subset"]["grid"]["k"] == 1


def test_paper_comparison_and_summary(case):
    _, _, ev = case
    rows = ev.paper_comparison()
    assert len(rows) == 2 * 3 * 3                                  # Teff × SNR × band
    r = next(r for r in rows if r["teff"] == 8000 and r["snr"] == 40 and r["band"] == "GU")
    assert r["bin"] == [7750.0, 8250.0] and r["paper"] == PAPER_TEST_SIGMA[8000.0]["GU"][1]
    b = int(np.searchsorted(ev.teff_edges, 8000.0, side="right") - 1)
    assert r["sigma"] == pytest.approx(ev.binned[1].sigma[b, 0]) and r["n"] == 12
    summary = json.loads(json.dumps(ev.summary()))
    assert summary["subsets"] == {"grid": 12, "miles": 12}
    assert set(summary["typical"]) == {"20", "40", "80"}
    assert set(summary["coverage"]) == {"all", "20", "40", "80"}
    assert set(summary["coverage"]["all"]) == {"GU", "GV", "GI", "all"}


def test_teff_bins_and_subsample():
    np.testing.assert_array_equal(teff_bin_edges([5100.0, 9600.0]),
                                  np.arange(4750.0, 9751.0, 500.0))
    np.testing.assert_array_equal(teff_bin_edges([4200.0], 1000.0),
                                  np.arange(3500.0, 10501.0, 1000.0))
    data = make_rows(np.random.default_rng(1), n=20)
    small = subset_rows(data, {"grid": 3}, seed=2)
    assert (small.subset == "grid").sum() == 3 and (small.subset == "miles").sum() == 10


@pytest.fixture(scope="module")
def tiny_store_and_model(tmp_path_factory):
    from csstflux.model.card import save_model
    from csstflux.model.network import build_uaranet

    d = tmp_path_factory.mktemp("eval")
    data = make_rows(np.random.default_rng(3), n=8)
    data = TrainingArrays(**{k: getattr(data, k) for k in (
        "inputs", "input_mask", "targets", "target_mask", "teff", "logg", "feh", "subset",
        "name")}, split=np.array([1] * 6 + [2] * 2, np.int8))
    write_trainstore(d / "ts.zarr", data)
    save_model(build_uaranet(seed=4), d / "m.keras")
    return d


@pytest.mark.slow
def test_evaluate_command_writes_tables_and_json(tiny_store_and_model, tmp_path):
    d = tiny_store_and_model
    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(d / "m.keras"), "--trainset",
                                   str(d / "ts.zarr"), "--snrs", "20,80", "--out", str(out),
                                   "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_rows"] == 6 and summary["split"] == "test"
    assert set(summary["typical"]) == {"20", "80"} and not summary["calibrated"]
    assert all(isinstance(summary["coverage"]["all"][b], float) for b in BANDS)
    for name in ("band_stats.csv", "sigma_check.csv", "coverage.csv", "paper_comparison.csv",
                 "pixel_stats.csv", "residuals.png", "band_sigma.png", "sigma_check.png",
                 "coverage.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    header = (out / "sigma_check.csv").read_text().splitlines()[0]
    assert header.startswith("snr,teff_lo,teff_hi,n,wavelength")


def test_evaluate_command_baseline(tmp_path, monkeypatch):
    """--baseline reads the named subset's training rows and reports the model-free check;
    a subset the store does not have is a clear error."""
    import csstflux.model.predictor as predictor_module

    data = make_rows(np.random.default_rng(8), n=12)
    split = np.array([SPLITS["train"]] * 6 + [SPLITS["test"]] * 6, np.int8)
    data = TrainingArrays(**{k: getattr(data, k) for k in (
        "inputs", "input_mask", "targets", "target_mask", "teff", "logg", "feh", "subset",
        "name")}, split=split)
    write_trainstore(tmp_path / "ts.zarr", data)
    test_rows = data.take(split == SPLITS["test"])
    monkeypatch.setattr(predictor_module, "load_predictor",
                        lambda path: _Card(FakePredictor(test_rows)))
    args = ["evaluate", "--model", str(tmp_path), "--trainset", str(tmp_path / "ts.zarr"),
            "--snrs", "20", "--out", str(tmp_path / "ev")]
    res = CliRunner().invoke(cli, [*args, "--baseline", "miles", "--baseline-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    b = json.loads(res.stdout)["baseline_by_subset"]
    assert set(b) == {"grid", "miles"} and b["grid"]["reference"] == "miles"
    assert b["grid"]["k"] == 2 and isinstance(b["grid"]["median"]["5000"], float)
    res = CliRunner().invoke(cli, [*args, "--baseline", "pickles"])
    assert res.exit_code == 2 and "no subset ['pickles']" in res.output


class _Card:
    """A predictor stand-in with the attributes the evaluate command reads."""

    def __init__(self, predictor):
        from types import SimpleNamespace

        self._p = predictor
        self.reference_sigma = None
        self.card = SimpleNamespace(model_id="fake", sigma_scale=None, sigma_floor=None,
                                    sed_factor=None)

    def __call__(self, x, e):
        return self._p(x, e)


def test_missing_default_model_is_a_clear_error(tmp_path, monkeypatch):
    from csstflux.model import card

    try:
        card.default_model_path()
    except ModelFileError as exc:
        assert "no default model is shipped" in str(exc) and "--model" in str(exc)
    else:
        pytest.skip("a default model is shipped with this installation")
    res = CliRunner().invoke(cli, ["evaluate", "--trainset", str(tmp_path)])
    assert res.exit_code == 1 and "no default model is shipped" in res.output


def test_bias_and_ratio_to_ck04_per_subset_match_hand_computation(case):
    from csstflux.library.sed_grid import load_sed_grid
    from csstflux.model.evaluate import BIAS_WAVELENGTHS

    data, fake, ev = case
    grid, inside = load_sed_grid()(data.teff, data.logg, data.feh)
    for subset in ("grid", "miles"):
        rows = data.subset == subset
        for lam in BIAS_WAVELENGTHS:
            p = int(np.argmin(np.abs(WL - lam)))
            pooled = np.concatenate([c["d"][rows, p][~data.target_mask[rows, p]]
                                     for c in fake.calls])
            assert ev.median_by_subset[subset][f"{lam:g}"] == pytest.approx(np.median(pooled))
            for c in fake.calls:     # each SNR alone: the fake's residual grows with the SNR
                one = c["d"][rows, p][~data.target_mask[rows, p]]
                assert ev.median_by_subset_snr[subset][f"{c['snr']:g}"][f"{lam:g}"] == \
                    pytest.approx(np.median(one))
            ok = rows & inside & ~data.target_mask[:, p]
            ratio = np.median(data.targets[ok, p] / grid[ok, p] - 1.0)
            assert ev.grid_ratio_by_subset[subset][f"{lam:g}"] == pytest.approx(ratio)
    summary = ev.summary()
    assert set(summary["median_by_subset"]) == {"grid", "miles"}
    assert set(summary["median_by_subset_snr"]["miles"]) == {"20", "40", "80"}
    assert set(summary["grid_ratio_by_subset"]["miles"]) == {f"{w:g}" for w in BIAS_WAVELENGTHS}


def test_coverage_interval_resamples_stars_not_pixels():
    """Stars whose residual is one N(0, 1) value at every pixel (σ = 1) are each inside or
    outside as a whole: the coverage of n stars then spreads like a binomial fraction,
    sqrt(p (1 − p) / n). Independent pixels pin it down far better."""
    from csstflux.model.evaluate import Residuals, band_coverage, band_coverage_interval

    rng = np.random.default_rng(3)
    n = 400
    one = np.ones((n, WL.size))
    star = Residuals(20.0, rng.standard_normal((n, 1)) * one, one, np.zeros((n, WL.size), bool))
    cov = band_coverage([star])
    ci = band_coverage_interval([star], n_boot=4000)
    p = cov["GV"]
    binom = np.sqrt(p * (1 - p) / n)
    for band in BANDS:
        lo, hi = ci[band]
        assert lo < cov[band] < hi
        assert abs((hi - lo) / 2 / binom - 1) < 0.15
    # rows outside the selection do not count; a band with every pixel masked has no interval
    masked = Residuals(20.0, star.residual, one, np.repeat(WL[None, :] < 4200, n, axis=0))
    sub = band_coverage_interval([masked], np.arange(n) < n // 2)
    assert sub["GU"] == [None, None] and sub["GV"][0] is not None
    pix = Residuals(20.0, rng.standard_normal((n, WL.size)), one, star.mask)
    lo, hi = band_coverage_interval([pix])["GV"]
    assert (hi - lo) / 2 < binom / 5
