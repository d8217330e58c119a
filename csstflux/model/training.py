"""Pre-training and fine-tuning, resumable after an interruption.

``train(cfg)`` trains UaRA-net on the rows of a training store (Adam, eq. 17 loss), writing into
``cfg.run_dir``:

- ``checkpoint.keras`` (model and optimizer) and ``state.json`` after every epoch (progress
  and each epoch's losses are logged: :class:`csstflux.logs.Progress`);
- ``best.weights.h5``: the weights with the lowest validation loss so far;
- ``history.csv`` / ``history.png``: training and validation loss per epoch;
- ``model/<name>.keras`` + ``.json``: the final model (best weights) with its card.

Rerunning the same command continues from the last finished epoch (the optimizer state, the
early-stopping counters and the time spent included), so an interruption costs at most one
epoch. A run ends at early stopping, at ``epochs``, or when its time budget ``max_minutes`` is
spent; raising ``epochs`` or ``max_minutes`` and rerunning continues it. A run whose
configuration changed is refused rather than silently mixed. Fine-tuning is the same call with
``init_model`` set (the weights start from that model).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.config import JobPath, to_dict
from csstflux.errors import ConfigError, StoreError
from csstflux.grids import OUTPUT_GRID, TRAIN_SNRS
from csstflux.io.atomic import atomic_path, atomic_write, write_text
from csstflux.io.stores.trainset import SPLITS, TrainingArrays, TrainStore
from csstflux.logs import Progress, fmt_duration, fmt_num
from csstflux.model._keras import keras
from csstflux.model.card import load_model, save_model
from csstflux.model.data import NoisyPairs
from csstflux.model.loss import make_loss
from csstflux.model.network import build_uaranet
from csstflux.spectra.augment import AugmentConfig
from csstflux.spectra.noise import NoiseConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """``csstflux train`` / ``finetune`` configuration (a ``[train]`` or ``[finetune]`` table)."""

    trainset: JobPath
    """Training store (``csstflux build-trainset``)."""
    run_dir: JobPath
    """Folder for checkpoints, logs and the final model."""
    subsets: tuple[str, ...] = ()
    """Subsets of the store to train on (empty: all)."""
    subset_weights: dict[str, float] | None = None
    """Relative sampling weight of one row per subset (default 1 each); up-weights small
    empirical sets in joint training."""
    mask_targets: dict[str, list[list[float]]] | None = None
    """Subset → wavelength ranges ``[[lo, hi], ...]`` (Å) where its target pixels are left out
    of the loss (training and validation), e.g. ``{grid = [[3540, 7410]]}``: the model
    atmospheres do not teach where real stars do (:func:`mask_target_ranges`)."""
    init_model: JobPath | None = None
    """Start from this model's weights (fine-tuning); None: fresh weights."""
    model_name: str = "uaranet"
    """Name of the final model files."""
    batch_size: int = 256
    """Spectra per step (paper: 2048 pre-training, 32 fine-tuning, on a GPU)."""
    epochs: int = 100
    """Maximum number of epochs."""
    steps_per_epoch: int | None = None
    """Steps per epoch (default: one pass over the training rows)."""
    learning_rate: float = 1e-3
    """Adam learning rate (paper: 1e-3)."""
    patience: int = 15
    """Early stopping: epochs without a better validation loss."""
    snrs: tuple[float, ...] = TRAIN_SNRS
    """The paper's SNRs, drawn per spectrum with probability ``noise.paper_fraction``
    (paper: 20, 25, 30, 35, 40)."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noise model (a ``[train.noise]`` table): LAMOST-like error profiles and the SNR
    distribution; the default is the paper's eq. (1) at ``snrs``."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Augmentations (a ``[train.augment]`` table): residual RV, R ≈ 1800, arm-junction
    artefact, masked runs; the default is none."""
    beta_nll: float = 0.0
    """β of the β-NLL loss (:class:`~csstflux.model.loss.BetaNLL`): 0 is eq. (17) itself;
    0.5 stops a large σ from excusing a biased mean."""
    seed: int = 1
    """Seed of the weights, the batch order and the noise."""
    max_minutes: float | None = None
    """Training budget: total wall time over all runs of this folder (resumes included); the
    run stops when it is spent and the model is written. Raise it and rerun to continue."""

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.epochs <= 0 or self.patience <= 0:
            raise ValueError("batch_size, epochs and patience must be positive")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive")
        if not 0.0 <= self.beta_nll <= 1.0:
            raise ValueError("beta_nll must lie in [0, 1]")
        if not self.snrs or min(self.snrs) <= 0:
            raise ValueError("snrs must be positive numbers")
        for sub, ranges in (self.mask_targets or {}).items():
            for r in ranges:
                if len(r) != 2 or not np.all(np.isfinite(r)) or not r[0] < r[1]:
                    raise ValueError(f"mask_targets[{sub!r}]: each range must be [lo, hi] "
                                     f"with lo < hi in Å, got {list(r)}")

    def fingerprint(self) -> str:
        """Hash of everything that shapes the run (not max_minutes or epochs).

        ``noise``, ``augment``, ``beta_nll`` and ``mask_targets`` enter only when they differ
        from their defaults, so runs started before these options existed keep their
        fingerprint and still resume.
        """
        d = to_dict(self)
        for k in ("max_minutes", "epochs"):
            d.pop(k)
        for k, default in (("noise", NoiseConfig()), ("augment", AugmentConfig()),
                           ("beta_nll", 0.0), ("mask_targets", None)):
            if getattr(self, k) == default:
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def select_rows(store: TrainStore, subsets: tuple[str, ...], split: str) -> TrainingArrays:
    """Rows of ``subsets`` (all when empty) in ``split`` (train/validation/test)."""
    sub = store.column("subset")
    keep = store.column("split") == SPLITS[split]
    if subsets:
        unknown = set(subsets) - set(np.unique(sub))
        if unknown:
            raise ConfigError(f"training store has no subset {sorted(unknown)}",
                              path=store.path, expected=sorted(set(sub)), found=sorted(unknown))
        keep &= np.isin(sub, subsets)
    return store.load(keep)


def _validation_like_training(train_rows: TrainingArrays, val_rows: TrainingArrays
                              ) -> tuple[TrainingArrays, list[str]]:
    """The validation rows of the subsets that have training rows, and the subsets left out.

    A set kept out of training (``validation_fraction = 1``: calibration and test only) must
    not steer early stopping: its stars are not what the network is fitted to, and a few of
    them with large residuals and a small predicted σ would dominate the Gaussian loss (19
    held-out Pickles stars among 1544 validation rows raised it from -3.43 to -2.96 within
    six epochs while the loss on the trained sets still fell).
    """
    trained = {str(s) for s in np.unique(train_rows.subset)}
    held_out = sorted({str(s) for s in np.unique(val_rows.subset)} - trained)
    if not held_out:
        return val_rows, []
    keep = np.isin(np.array([str(s) for s in val_rows.subset]), sorted(trained))
    return val_rows.take(np.flatnonzero(keep)), held_out


def mask_target_ranges(data: TrainingArrays, ranges: dict[str, list[list[float]]] | None
                       ) -> TrainingArrays:
    """``data`` with the target pixels of each named subset inside its wavelength ranges
    masked (the output pixel centres, ``lo <= λ <= hi``); other rows unchanged."""
    if not ranges:
        return data
    mask = np.array(data.target_mask, dtype=bool, copy=True)
    sub = np.array([str(s) for s in data.subset])
    for name, spans in ranges.items():
        cols = np.logical_or.reduce([OUTPUT_GRID.window(lo, hi) for lo, hi in spans])
        mask[np.ix_(sub == name, cols)] = True
    return dataclasses.replace(data, target_mask=mask)


def _evaluate(model: keras.Model, data: NoisyPairs) -> float:
    """Mean loss over a fixed dataset (weighted by batch size)."""
    total, n = 0.0, 0
    for i in range(len(data)):
        x, y = data[i]
        total += float(model.test_on_batch(x, y)) * len(y)
        n += len(y)
    return total / max(n, 1)


def _fit(model: keras.Model, tr: NoisyPairs, va: NoisyPairs, cfg: TrainConfig, run: Path,
         state: dict[str, Any]) -> None:
    """The epoch loop: one ``train_on_batch`` per step (a third faster than ``fit`` on a
    Python dataset here), then validation, checkpoint, history row, early stopping and the
    wall-time limit, all recorded in ``state.json`` so that a rerun resumes exactly here."""
    history = run / "history.csv"
    if state["epoch"] == 0 or not history.exists():
        history.write_text("epoch,loss,val_loss,seconds\n")
    with Progress("training", max(cfg.epochs - state["epoch"], 0) * len(tr), unit="steps",
                  logger=log) as progress:
        _epochs(model, tr, va, cfg, run, state, history, progress)


def _epochs(model: keras.Model, tr: NoisyPairs, va: NoisyPairs, cfg: TrainConfig, run: Path,
            state: dict[str, Any], history: Path, progress: Progress) -> None:
    """The epochs of :func:`_fit`, each logged with its losses."""
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        tr.set_epoch(epoch)
        t_epoch = time.monotonic()
        losses: list[float] = []
        for i in range(len(tr)):
            x, y = tr[i]
            losses.append(float(model.train_on_batch(x, y)))
            progress.update()
        val = _evaluate(model, va)
        loss = float(np.mean(losses))
        log.info("epoch %d/%d: loss %s, validation loss %s (%s)", epoch + 1, cfg.epochs,
                 fmt_num(loss, 4), fmt_num(val, 4), fmt_duration(time.monotonic() - t_epoch))
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at epoch {epoch + 1}; "
                                     "lower the learning rate")
        if val < state["best_val_loss"]:
            state.update(best_val_loss=val, best_epoch=epoch + 1, wait=0)
            with atomic_path(run / "best.weights.h5", suffix=".weights.h5") as tmp:
                model.save_weights(tmp, overwrite=True)
        else:
            state["wait"] += 1
        with atomic_path(run / "checkpoint.keras", suffix=".keras") as tmp:
            model.save(tmp)
        seconds = time.monotonic() - t_epoch
        with history.open("a") as fh:
            fh.write(f"{epoch},{loss:.6g},{val:.6g},{seconds:.1f}\n")
        state["epoch"] = epoch + 1
        state["train_seconds"] = state.get("train_seconds", 0.0) + seconds
        state["stopped"] = _stop_reason(cfg, state)
        _write_json(run / "state.json", state)
        if state["stopped"]:
            break


def _stop_reason(cfg: TrainConfig, state: dict[str, Any]) -> str | None:
    if state["wait"] >= cfg.patience:
        return "early_stopping"
    if cfg.max_minutes is not None and state.get("train_seconds", 0.0) >= 60 * cfg.max_minutes:
        return "time_budget"
    if state["epoch"] >= cfg.epochs:
        return "epochs"
    return None


def _history_seconds(path: Path) -> float:
    if not path.exists():
        return 0.0
    with path.open() as fh:
        return float(sum(float(r["seconds"]) for r in csv.DictReader(fh)))


def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2))


def _weights(data: TrainingArrays, subset_weights: dict[str, float] | None
             ) -> np.ndarray | None:
    if not subset_weights:
        return None
    return np.array([float(subset_weights.get(s, 1.0)) for s in data.subset])


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or continue training) as configured; returns a summary dict. Progress is
    logged (module docstring)."""
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    store = TrainStore(cfg.trainset)
    state_path = run / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != cfg.fingerprint():
            raise ConfigError("run folder holds a run with another configuration; use a new "
                              "run_dir", path=run, expected=state.get("fingerprint"),
                              found=cfg.fingerprint())
    else:
        state = {"fingerprint": cfg.fingerprint(), "epoch": 0, "best_val_loss": float("inf"),
                 "best_epoch": 0, "wait": 0, "config": to_dict(cfg), "stopped": None}
    train_rows = select_rows(store, cfg.subsets, "train")
    val_rows = select_rows(store, cfg.subsets, "validation")
    val_rows, held_out = _validation_like_training(train_rows, val_rows)
    unknown = sorted(set(cfg.mask_targets or {}) - {str(s) for s in np.unique(train_rows.subset)})
    if unknown:
        raise ConfigError(f"mask_targets names subsets with no training rows: {unknown}",
                          path=store.path, expected=sorted({str(s) for s in train_rows.subset}),
                          found=unknown)
    train_rows = mask_target_ranges(train_rows, cfg.mask_targets)
    val_rows = mask_target_ranges(val_rows, cfg.mask_targets)
    if held_out:
        log.info("validation leaves out %s: no training rows (a set held out for calibration "
                 "and testing does not steer early stopping)", ", ".join(held_out))
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise StoreError("training store has no training or no validation rows for "
                         f"subsets {list(cfg.subsets) or 'all'}", path=store.path)
    keras.utils.set_random_seed(cfg.seed)
    if state["epoch"] > 0 and (run / "checkpoint.keras").exists():
        model = keras.saving.load_model(run / "checkpoint.keras", compile=True, safe_mode=True)
    else:
        state.update(epoch=0, best_val_loss=float("inf"), best_epoch=0, wait=0)
        if cfg.init_model:
            model, parent = load_model(cfg.init_model)
            state["init_model"] = {"id": parent.model_id, "sha256": parent.archive_sha256}
        else:
            model = build_uaranet(seed=cfg.seed)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                      loss=make_loss(cfg.beta_nll))
        # build the optimizer now: saves a second graph build and lets a checkpoint taken
        # before the first step reload with compile=True
        model.optimizer.build(model.trainable_variables)
    if "train_seconds" not in state:   # runs from before the budget was tracked
        state["train_seconds"] = _history_seconds(run / "history.csv")
    state.pop("paused", None)
    state["stopped"] = _stop_reason(cfg, state)   # epochs/budget may have been raised
    if not state["stopped"]:
        tr = NoisyPairs(train_rows, cfg.batch_size, cfg.snrs, cfg.seed, noise=cfg.noise,
                        augment=cfg.augment, weights=_weights(train_rows, cfg.subset_weights),
                        steps=cfg.steps_per_epoch)
        va = NoisyPairs(val_rows, cfg.batch_size, cfg.snrs, cfg.seed + 1, noise=cfg.noise,
                        augment=cfg.augment, fixed=True)
        _write_json(state_path, state)
        _fit(model, tr, va, cfg, run, state)
    plot_history(run / "history.csv", run / "history.png")
    summary = {"run_dir": str(run), "epochs_done": state["epoch"],
               "best_epoch": state["best_epoch"], "best_val_loss": state["best_val_loss"],
               "stopped": state.get("stopped"),
               "train_minutes": round(state["train_seconds"] / 60, 2),
               "n_train": len(train_rows), "n_validation": len(val_rows),
               "validation_left_out": held_out}
    if state["stopped"]:
        if (run / "best.weights.h5").exists():
            model.load_weights(run / "best.weights.h5")
        card = save_model(model, run / "model", name=cfg.model_name, overwrite=True,
                          training_data=training_provenance(store, cfg, state),
                          metrics={"best_val_loss": state["best_val_loss"],
                                   "best_epoch": state["best_epoch"]})
        summary["model"] = str(run / "model" / f"{cfg.model_name}.keras")
        summary["model_id"] = card.model_id
    return summary


def training_provenance(store: TrainStore, cfg: TrainConfig, state: dict[str, Any]
                        ) -> dict[str, Any]:
    """What the model card records about the data and the run."""
    sets = [{k: s.get(k) for k in ("subset", "kind", "files_sha256", "n_rows", "stand_in",
                                    "split_counts")}
            for s in store.attrs.get("sets", [])]
    chain = []
    if cfg.init_model:
        _, parent = load_model(cfg.init_model)
        chain = [*parent.training_data.get("stages", []),
                 {"model_id": parent.model_id, "sha256": parent.archive_sha256}]
    return {"trainset": str(store.path), "trainset_created": store.attrs.get("created"),
            "sets": sets, "config": to_dict(cfg), "epochs": state["epoch"],
            "best_epoch": state["best_epoch"], "stages": chain,
            "emulator": store.attrs.get("emulator")}


def plot_history(csv_path: Path, png_path: Path) -> None:
    """Training and validation loss against epoch, as PNG."""
    if not csv_path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    ep = [int(r["epoch"]) + 1 for r in rows]  # rows: epoch, loss, val_loss, seconds
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [float(r["loss"]) for r in rows], label="training")
    if "val_loss" in rows[0]:
        ax.plot(ep, [float(r["val_loss"]) for r in rows], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (eq. 17)")
    ax.legend()
    fig.tight_layout()
    with atomic_write(png_path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
