"""``csstflux flat-precision``: Monte Carlo precision of the recovered flat (paper §5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from csstflux.cli.flats import flat_precision_cmd
from csstflux.flat.montecarlo import precision_vs_stars, run_precision

BANDS = ("GU", "GV", "GI")


def _invoke(*args: str) -> dict:
    res = CliRunner().invoke(flat_precision_cmd, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_single_condition_json_is_the_flat_dict() -> None:
    out = _invoke("--n-stars", "100", "--trials", "2", "--conditions", "ideal")
    assert {*BANDS, "n_stars", "conditions"} <= out.keys()
    assert out["n_stars"] == 100 and out["conditions"] == "ideal"
    assert all(0 < out[b] < 0.05 for b in BANDS)
    assert all(0 < out["band_averaged"][b] < out[b] for b in BANDS)


def test_both_conditions_and_plots(tmp_path: Path) -> None:
    out = _invoke("--n-stars", "150", "--trials", "2", "--scaling", "100,200",
                  "--out", str(tmp_path))
    for cond in ("ideal", "realistic"):
        block = out[cond]
        assert {*BANDS, "n_stars", "conditions"} <= block.keys()
        assert block["conditions"] == cond and block["n_stars"] == 150
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["flat_map_GI.png", "flat_map_GU.png", "flat_map_GV.png",
                    "precision_vs_stars.png", "residual_vs_wavelength.png"]
    assert all((tmp_path / p).stat().st_size > 5000 for p in pngs)
    assert set(out["files"].values()) == {str(tmp_path / p) for p in pngs}


def test_ideal_precision_scales_as_inverse_sqrt_n() -> None:
    lo, hi = precision_vs_stars((100, 400), n_trials=6, conditions="ideal", seed=3)
    for b in BANDS:
        assert 1.4 < lo.rms[b] / hi.rms[b] < 2.8, (b, lo.rms[b], hi.rms[b])


def test_realistic_is_worse_than_ideal() -> None:
    ideal = run_precision(300, 4, "ideal", seed=5)
    real = run_precision(300, 4, "realistic", seed=5)
    for b in BANDS:
        assert real.rms[b] > ideal.rms[b]
        assert real.band_averaged[b] > ideal.band_averaged[b]


def test_bad_conditions_rejected() -> None:
    with pytest.raises(ValueError, match="conditions"):
        run_precision(100, 1, "sunny")  # type: ignore[arg-type]


def test_anchored_star_scale_costs_precision() -> None:
    """Reddened stars anchored on simulated photometry: the same counts fitted with the true
    fluxes (``known_same``) do better in every band (ideal: the anchors' errors are all the
    SED error there is). 400 stars, 10 trials, ideal: anchored GU 8.0e-3, GV 2.9e-3, GI 2.8e-3
    against known_same 5.1e-3, 1.6e-3, 9.6e-4 (module docstring of csstflux.flat.montecarlo)."""
    out = _invoke("--n-stars", "150", "--trials", "2", "--conditions", "ideal",
                  "--star-scale", "anchored", "--seed", "1")
    assert out["star_scale"] == "anchored" and set(out["known_same"]) == set(BANDS)
    for b in BANDS:
        assert 0 < out["known_same"][b] < out[b] < 0.05, (b, out[b], out["known_same"][b])


def test_ignoring_the_traces_gives_a_worse_flat() -> None:
    """With traces (the default) the same counts are also fitted as if each star's light had
    been recorded at its reference position: in ideal conditions (photon noise only) that
    flat is measurably worse in every band. 400 stars, 4 trials, amplitude 0.05, seeds 0-2:
    ignoring / traced = 1.6-2.6 (GU), 2.4-4.0 (GV), 1.9-2.9 (GI)."""
    out = _invoke("--n-stars", "400", "--trials", "4", "--conditions", "ideal",
                  "--amplitude", "0.05")
    assert out["traces"] is True and out["throughput"] == "tophat 0.3"
    assert out["paper"] == {"GU": 5e-3, "GV": 3e-4, "GI": 5e-4}
    assert len(out["instrument"]["fingerprint"]) == 16
    for b in BANDS:
        assert out["ignoring_traces"][b] > 1.4 * out[b], (b, out[b], out["ignoring_traces"])
        assert out["ignoring_shift"][b] > out[b], (b, out[b], out["ignoring_shift"])


def test_no_traces_is_the_idealised_trial() -> None:
    """--no-traces: every wavelength at the star's position (the paper's trial), the numbers
    of run_precision without an instrument, nothing about ignored traces."""
    out = _invoke("--n-stars", "100", "--trials", "2", "--conditions", "ideal",
                  "--no-traces")
    assert out["traces"] is False and "ignoring_traces" not in out
    assert "ignoring_shift" not in out
    ref = run_precision(100, 2, "ideal")
    assert all(out[b] == ref.rms[b] for b in BANDS)
    res = CliRunner().invoke(flat_precision_cmd, ["--n-stars", "100", "--trials", "1",
                                                  "--conditions", "ideal"])
    assert res.exit_code == 0 and "traces ignored" in res.output
    assert "paper (400 stars, ideal, no traces): GU 5e-03, GV 3e-04, GI 5e-04" in res.output
