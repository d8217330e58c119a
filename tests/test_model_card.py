"""Model files round-trip, and a tampered archive or a card for another grid is refused."""

import json
import shutil

import keras
import numpy as np
import pytest

from csstflux import grids
from csstflux.errors import GridMismatchError, ModelFileError
from csstflux.model.card import ModelCard, load_model, read_card, save_model, sha256_file
from csstflux.model.loss import uaranet_loss
from csstflux.model.network import build_uaranet


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A seeded UaRA-net saved once: (model, card, directory)."""
    model = build_uaranet(seed=42)
    d = tmp_path_factory.mktemp("models")
    card = save_model(model, d, name="demo", training_data={"set": "synthetic"},
                      metrics={"rms": 0.01})
    return model, card, d


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1)
    flux = (1 + 0.05 * rng.normal(size=(4, grids.INPUT_GRID.n))).astype(np.float32)
    return {"flux": flux, "flux_err": np.full_like(flux, 0.05)}


@pytest.fixture
def copy(saved, tmp_path):
    """A private copy of the saved model files, safe to damage."""
    _, _, d = saved
    for f in ("demo.keras", "demo.json"):
        shutil.copy(d / f, tmp_path / f)
    return tmp_path


def test_save_writes_archive_and_card(saved):
    _, card, d = saved
    assert sorted(p.name for p in d.iterdir()) == ["demo.json", "demo.keras"]
    assert card.archive_sha256 == sha256_file(d / "demo.keras")
    assert card.model_id == f"demo-{card.archive_sha256[:12]}"
    on_disk = json.loads((d / "demo.json").read_text())
    assert on_disk["input_grid"] == grids.INPUT_GRID.to_attrs()
    assert on_disk["output_grid"] == grids.OUTPUT_GRID.to_attrs()
    assert on_disk["normalisation"] == {"continuum_window": 51,
                                        "scaling_window": [5526.0, 5586.0]}
    assert on_disk["keras_backend"] == keras.backend.backend()
    assert on_disk["training_data"] == {"set": "synthetic"}
    assert ModelCard.from_json((d / "demo.json").read_text()) == card


def test_save_load_gives_identical_predictions(saved, inputs):
    model, card, d = saved
    for path in (d, d / "demo.keras", d / "demo.json"):
        assert read_card(path) == (card, d / "demo.json", d / "demo.keras")
    loaded, loaded_card = load_model(d)
    assert loaded_card == card
    want = keras.ops.convert_to_numpy(model(inputs, training=False))
    got = keras.ops.convert_to_numpy(loaded(inputs, training=False))
    np.testing.assert_array_equal(got, want)


def test_loading_for_inference_draws_no_initial_weights(saved, inputs, monkeypatch):
    """The inference load gives the saved weights without running a random initialiser."""
    model, card, d = saved
    calls = []
    draw = keras.initializers.HeNormal.__call__
    monkeypatch.setattr(keras.initializers.HeNormal, "__call__",
                        lambda self, *a, **k: calls.append(1) or draw(self, *a, **k))
    standard, _ = load_model(d)
    n_standard = len(calls)
    fast, fast_card = load_model(d, for_inference=True)
    assert n_standard > 0 and len(calls) == n_standard     # none while loading for inference
    assert fast_card == card
    for a, b in zip(standard.get_weights(), fast.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    want = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fast(inputs, training=False)), want)
    # a new network built afterwards is random again (the switch is only for the load)
    assert not np.array_equal(build_uaranet().get_weights()[0], 0.0)
    with pytest.raises(ValueError, match="no training configuration"):
        load_model(d, compile=True, for_inference=True)

def test_refuses_to_overwrite(saved):
    model, _, d = saved
    with pytest.raises(ModelFileError, match="exists"):
        save_model(model, d / "demo.keras")


def test_tampered_archive_is_refused(copy):
    archive = copy / "demo.keras"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01                     # one flipped bit
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum") as err:
        load_model(copy / "demo.keras")
    assert "demo.keras" in str(err.value)


def test_truncated_archive_is_refused(copy):
    archive = copy / "demo.keras"
    archive.write_bytes(archive.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="demo.keras"):
        load_model(copy)


@pytest.mark.parametrize(("grid", "key", "value"), [("output_grid", "n", 575),
                                                    ("input_grid", "dlnlambda", 1e-4)])
def test_card_for_another_grid_is_refused(copy, grid, key, value):
    card = json.loads((copy / "demo.json").read_text())
    card[grid][key] = value
    (copy / "demo.json").write_text(json.dumps(card))
    with pytest.raises(GridMismatchError, match=f"another {grid.split('_')[0]} grid") as err:
        load_model(copy / "demo.keras")
    assert err.value.expected == getattr(grids, grid.upper()).to_attrs()
    assert err.value.found[key] == value
    assert "demo.json" in str(err.value)


def test_missing_or_malformed_card_is_refused(copy):
    text = (copy / "demo.json").read_text()
    (copy / "demo.json").write_text(text[:-20])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(copy / "demo.keras")
    card = json.loads(text)
    card["sha256"] = card.pop("archive_sha256")
    (copy / "demo.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="'sha256'; did you mean 'archive_sha256'"):
        load_model(copy / "demo.keras")
    (copy / "demo.json").unlink()
    with pytest.raises(ModelFileError, match="card not found"):
        load_model(copy / "demo.keras")


def test_network_for_another_grid_is_refused(tmp_path):
    save_model(build_uaranet(n_in=100, n_out=10, seed=0), tmp_path / "small.keras")
    with pytest.raises(GridMismatchError, match="network shapes"):
        load_model(tmp_path / "small.keras")


def test_calibration_must_match_output_grid(tmp_path):
    model = build_uaranet(seed=1)
    with pytest.raises(ValueError, match="574 positive finite numbers"):
        save_model(model, tmp_path, calibration={"sigma_scale": [1.0] * 10})
    assert not list(tmp_path.glob("*.keras")) and not list(tmp_path.glob("*.json"))


def test_calibration_fields_are_validated(saved):
    import dataclasses

    _, card, _ = saved
    n = grids.OUTPUT_GRID.n
    good = {"sigma_scale": [2.0] * n, "sigma_floor": [0.0] * (n - 1) + [0.01]}
    cal = dataclasses.replace(card, calibration=good)
    assert cal.sigma_floor == good["sigma_floor"] and cal.sigma_scale == good["sigma_scale"]
    assert ModelCard.from_json(cal.to_json()) == cal                  # round trip
    floor_only = dataclasses.replace(card, calibration={"sigma_floor": [0.01] * n})
    assert floor_only.sigma_scale is None and floor_only.sigma_floor == [0.01] * n
    scale_only = dataclasses.replace(card, calibration={"sigma_scale": [2.0] * n})
    assert scale_only.sigma_floor is None                            # old cards: no floor
    assert card.sigma_scale is None and card.sigma_floor is None
    bad_floors = ([0.01] * (n - 1), [0.01] * (n - 1) + [-1e-9], [0.01] * (n - 1) + [np.nan],
                  [0.01] * (n - 1) + [np.inf], [0.01] * (n - 1) + ["0.01"], 0.01)
    for bad in bad_floors:
        with pytest.raises(ValueError, match=f"sigma_floor must be {n} non-negative finite"):
            dataclasses.replace(card, calibration={"sigma_floor": bad})
    for bad in ([1.0] * (n - 1) + [0.0], [1.0] * (n - 1) + [np.inf], [1.0] * (n - 1) + [True]):
        with pytest.raises(ValueError, match=f"sigma_scale must be {n} positive finite"):
            dataclasses.replace(card, calibration={"sigma_scale": bad})
        with pytest.raises(ValueError, match=f"sed_factor must be {n} positive finite"):
            dataclasses.replace(card, calibration={"sed_factor": bad})
    factor = dataclasses.replace(card, calibration={"sed_factor": [1.02] * n})
    assert factor.sed_factor == [1.02] * n and card.sed_factor is None
    assert ModelCard.from_json(factor.to_json()) == factor


def test_compiled_model_round_trips_with_its_loss(tmp_path, inputs):
    model = build_uaranet(seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=uaranet_loss)
    model.optimizer.build(model.trainable_variables)   # as after training
    save_model(model, tmp_path / "compiled.keras")
    loaded, _ = load_model(tmp_path / "compiled.keras", compile=True)
    assert loaded.loss is uaranet_loss
