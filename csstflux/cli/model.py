"""``csstflux train`` and ``csstflux finetune``."""

from __future__ import annotations

import json

import click

from csstflux.cli.errors import handle_errors
from csstflux.config import load_config


def _run(config_path: str, table: str, run_dir: str | None, max_minutes: float | None,
         epochs: int | None, as_json: bool) -> None:
    from csstflux.model.training import TrainConfig, train

    cfg = load_config(config_path, TrainConfig, table=table,
                      overrides={"run_dir": run_dir, "max_minutes": max_minutes,
                                 "epochs": epochs})
    summary = train(cfg, verbose=0 if as_json else 1)
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
    click.option("--json", "as_json", is_flag=True, help="Print a JSON summary, no progress bar."),
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
