"""``csstflux train``: checkpoints every epoch, resumes where it stopped, refuses a changed run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.io.stores.trainset import TrainingArrays, write_trainstore
from csstflux.model.card import load_model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 48
    depth = rng.uniform(0.1, 0.5, (n, 1))
    lam = INPUT_GRID.wavelength
    inputs = 1 - depth * np.exp(-0.5 * ((lam - 5000) / 20) ** 2)
    targets = 1 + depth * (OUTPUT_GRID.wavelength / 5556 - 1)
    path = tmp_path_factory.mktemp("ts") / "ts.zarr"
    write_trainstore(path, TrainingArrays(
        inputs=inputs, input_mask=np.zeros(inputs.shape, bool), targets=targets,
        target_mask=np.zeros(targets.shape, bool), teff=np.full(n, 6000.0),
        logg=np.full(n, 4.0), feh=np.zeros(n), split=np.array([0] * 32 + [2] * 8 + [1] * 8,
                                                             np.int8),
        subset=np.array(["grid"] * n), name=np.array([f"s{i}" for i in range(n)])))
    return path


def config(tmp_path, store, tables="", **extra):
    values = {"batch_size": 16, "steps_per_epoch": 2, "epochs": 2, "patience": 5, "seed": 3,
              **extra}
    lines = [f'trainset = "{store}"', f'run_dir = "{tmp_path / "run"}"']
    lines += [f"{k} = {v}" for k, v in values.items()]
    p = tmp_path / "train.toml"
    p.write_text("[train]\n" + "\n".join(lines) + "\n" + tables)
    return p


@pytest.mark.slow
def test_resume_continues_and_changed_config_is_refused(tmp_path, store):
    cfg = config(tmp_path, store)
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)
    assert first["epochs_done"] == 2 and "model" in first
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 2
    assert (run / "checkpoint.keras").exists() and (run / "history.png").exists()
    # rerun with more epochs: continues at epoch 3, does not repeat epochs 1-2
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--epochs", "3", "--json"])
    assert res.exit_code == 0, res.output
    rows = (run / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    model, card = load_model(json.loads(res.stdout)["model"])
    assert card.training_data["epochs"] == 3
    assert card.training_data["config"]["batch_size"] == 16
    # a finished run is not trained again
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--epochs", "3", "--json"])
    assert len((run / "history.csv").read_text().splitlines()) == 4
    # a changed configuration in the same run folder is refused with a clear error
    cfg2 = config(tmp_path, store, learning_rate=0.01)
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg2)])
    assert res.exit_code == 2 and "another configuration" in res.output


@pytest.mark.slow
def test_time_budget_ends_the_run_and_can_be_raised(tmp_path, store):
    cfg = config(tmp_path, store, max_minutes=0.001, epochs=5)
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["epochs_done"] == 1 and out["stopped"] == "time_budget" and "model" in out
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1 and state["train_seconds"] > 0
    # a larger budget continues the same run
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--max-minutes", "10",
                                   "--epochs", "2", "--json"])
    out = json.loads(res.stdout)
    assert out["epochs_done"] == 2 and out["stopped"] == "epochs"


REALISTIC = """
[train.noise]
lamost_fraction = 0.8
paper_fraction = 0.3
snr_range = [10, 300]
[train.augment]
rv_jitter_kms = 30
resolution = [1700, 2000]
junction_step = 0.03
junction_bump = 0.01
mask_runs = 0.5
"""


@pytest.mark.slow
def test_training_runs_with_realistic_noise_and_augmentations(tmp_path, store):
    cfg = config(tmp_path, store, tables=REALISTIC, epochs=1)
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["epochs_done"] == 1 and np.isfinite(out["best_val_loss"])
    _, card = load_model(out["model"])
    recorded = card.training_data["config"]
    assert recorded["noise"]["lamost_fraction"] == 0.8
    assert recorded["augment"]["resolution"] == [1700.0, 2000.0]
    # the same folder with the options changed is another run
    cfg2 = config(tmp_path, store, tables=REALISTIC.replace("0.8", "0.5"), epochs=1)
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg2)])
    assert res.exit_code == 2 and "another configuration" in res.output


@pytest.mark.slow
def test_masked_target_ranges_do_not_enter_training_or_validation(tmp_path, store):
    """Targets made 10x too bright inside 4000-5000 Å change nothing when that range is
    masked for their subset: the losses of every epoch equal those of the clean store. Without
    the mask the same corruption changes them."""
    from csstflux.io.stores.trainset import TrainStore

    clean = TrainStore(store).load()
    inside = (OUTPUT_GRID.wavelength >= 4000) & (OUTPUT_GRID.wavelength <= 5000)
    targets = np.array(clean.targets, copy=True)
    targets[:, inside] *= 10.0
    bad = tmp_path / "bad.zarr"
    write_trainstore(bad, TrainingArrays(**{**{k: getattr(clean, k) for k in (
        "inputs", "input_mask", "target_mask", "teff", "logg", "feh", "split", "subset",
        "name")}, "targets": targets}))

    def losses(trainset, name, masked):
        d = tmp_path / name
        d.mkdir()
        extra = {"mask_targets": "{ grid = [[4000.0, 5000.0]] }"} if masked else {}
        res = CliRunner().invoke(cli, ["train", "--config",
                                       str(config(d, trainset, epochs=1, **extra)), "--json"])
        assert res.exit_code == 0, res.output
        rows = (d / "run" / "history.csv").read_text().splitlines()
        return np.array([[float(v) for v in r.split(",")[1:3]] for r in rows[1:]])

    np.testing.assert_array_equal(losses(bad, "bad-masked", True),
                                  losses(store, "clean-masked", True))
    assert not np.allclose(losses(bad, "bad", False), losses(store, "clean", False))
    # a subset the store does not train on (a misspelt name) is refused, not ignored
    d = tmp_path / "typo"
    d.mkdir()
    res = CliRunner().invoke(cli, ["train", "--config", str(config(
        d, store, epochs=1, mask_targets="{ gird = [[4000.0, 5000.0]] }"))])
    assert res.exit_code == 2 and "gird" in res.output


def test_a_set_held_out_of_training_does_not_steer_early_stopping():
    from csstflux.model.training import _validation_like_training

    def rows(subsets):
        n = len(subsets)
        return TrainingArrays(
            inputs=np.ones((n, INPUT_GRID.n)), input_mask=np.zeros((n, INPUT_GRID.n), bool),
            targets=np.ones((n, OUTPUT_GRID.n)), target_mask=np.zeros((n, OUTPUT_GRID.n), bool),
            teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n),
            split=np.full(n, 2, np.int8), subset=np.array(subsets),
            name=np.array([f"s{i}" for i in range(n)]))

    train = rows(["grid", "grid", "miles"])
    val = rows(["grid", "pickles", "miles", "pickles", "grid"])
    kept, left = _validation_like_training(train, val)
    assert left == ["pickles"]
    assert list(kept.subset) == ["grid", "miles", "grid"]
    assert list(kept.name) == ["s0", "s2", "s4"]
    same, none = _validation_like_training(train, rows(["grid", "miles"]))
    assert none == [] and len(same) == 2
