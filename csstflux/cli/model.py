"""``csstflux train``, ``csstflux finetune`` and ``csstflux build-domain-model``."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from csstflux.cli.errors import handle_errors
from csstflux.config import load_job
from csstflux.logs import quiet_progress


def _run(config_path: str, table: str, run_dir: str | None, max_minutes: float | None,
         epochs: int | None, as_json: bool) -> None:
    from csstflux.model.training import TrainConfig, train

    cfg = load_job(config_path, TrainConfig, table,
                   overrides={"run_dir": run_dir, "max_minutes": max_minutes,
                              "epochs": epochs})
    if as_json:
        quiet_progress()
    summary = train(cfg)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    state = {"early_stopping": "stopped early", "time_budget": "time budget spent",
             "epochs": "all epochs done"}.get(summary.get("stopped") or "", "not finished")
    click.echo(f"{table}: {summary['epochs_done']} epochs, {state}; best validation loss "
               f"{summary['best_val_loss']:.4f} at epoch {summary['best_epoch']}")
    if "model" in summary:
        click.echo(f"model: {summary['model']} ({summary['model_id']})")


_options = [
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                 required=True, help="TOML file (see jobs/train-default.toml)."),
    click.option("--run-dir", help="Override the run folder."),
    click.option("--max-minutes", type=float, help="Training time budget (all runs together)."),
    click.option("--epochs", type=int, help="Override the number of epochs."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print a JSON summary; no progress (unless -v)."),
]


def _with_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed(_options):
        f = opt(f)
    return f


@click.command("train")
@_with_options
@handle_errors
def train_cmd(config_path: str, run_dir: str | None, max_minutes: float | None,
              epochs: int | None, as_json: bool) -> None:
    """Pre-train UaRA-net from a training store (the [train] table); reruns resume."""
    _run(config_path, "train", run_dir, max_minutes, epochs, as_json)


@click.command("finetune")
@_with_options
@handle_errors
def finetune_cmd(config_path: str, run_dir: str | None, max_minutes: float | None,
                 epochs: int | None, as_json: bool) -> None:
    """Fine-tune a model (the [finetune] table, with init_model); reruns resume."""
    _run(config_path, "finetune", run_dir, max_minutes, epochs, as_json)


@click.command("build-domain-model")
@click.option("--trainset", type=click.Path(exists=True), required=True,
              help="Training store (csstflux build-trainset).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Output .npz (the shipped one: csstflux/data/domain_model.npz).")
@click.option("--noise-config", type=click.Path(exists=True, dir_okay=False),
              help="Training job whose [TABLE.noise] and snrs the threshold calibration draws "
                   "its noise with (default: the shipped jobs/train-default.toml).")
@click.option("--noise-table", type=click.Choice(["train", "finetune"]), default="train",
              show_default=True, help="Table of --noise-config to take the noise from.")
@click.option("--max-grid-rows", default=4000, show_default=True,
              help="Synthetic grid rows used (a random subset of the train split).")
@click.option("--teff-margin", default=1.0, show_default=True,
              help="OUTSIDE_DOMAIN when Teff -/+ this many sigma leaves 5000-9750 K.")
@click.option("--folds", default=5, show_default=True,
              help="Cross-fitting folds over the real train+validation rows (thresholds).")
@click.option("--draws", default=40, show_default=True,
              help="Noisy copies of every cross-fitted row.")
@click.option("--quantile", default=0.99, show_default=True,
              help="Quantile of the held-out chi2 per S/N bin that becomes the threshold.")
@click.option("--chi2-cap", type=float,
              help="Largest |z| one pixel counts with in chi2 (robust chi2; default "
                   "csstflux.library.domain.CHI2_CAP, 4).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@handle_errors
def build_domain_model_cmd(trainset: str, out_path: str, noise_config: str | None,
                           noise_table: str, max_grid_rows: int, teff_margin: float,
                           folds: int, draws: int, quantile: float, chi2_cap: float | None,
                           seed: int, as_json: bool) -> None:
    """Fit the domain model (parameters and novelty from the input spectrum alone).

    Fitted on the store's train split; chi2 thresholds from noisy copies (training's noise)
    of the real train+validation stars, each scored by a model fitted without it (K-fold
    cross-fitting); measured on its test split (real stars only).
    """
    from csstflux.cli.jobs import shipped_jobs
    from csstflux.errors import ConfigError
    from csstflux.library.build_domain import build_domain_model
    from csstflux.library.domain import CHI2_CAP, save_domain_model
    from csstflux.model.training import TrainConfig

    chi2_cap = CHI2_CAP if chi2_cap is None else chi2_cap
    if folds < 2 or draws < 1 or not 0.5 <= quantile < 1.0 or not chi2_cap > 0:
        raise ConfigError("need --folds >= 2, --draws >= 1, 0.5 <= --quantile < 1 and "
                          "--chi2-cap > 0", found={"folds": folds, "draws": draws,
                                                   "quantile": quantile, "chi2_cap": chi2_cap})
    job = noise_config if noise_config is not None else str(shipped_jobs()["train-default"])
    cfg = load_job(job, TrainConfig, noise_table)
    model, report = build_domain_model(trainset, noise=cfg.noise, snrs=cfg.snrs,
                                       max_grid_rows=max_grid_rows, teff_margin=teff_margin,
                                       seed=seed, folds=folds, draws=draws, quantile=quantile,
                                       chi2_cap=chi2_cap)
    model = replace(model, provenance={**model.provenance, "noise_config": {
        "path": noise_config or "csstflux/jobs/train-default.toml (shipped)",
        "table": noise_table}})
    save_domain_model(model, out_path)
    report["out"] = out_path
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"domain model: {out_path} ({report['n_train']} rows, "
               f"{report['n_real_train']} real)")
    thr = report["thresholds"]
    click.echo(f"  chi2 thresholds ({thr['n_rows']} cross-fitted real rows x {thr['draws']}, "
               f"quantile {thr['quantile']:g}, cap {thr['chi2_cap']:g}): " + ", ".join(
                   f"{t:.3g} at S/N {s:.0f}"
                   for s, t in zip(thr["chi2_snr"], thr["chi2_threshold"], strict=True)))
    for key, r in report["test"].items():
        if key == "survey":
            click.echo(f"  test, training's noise: flagged {100 * r['fraction_flagged']:.1f}% "
                       f"of {r['n']} x {r['draws']}")
            continue
        click.echo(f"  test {key}: Teff {r['teff_median_K']:+.0f} K median, "
                   f"{r['teff_robust_sigma_K']:.0f} K robust sigma; log g "
                   f"{r['logg_robust_sigma']:.2f}; [Fe/H] {r['feh_robust_sigma']:.2f}; "
                   f"flagged {100 * r['fraction_flagged']:.1f}% of {r['n']}")
