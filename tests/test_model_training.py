"""A tiny UaRA-net trained for a few dozen Adam steps lowers its loss (masked targets included);
training batches: noise and augmentation options, reproducibility, configuration."""

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from csstflux.config import load_config, to_dict
from csstflux.errors import ConfigError
from csstflux.grids import INPUT_GRID, OUTPUT_GRID, TRAIN_SNRS
from csstflux.io.stores.trainset import TrainingArrays
from csstflux.model.data import NoisyPairs, noisy_inputs, realistic_inputs
from csstflux.model.loss import pack_targets, uaranet_loss
from csstflux.model.network import build_uaranet
from csstflux.model.predictor import MASKED_ERR, MASKED_FLUX
from csstflux.model.training import TrainConfig
from csstflux.spectra.augment import AugmentConfig
from csstflux.spectra.noise import NoiseConfig


def _synthetic(rng, n, n_in, n_out):
    """Inputs whose line depth sets the slope of a positive target SED."""
    depth = rng.uniform(0.0, 0.5, size=(n, 1))
    x_in = np.linspace(-1, 1, n_in)
    flux = 1 - depth * np.exp(-0.5 * (x_in / 0.1) ** 2)
    err = np.full_like(flux, 0.02)
    flux = flux + err * rng.normal(size=flux.shape)
    sed = 1 + depth * np.linspace(-1, 1, n_out)
    valid = np.ones_like(sed, dtype=bool)
    valid[::5, :3] = False
    sed[~valid] = np.nan                      # masked pixels carry garbage
    inputs = {"flux": flux.astype(np.float32), "flux_err": err.astype(np.float32)}
    return inputs, pack_targets(sed, valid)


def test_thirty_adam_steps_lower_the_loss():
    rng = np.random.default_rng(5)
    n_in, n_out = 128, 16
    x, y = _synthetic(rng, 128, n_in, n_out)
    model = build_uaranet(n_in, n_out, seed=0)
    # jit_compile=False skips an XLA compile; building the optimizer first saves fit() a second
    # trace of the train step (on TensorFlow the trace, not the 32 steps, dominates: ~15 s)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=uaranet_loss,
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    before = model.evaluate(x, y, batch_size=128, verbose=0)
    hist = model.fit(x, y, batch_size=32, epochs=8, shuffle=False, verbose=0)  # 32 steps
    after = model.evaluate(x, y, batch_size=128, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert after < before - 0.1, (before, after)


# --- batches: noise and augmentation options, reproducibility ---------------------------------


def _pairs(n=24, seed=0):
    rng = np.random.default_rng(seed)
    lam = INPUT_GRID.wavelength
    depth = rng.uniform(0.1, 0.5, (n, 1))
    inputs = 1 - depth * np.exp(-0.5 * ((lam - 5000) / 5) ** 2)
    mask = np.zeros(inputs.shape, bool)
    mask[0, 100:110] = True                   # a masked stretch in the store itself
    inputs[mask] = 0.0
    targets = 1 + depth * (OUTPUT_GRID.wavelength / 5556 - 1)
    return TrainingArrays(inputs=inputs, input_mask=mask, targets=targets,
                          target_mask=np.zeros(targets.shape, bool), teff=np.full(n, 6e3),
                          logg=np.full(n, 4.0), feh=np.zeros(n), split=np.zeros(n, np.int8),
                          subset=np.array(["grid"] * n), name=np.array([f"s{i}" for i in range(n)]))


REALISTIC = NoiseConfig(lamost_fraction=0.8, paper_fraction=0.3)
ALL_ON = AugmentConfig(rv_jitter_kms=30.0, resolution=(1700.0, 2000.0), junction_step=0.03,
                       junction_bump=0.01, mask_runs=2.0, mask_run_length=(1, 40))


def test_default_batches_keep_the_original_eq1_stream():
    data = _pairs()
    x, _ = NoisyPairs(data, 8, TRAIN_SNRS, 5)[1]
    rng = np.random.default_rng([5, 0, 1])
    idx = np.sort(NoisyPairs(data, 8, TRAIN_SNRS, 5)._order[8:16])
    snr = rng.choice(np.asarray(TRAIN_SNRS), size=8)
    fx, fe = noisy_inputs(data.inputs[idx], data.input_mask[idx], snr, rng)
    np.testing.assert_array_equal(x["flux"], fx)
    np.testing.assert_array_equal(x["flux_err"], fe)


def test_realistic_batches_are_reproducible_and_differ_between_epochs():
    data = _pairs()
    a = NoisyPairs(data, 8, TRAIN_SNRS, 5, noise=REALISTIC, augment=ALL_ON)
    b = NoisyPairs(data, 8, TRAIN_SNRS, 5, noise=REALISTIC, augment=ALL_ON)
    xa, ya = a[2]
    xb, yb = b[2]
    np.testing.assert_array_equal(xa["flux"], xb["flux"])
    np.testing.assert_array_equal(xa["flux_err"], xb["flux_err"])
    np.testing.assert_array_equal(ya, yb)
    assert xa["flux"].dtype == np.float32 and xa["flux"].shape == (8, INPUT_GRID.n)
    assert np.all(np.isfinite(xa["flux"])) and np.all(xa["flux_err"] > 0)
    b.set_epoch(1)
    assert not np.array_equal(b[2][0]["flux"], xa["flux"])
    b.set_epoch(0)
    np.testing.assert_array_equal(b[2][0]["flux"], xa["flux"])    # resuming: same batches
    # validation data (fixed) are the same every epoch
    v = NoisyPairs(data, 8, TRAIN_SNRS, 6, noise=REALISTIC, augment=ALL_ON, fixed=True)
    first = v[0][0]["flux"]
    v.on_epoch_end()
    np.testing.assert_array_equal(v[0][0]["flux"], first)


def test_masked_pixels_and_runs_follow_the_fill_convention():
    data = _pairs()
    rng = np.random.default_rng(3)
    aug = AugmentConfig(mask_runs=3.0, mask_run_length=(5, 20))
    f, e = realistic_inputs(data.inputs, data.input_mask, TRAIN_SNRS, REALISTIC, aug, rng)
    filled = (f == MASKED_FLUX) & (e == MASKED_ERR)
    assert filled[0, 100:110].all()                 # the store's own mask
    # runs: ~3 per spectrum of 5-20 pixels, and only filled pixels carry error 1
    per_row = filled.sum(axis=1)
    assert 3 * 5 * 0.3 < per_row.mean() < 3 * 20 * 1.5
    assert np.array_equal(e == MASKED_ERR, filled)
    # without runs nothing but the store's mask is filled
    f0, e0 = realistic_inputs(data.inputs, data.input_mask, TRAIN_SNRS, REALISTIC,
                              AugmentConfig(), np.random.default_rng(3))
    assert np.array_equal((e0 == MASKED_ERR), data.input_mask)


def test_realistic_noise_fraction_and_chi2():
    """LAMOST-shaped errors for the configured fraction of rows; noise has chi² ≈ 1."""
    data = _pairs(n=400, seed=1)
    clean = data.inputs.copy()
    clean[data.input_mask] = 1.0
    noise = NoiseConfig(lamost_fraction=0.5, paper_fraction=0.0)
    f, e = realistic_inputs(data.inputs, data.input_mask, TRAIN_SNRS, noise, AugmentConfig(),
                            np.random.default_rng(4))
    good = ~data.input_mask
    chi2 = np.mean(((f - clean) / e)[good] ** 2)
    assert abs(chi2 - 1) < 5 * np.sqrt(2 / good.sum())
    # eq. (1) rows have a flat relative error on the continuum; LAMOST rows a red/blue ratio
    lam = INPUT_GRID.wavelength
    red, blue = np.argmin(np.abs(lam - 6500)), np.argmin(np.abs(lam - 4200))
    ratio = e[:, red] / e[:, blue]                 # continuum pixels: 1 for eq. (1)
    flat = np.isclose(ratio, 1.0, rtol=1e-5)
    assert abs(flat.mean() - 0.5) < 5 * np.sqrt(0.25 / 400)


def test_train_config_reads_noise_and_augment_tables(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[train]\ntrainset = "ts"\nrun_dir = "run"\n'
                 '[train.noise]\nlamost_fraction = 0.8\nsnr_range = [10, 300]\n'
                 '[train.augment]\nrv_jitter_kms = 30\nresolution = [1700, 2000]\n')
    cfg = load_config(p, TrainConfig, table="train")
    assert cfg.noise == NoiseConfig(lamost_fraction=0.8)
    assert cfg.augment == AugmentConfig(rv_jitter_kms=30.0, resolution=(1700.0, 2000.0))
    p.write_text('[train]\ntrainset = "ts"\nrun_dir = "run"\n[train.augment]\nrv_jiter_kms = 3\n')
    with pytest.raises(ConfigError, match="rv_jiter_kms.*did you mean 'rv_jitter_kms'"):
        load_config(p, TrainConfig, table="train")
    p.write_text('[train]\ntrainset = "ts"\nrun_dir = "run"\n[train.noise]\nlamost_fraction = 2\n')
    with pytest.raises(ConfigError, match="lamost_fraction"):
        load_config(p, TrainConfig, table="train")


def test_fingerprint_of_a_default_run_is_unchanged():
    """Runs from before the noise/augment/beta_nll options resume: their hash leaves those
    out."""
    cfg = TrainConfig(trainset="ts", run_dir="run")
    d = to_dict(cfg)
    old = {k: v for k, v in d.items()
           if k not in ("noise", "augment", "beta_nll", "mask_targets", "max_minutes",
                        "epochs")}
    expected = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert cfg.fingerprint() == expected
    assert TrainConfig(trainset="ts", run_dir="run", noise=REALISTIC).fingerprint() != expected
    assert TrainConfig(trainset="ts", run_dir="run", beta_nll=0.5).fingerprint() != expected
    masked = TrainConfig(trainset="ts", run_dir="run", mask_targets={"grid": [[3540, 7410]]})
    assert masked.fingerprint() != expected


def test_mask_target_ranges_masks_only_the_named_subset_inside_its_ranges():
    from csstflux.model.training import mask_target_ranges

    n = 4
    target_mask = np.zeros((n, OUTPUT_GRID.n), bool)
    target_mask[3, :10] = True                      # a MILES row without flux in the UV
    data = TrainingArrays(
        inputs=np.ones((n, INPUT_GRID.n)), input_mask=np.zeros((n, INPUT_GRID.n), bool),
        targets=np.ones((n, OUTPUT_GRID.n)), target_mask=target_mask,
        teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n),
        split=np.zeros(n, np.int8), subset=np.array(["grid", "grid", "miles", "miles"]),
        name=np.array(["a", "b", "c", "d"]))
    out = mask_target_ranges(data, {"grid": [[3540.0, 4000.0], [7000.0, 7410.0]]})
    wl = OUTPUT_GRID.wavelength
    inside = ((wl >= 3540) & (wl <= 4000)) | ((wl >= 7000) & (wl <= 7410))
    assert inside.sum() > 10
    for row in (0, 1):
        np.testing.assert_array_equal(out.target_mask[row], inside)
    np.testing.assert_array_equal(out.target_mask[2:], target_mask[2:])
    assert not data.target_mask[0].any()            # the input arrays are not changed
    assert mask_target_ranges(data, None) is data


def test_mask_targets_are_read_and_checked(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[finetune]\ntrainset = "ts"\nrun_dir = "run"\n'
                 'mask_targets = { grid = [[3540, 7410]] }\n')
    cfg = load_config(p, TrainConfig, table="finetune")
    assert cfg.mask_targets == {"grid": [[3540, 7410]]}
    for bad in ("[[7410, 3540]]", "[[3540]]", "[[3540, nan]]"):
        p.write_text('[finetune]\ntrainset = "ts"\nrun_dir = "run"\n'
                     f'mask_targets = {{ grid = {bad} }}\n')
        with pytest.raises(ConfigError, match="mask_targets"):
            load_config(p, TrainConfig, table="finetune")


def test_shipped_job_file_turns_realistic_noise_and_augmentations_on():
    job = Path(__file__).resolve().parents[1] / "jobs" / "train-default.toml"
    for table in ("train", "finetune"):
        cfg = load_config(job, TrainConfig, table=table)
        assert cfg.noise.lamost_fraction > 0 and cfg.noise.paper_fraction < 1
        assert cfg.noise.snr_range == (10.0, 300.0)
        assert cfg.augment.rv_jitter_kms == 30.0 and cfg.augment.resolution is not None
        assert cfg.augment.junction_step > 0 and cfg.augment.mask_runs > 0


def test_second_fine_tuning_starts_from_the_first_and_masks_the_grid_where_miles_has_flux():
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    first = load_config(jobs / "train-default.toml", TrainConfig, table="finetune")
    second = load_config(jobs / "finetune-real.toml", TrainConfig, table="finetune")
    assert Path(second.init_model) == Path(first.run_dir) / "model" / "uaranet-default.keras"
    assert second.trainset == first.trainset and second.run_dir != first.run_dir
    assert second.mask_targets == {"grid": [[3540.0, 7410.0]]}
    assert second.noise == first.noise and second.augment == first.augment
