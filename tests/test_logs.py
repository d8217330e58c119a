"""Messages for people (csstflux.logs): the log format on and off a terminal, -v/-q, progress
lines, numbers and paths, and the third-party noise kept out."""

from __future__ import annotations

import io
import logging
import os
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner

from csstflux import logs
from csstflux.cli.main import cli

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|DEBUG) ([\w.]+): (.*)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch):
    """Every test starts unconfigured and leaves csstflux's logger, the Dask loggers and the
    TensorFlow variable as it found them."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    root = logging.getLogger(logs.ROOT)
    saved = (root.handlers[:], root.level, root.propagate)
    state = (logs._state.verbosity, logs._state.tty, set(logs._state.env_set))
    logs._state.verbosity, logs._state.env_set = None, set()
    yield
    root.handlers[:], root.level, root.propagate = saved
    logs._state.verbosity, logs._state.tty, logs._state.env_set = state
    logs.quiet_dask_noise(restore=True)


def test_off_a_terminal_lines_carry_utc_time_level_and_module():
    out = io.StringIO()
    logs.configure(0, stream=out)
    logging.getLogger("csstflux.pipeline.predict").info("writing %s", "dr9.zarr")
    logging.getLogger("csstflux.demo.release").warning("odd")
    logging.getLogger("csstflux.demo.release").debug("not shown at the default level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    m = [LINE.match(ln) for ln in lines]
    assert m[0] and m[0].groups() == ("INFO", "csstflux.pipeline.predict", "writing dr9.zarr")
    assert m[1] and m[1].groups() == ("WARNING", "csstflux.demo.release", "odd")


def test_on_a_terminal_lines_are_short():
    out = Terminal()
    logs.configure(0, stream=out)
    logging.getLogger("csstflux.cli.predict").info("demo release: %s", "cache/demo")
    logging.getLogger("csstflux.cli.predict").warning("two stars without RA")
    assert out.getvalue().splitlines() == ["demo release: cache/demo",
                                           "warning: two stars without RA"]


@pytest.mark.parametrize(("verbosity", "shown"), [(-1, ["w"]), (0, ["i", "w"]),
                                                  (1, ["d", "i", "w"]), (2, ["d", "i", "w"])])
def test_verbosity_sets_the_level(verbosity, shown):
    out = io.StringIO()
    logs.configure(verbosity, stream=out)
    log = logging.getLogger("csstflux.x")
    log.debug("d")
    log.info("i")
    log.warning("w")
    assert [LINE.match(ln).group(3) for ln in out.getvalue().splitlines()] == shown


def test_configure_twice_replaces_the_handler():
    first, second = io.StringIO(), io.StringIO()
    logs.configure(0, stream=first)
    logs.configure(0, stream=second)
    logging.getLogger("csstflux.x").info("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1


def test_quiet_progress_keeps_warnings_unless_verbose():
    out = io.StringIO()
    logs.configure(0, stream=out)
    logs.quiet_progress()                     # --json
    logging.getLogger("csstflux.x").info("progress")
    logging.getLogger("csstflux.x").warning("still said")
    assert "progress" not in out.getvalue() and "still said" in out.getvalue()
    logs.configure(1, stream=out)
    logs.quiet_progress()                     # --json -v: everything stays
    logging.getLogger("csstflux.x").info("shown with -v")
    assert "shown with -v" in out.getvalue()


def test_progress_off_a_terminal_is_a_bounded_number_of_lines_with_counts():
    out = io.StringIO()
    logs.configure(0, stream=out)
    log = logging.getLogger("csstflux.pipeline.predict")
    with logs.Progress("predicting", 1000, unit="chunks", logger=log, min_gap_s=0) as p:
        for _ in range(1000):
            p.update()
    msgs = [LINE.match(ln).group(3) for ln in out.getvalue().splitlines()]
    assert 3 <= len(msgs) <= 100 / 10 + 2, msgs
    assert msgs[0] == "predicting: 1000 chunks"
    assert re.fullmatch(r"predicting: 100 of 1000 chunks \(10%\), [\d.]+ chunks/s, "
                        r"[\d.]+ s left", msgs[1]), msgs[1]
    assert re.fullmatch(r"predicting: 1000 chunks in [\d.]+ s \([\d.]+ chunks/s\)", msgs[-1])
    counts = [int(m.split()[1]) for m in msgs[1:-1]]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_progress_lines_are_spaced_in_time_and_track_wraps_an_iterable():
    out = io.StringIO()
    logs.configure(0, stream=out)
    log = logging.getLogger("csstflux.x")
    # default min_gap_s: a fast loop gives only its first and last line
    assert list(logs.track(range(500), "reading headers", unit="files", logger=log)) \
        == list(range(500))
    msgs = [LINE.match(ln).group(3) for ln in out.getvalue().splitlines()]
    assert msgs[0] == "reading headers: 500 files"
    assert msgs[-1].startswith("reading headers: 500 files in ") and len(msgs) == 2


def test_progress_says_nothing_when_quiet_or_on_failure():
    out = io.StringIO()
    logs.configure(-1, stream=out)
    with logs.Progress("predicting", 10, logger=logging.getLogger("csstflux.x")) as p:
        p.update(10)
    assert out.getvalue() == ""
    logs.configure(0, stream=out)
    with pytest.raises(RuntimeError), logs.Progress("anchoring", 4, unit="chunks") as p:
        p.update()
        raise RuntimeError("stop")
    assert out.getvalue().splitlines()[-1].endswith("anchoring: 4 chunks")   # no "in ..."


@pytest.mark.parametrize(("value", "text"), [
    (np.float64(8044.51234), "8044.5"), (8044.51234, "8044.5"), (np.float32(0.1), "0.1"),
    (np.int64(2000), "2000"), (3, "3"), (-3.0, "-3"), (0.000256213446, "0.00025621"),
    (123456.7, "123457"), (99999.7, "100000"), (1e20, "1e+20"), (float("nan"), "nan"),
    (None, "None"), (True, "True"), ("text", "text"), (np.array(2.5), "2.5")])
def test_fmt_num(value, text):
    assert logs.fmt_num(value) == text


def test_fmt_num_digits():
    assert logs.fmt_num(np.float64(0.11512345), 3) == "0.115"
    assert "np.float64" not in f"E(B-V) {logs.fmt_num(np.float64(0.1))}"


def test_fmt_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert logs.fmt_path("jobs/../runs") == "runs"
    assert logs.fmt_path(tmp_path / "runs" / "night.zarr") == os.path.join("runs", "night.zarr")
    assert logs.fmt_path("/") == "/"                      # not ../../.. from the folder
    assert logs.fmt_path("./a//b/") == os.path.join("a", "b")


def test_fmt_duration():
    assert [logs.fmt_duration(s) for s in (4.23, 42.4, 185, 7440)] == [
        "4.2 s", "42 s", "3 min 05 s", "2 h 04 min"]


def test_dask_noise_is_dropped_at_its_logger_and_v_restores_it():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    nanny, sizeof = logging.getLogger("distributed.nanny"), logging.getLogger("distributed.sizeof")
    keep = Keep()
    nanny.addHandler(keep)
    sizeof.addHandler(keep)
    try:
        logs.configure(0, stream=io.StringIO())
        nanny.warning("Worker process still alive after 4.0 seconds, killing")
        nanny.warning("Restarting worker (status=running)")      # not noise: kept
        sizeof.warning("Sizeof calculation for object of type 'dict' failed. Defaulting")
        assert seen == ["Restarting worker (status=running)"]
        logs.configure(1, stream=io.StringIO())                 # -v
        nanny.warning("Worker process still alive after 4.0 seconds, killing")
        sizeof.warning("Sizeof calculation failed")
        assert seen[1:] == ["Worker process still alive after 4.0 seconds, killing",
                            "Sizeof calculation failed"]
    finally:
        nanny.removeHandler(keep)
        sizeof.removeHandler(keep)


def test_tensorflow_variable_set_unless_the_user_set_it(monkeypatch):
    logs.configure(0, stream=io.StringIO())
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    logs.configure(1, stream=io.StringIO())          # -v: removed again
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own value wins
    logs.configure(0, stream=io.StringIO())
    logs.configure(1, stream=io.StringIO())
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_native_stderr_noise_is_held_back_and_the_rest_passes(capfd):
    out = io.StringIO()
    logs.configure(1, stream=out)
    with logs.quiet_native_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"I0000 00:00:1796185134.939121    3502 port.cc:153] oneDNN custom "
                    b"operations are on.\n"
                    b"E0000 00:00:1796185134.939121    3502 cuda.cc:1] a real error\n"
                    b"something else\n")
    err = capfd.readouterr().err
    assert "absl" not in err and "oneDNN" not in err
    assert "a real error\n" in err and "something else\n" in err
    assert out.getvalue().count("held back: ") == 2            # in the debug log
    with logs.quiet_native_stderr(restore=True):                # -v: nothing held back
        os.write(2, b"I0000 00:00:1.0    1 port.cc:153] shown\n")
    assert "shown" in capfd.readouterr().err


@pytest.fixture
def log_command():
    """A throw-away subcommand of ``csstflux`` that logs at every level."""

    @click.command("log-test")
    def log_test() -> None:
        log = logging.getLogger("csstflux.cli.test")
        log.debug("debug line")
        log.info("info line")
        log.warning("warning line")
        click.echo("result")

    cli.add_command(log_test)
    yield
    cli.commands.pop("log-test")


@pytest.mark.parametrize(("flags", "shown"), [
    ([], ["info line", "warning line"]), (["-q"], ["warning line"]),
    (["-v"], ["debug line", "info line", "warning line"]),
    (["--verbose", "-v"], ["debug line", "info line", "warning line"]),
    (["--quiet"], ["warning line"])])
def test_cli_verbose_and_quiet(log_command, flags, shown):
    res = CliRunner().invoke(cli, [*flags, "log-test"])
    assert res.exit_code == 0, res.output
    assert res.stdout == "result\n"                  # the result alone on standard output
    msgs = [LINE.match(ln) for ln in res.stderr.splitlines()]
    assert all(msgs), res.stderr                       # not a terminal: timestamped lines
    assert [m.group(3) for m in msgs] == shown
    assert {m.group(2) for m in msgs} == {"csstflux.cli.test"}


def test_cli_help_names_the_flags():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0 and "-v, --verbose" in res.output and "-q, --quiet" in res.output
