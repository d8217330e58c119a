"""The ``csstflux`` command."""

from __future__ import annotations

import click

import csstflux
from csstflux.cli.anchor import anchor_cmd
from csstflux.cli.errors import EXIT_CODES_HELP
from csstflux.cli.evaluation import (
    calibrate_cmd,
    calibrate_reference_cmd,
    evaluate_cmd,
    robustness_cmd,
    verify_library_cmd,
)
from csstflux.cli.field import demo_field_cmd
from csstflux.cli.flats import build_flat_cmd, flat_precision_cmd, simulate_exposures_cmd
from csstflux.cli.info import info
from csstflux.cli.inspect import inspect_cmd
from csstflux.cli.jobs import jobs_cmd
from csstflux.cli.library import build_emulator_cmd, build_trainset_cmd, vet_library_cmd
from csstflux.cli.model import build_domain_model_cmd, finetune_cmd, train_cmd
from csstflux.cli.nightly import nightly_cmd
from csstflux.cli.predict import predict_catalog_cmd
from csstflux.logs import configure


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(csstflux.__version__, prog_name="csstflux")
@click.option("-v", "--verbose", count=True,
              help="Debug messages too, and the Dask and TensorFlow noise otherwise kept "
              "out.")
@click.option("-q", "--quiet", count=True, help="Warnings and errors only, no progress.")
def cli(verbose: int, quiet: int) -> None:
    """Star-based flux calibration of the CSST slitless spectroscopic survey.

    Progress and diagnostics go to standard error: short lines on a terminal, timestamped
    lines with level and module otherwise (a batch job, the systemd journal). Results go to
    standard output; with --json, progress is off unless -v is given.
    """
    configure(verbose - quiet)


cli.add_command(info)
cli.add_command(inspect_cmd)
cli.add_command(vet_library_cmd)
cli.add_command(build_emulator_cmd)
cli.add_command(build_trainset_cmd)
cli.add_command(train_cmd)
cli.add_command(finetune_cmd)
cli.add_command(build_domain_model_cmd)
cli.add_command(evaluate_cmd)
cli.add_command(calibrate_cmd)
cli.add_command(calibrate_reference_cmd)
cli.add_command(verify_library_cmd)
cli.add_command(robustness_cmd)
cli.add_command(predict_catalog_cmd)
cli.add_command(anchor_cmd)
cli.add_command(demo_field_cmd)
cli.add_command(simulate_exposures_cmd)
cli.add_command(build_flat_cmd)
cli.add_command(flat_precision_cmd)
cli.add_command(nightly_cmd)
cli.add_command(jobs_cmd)


def main() -> None:
    """Console-script entry point."""
    cli()
