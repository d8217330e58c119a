"""The deployment recipes in ``deploy/`` work as written.

- The Dask YAML files hold only settings Dask and dask-jobqueue know, and ``jobqueue.yaml``
  makes the SLURM and PBS job scripts it promises through csstflux's own ``start_cluster``
  (a scheduler starts, no job is submitted).
- The systemd units and the cron line parse, their schedules are valid, and they call the
  ``csstflux`` console script with a subcommand and options that exist; so does every
  ``csstflux``, ``dask scheduler`` and ``dask worker`` command shown in the pages.
- ``predict-catalog --dask-config`` applies its files before the cluster starts.
- ``--cluster slurm|pbs`` runs over TLS by default: the job scripts carry the run's temporary
  certificate and a plain ``tcp://`` client is refused.
- The TLS recipe runs end to end (slow): the page's openssl commands make a CA and
  certificates, a ``dask scheduler`` and ``dask worker`` start over TLS, csstflux's client
  gets in with the certificates named by ``tls.yaml``, and clients without them do not.
- Every file under ``deploy/`` is named in :data:`COVERED_BY`, so a new recipe needs a test.
- The README and the documentation site's pages show real commands too: every ``csstflux``
  and Dask command line in their shell blocks is checked the same way, and the pages that show
  ``csstflux`` commands are exactly those named in :data:`DOC_COMMAND_PAGES`.
"""

from __future__ import annotations

import configparser
import copy
import importlib.metadata
import operator
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import dask.config
import pytest
import yaml
from click.testing import CliRunner
from dask.utils import parse_bytes
from distributed import Client, Security

import csstflux.pipeline.cluster as cluster_mod
from csstflux.cli.errors import EXIT_NOTHING_TO_DO
from csstflux.cli.main import cli
from csstflux.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
JOBQUEUE_YAML = DEPLOY / "dask" / "jobqueue.yaml"
TLS_YAML = DEPLOY / "dask" / "tls.yaml"
SERVICE = DEPLOY / "systemd" / "csstflux-nightly.service"
TIMER = DEPLOY / "systemd" / "csstflux-nightly.timer"
CRON = DEPLOY / "cron" / "csstflux-nightly.cron"
PAGES = sorted(DEPLOY.rglob("*.md"))
ROOT = DEPLOY.parent
#: README and the documentation site's Markdown pages (not its build folder).
DOC_PAGES = [ROOT / "README.md",
             *sorted(p for p in (ROOT / "docs").rglob("*.md")
                     if "_build" not in p.relative_to(ROOT / "docs").parts)]
#: The pages among them whose shell blocks show ``csstflux`` commands
#: (test_doc_pages_show_real_commands checks those commands against the real CLI).
DOC_COMMAND_PAGES = ("README.md", "docs/install.md", "docs/reference.md", "docs/operations.md",
                     "docs/anchoring.md", "docs/flats.md")

#: Every file under deploy/ and the tests of this module that check it.
COVERED_BY = {
    "README.md": ["test_pages_show_real_commands"],
    "jobqueue.md": ["test_pages_show_real_commands", "test_jobqueue_yaml_job_scripts"],
    "gpu.md": ["test_pages_show_real_commands", "test_gpu_page_matches_predict_catalog",
               "test_gpu_page_dask_cuda_options"],
    "tls.md": ["test_pages_show_real_commands", "test_tls_recipe_end_to_end"],
    "dask/jobqueue.yaml": ["test_dask_yaml_keys_are_known", "test_jobqueue_yaml_job_scripts",
                           "test_predict_catalog_dask_config_option"],
    "dask/tls.yaml": ["test_dask_yaml_keys_are_known", "test_tls_recipe_end_to_end"],
    "systemd/csstflux-nightly.service": ["test_systemd_units", "test_systemd_analyze_verify",
                                         "test_scheduled_commands_exist"],
    "systemd/csstflux-nightly.timer": ["test_systemd_units", "test_systemd_analyze_verify"],
    "cron/csstflux-nightly.cron": ["test_cron_line", "test_scheduled_commands_exist"],
}


# --------------------------------------------------------------------------- command lines

_SEPARATORS = {"&&", "||", ";", "|", "|&", "&", "(", ")", ";;"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: Commands that run another command, with their options that take a value.
_WRAPPERS = {"sudo": {"-u", "-g", "-C", "-D"}, "env": {"-u", "-C"}, "nohup": set(),
             "exec": set(), "nice": {"-n"}, "ionice": {"-c", "-n"},
             "flock": {"-w", "-E", "--wait", "--timeout", "--conflict-exit-code"}}


def simple_commands(line: str) -> list[list[str]]:
    """Shell words of each simple command of ``line`` (split at ``&&``, ``;``, ``|``, ...),
    cut at the first redirection (``>> log 2>&1``)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    cmds: list[list[str]] = [[]]
    redirected = False
    for tok in lex:
        if tok in _SEPARATORS:
            cmds.append([])
            redirected = False
        elif set(tok) <= set("<>&"):
            if cmds[-1] and cmds[-1][-1].isdigit():   # the 2 of 2>&1
                cmds[-1].pop()
            redirected = True
        elif not redirected:
            cmds[-1].append(tok)
    return [c for c in cmds if c]


def program(words: list[str]) -> tuple[str, list[str]] | None:
    """``(kind, args)`` of a simple command that runs csstflux or a Dask CLI, past
    assignments and wrappers (``env``, ``sudo -u``, ``flock -n LOCK``); None otherwise."""
    i = 0
    while i < len(words):
        if _ASSIGNMENT.match(words[i]):
            i += 1
            continue
        name = os.path.basename(words[i])
        if name not in _WRAPPERS:
            break
        i += 1
        while i < len(words) and words[i].startswith("-"):
            i += 2 if words[i] in _WRAPPERS[name] else 1
        if name == "flock":
            i += 1   # the lock file
    rest = words[i:]
    if not rest:
        return None
    name = os.path.basename(rest[0])
    if name == "csstflux":
        return "csstflux", rest[1:]
    if re.fullmatch(r"python(3(\.\d+)?)?", name) and rest[1:3] == ["-m", "csstflux"]:
        return "csstflux", rest[3:]
    if name == "dask" and rest[1:3] == ["cuda", "worker"]:
        return "dask cuda worker", rest[3:]
    if name == "dask" and rest[1:2] in (["scheduler"], ["worker"]):
        return f"dask {rest[1]}", rest[2:]
    return None


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """Every csstflux / Dask CLI call on a shell line."""
    return [p for p in map(program, simple_commands(line)) if p is not None]


def csstflux_group() -> click.Group:
    """The click group behind the ``csstflux`` console script (its entry point's module)."""
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name="csstflux")
    main = ep.load()
    group = sys.modules[main.__module__].cli
    assert group is cli
    return group


def check_click_args(cmd: click.Command, args: list[str], where: str) -> None:
    """Every option in ``args`` exists in ``cmd`` and takes the value given (paths are not
    checked for existence, nor values holding shell variables); required options are there."""
    options = {o: p for p in cmd.params if isinstance(p, click.Option)
               for o in (*p.opts, *p.secondary_opts)}
    ctx = click.Context(cmd)
    seen, positional, i = set(), [], 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("-") or tok == "-":
            positional.append(tok)
            i += 1
            continue
        name, eq, value = tok.partition("=")
        assert name in options, f"{where}: `{cmd.name}` has no option {name}"
        param = options[name]
        seen.add(param.name)
        if param.is_flag or param.count:
            assert not eq, f"{where}: {name} is a flag and takes no value"
            i += 1
            continue
        if not eq:
            assert i + 1 < len(args), f"{where}: {name} needs a value"
            value = args[i + 1]
        i += 1 if eq else 2
        if not isinstance(param.type, click.Path) and "$" not in value:
            try:
                param.type.convert(value, param, ctx)
            except click.BadParameter as exc:
                raise AssertionError(f"{where}: {name} {value!r}: {exc}") from exc
    missing = [p.opts[-1] for p in cmd.params
               if isinstance(p, click.Option) and p.required and p.name not in seen]
    assert not missing, f"{where}: required options missing: {missing}"
    if not any(isinstance(p, click.Argument) for p in cmd.params):
        assert not positional, f"{where}: `{cmd.name}` takes no arguments, got {positional}"


def check_csstflux(args: list[str], where: str) -> None:
    group: click.Group = csstflux_group()
    assert args, f"{where}: csstflux without a subcommand"
    path: list[str] = []
    cmd: click.Command = group
    while isinstance(cmd, click.Group) and args:   # `csstflux jobs copy ...`
        sub, args = args[0], args[1:]
        assert sub in cmd.commands, (f"{where}: csstflux {' '.join(path)} has no subcommand "
                                     f"{sub!r} (it has {sorted(cmd.commands)})")
        path.append(sub)
        cmd = cmd.commands[sub]
    check_click_args(cmd, args, where)
    res = CliRunner().invoke(group, [*path, "--help"])
    assert res.exit_code == 0, res.output


def check_invocation(kind: str, args: list[str], where: str) -> None:
    if kind == "csstflux":
        check_csstflux(args, where)
    elif kind == "dask scheduler":
        from distributed.cli.dask_scheduler import main as scheduler_main

        check_click_args(scheduler_main, args, where)
    elif kind == "dask worker":
        from distributed.cli.dask_worker import main as worker_main

        check_click_args(worker_main, args, where)
    else:
        raise AssertionError(f"{where}: no checker for {kind}")


def shell_blocks(page: Path, lang: str = "bash") -> list[str]:
    """Fenced ``lang`` code blocks of a Markdown page."""
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), re.S | re.M)


def shell_lines(block: str) -> Iterator[str]:
    """Logical lines of a shell block (backslash continuations joined, comments dropped)."""
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def page_invocations(page: Path) -> list[tuple[str, list[str], str]]:
    return [(kind, args, f"{page.relative_to(DEPLOY)}: {line[:60]}")
            for block in shell_blocks(page) for line in shell_lines(block)
            for kind, args in invocations(line)]


def test_command_checker_catches_mistakes():
    """The checker used on the recipes fails on a wrong subcommand, option or value."""
    line = ("cd /x && flock -n /x/l env A=1 /opt/v/bin/csstflux predict-catalog --cluster slurm "
            "--jobs 4 --catalog c.csv >> /x/log-$(date +%F).log 2>&1")
    ((kind, args),) = invocations(line)
    assert (kind, args) == ("csstflux", ["predict-catalog", "--cluster", "slurm", "--jobs", "4",
                                         "--catalog", "c.csv"])
    check_invocation(kind, args, "ok")
    assert invocations("sudo -u csstflux python3 -m csstflux info --json") == [
        ("csstflux", ["info", "--json"])]
    for bad in (["predict-catalogue"], ["predict-catalog", "--bogus", "1"],
                ["predict-catalog", "--cluster", "lsf"], ["predict-catalog", "--jobs", "many"],
                ["predict-catalog", "--gpu=yes"], ["info", "extra"]):
        with pytest.raises(AssertionError):
            check_invocation("csstflux", bad, "bad")


# --------------------------------------------------------------------------- Dask YAML

@pytest.fixture
def dask_config_sandbox(tmp_path, monkeypatch):
    """Dask's global configuration restored after the test. dask-jobqueue, imported here,
    writes its commented default file into ``tmp_path`` instead of ``~/.config/dask``."""
    monkeypatch.setattr(dask.config, "PATH", str(tmp_path / "dask-config-home"))
    pytest.importorskip("dask_jobqueue")
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def leaf_keys(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaf_keys(v, (*prefix, k))
        else:
            yield (*prefix, k)


@pytest.mark.parametrize("path", [JOBQUEUE_YAML, TLS_YAML], ids=lambda p: p.name)
def test_dask_yaml_keys_are_known(path, dask_config_sandbox):
    """Parses, and every setting is one of Dask's or dask-jobqueue's (no typo is silently
    ignored)."""
    data = yaml.safe_load(path.read_text())
    defaults = dask.config.merge(*dask.config.defaults)
    keys = list(leaf_keys(data))
    assert keys
    for key in keys:
        node: Any = defaults
        for part in key:
            assert isinstance(node, dict), f"{path.name}: {'.'.join(key)} is not a Dask setting"
            name = dask.config.canonical_name(part, node)
            assert name in node, f"{path.name}: {'.'.join(key)} is not a Dask setting"
            node = node[name]


def _memory_limit(script: str) -> int:
    return parse_bytes(re.search(r"--memory-limit (\S+)", script).group(1))


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_yaml_job_scripts(kind, dask_config_sandbox, tmp_path, monkeypatch):
    """``predict-catalog --cluster slurm|pbs`` (csstflux's ``start_cluster``) with the file
    loaded builds the job script the file describes, over TLS; nothing is submitted."""
    data = yaml.safe_load(JOBQUEUE_YAML.read_text())
    assert set(data["jobqueue"]) == {"slurm", "pbs"}
    cfg = data["jobqueue"][kind]
    monkeypatch.chdir(tmp_path)            # log-directory is relative to the working directory
    dask.config.update(dask.config.config, data)
    dask.config.set({f"jobqueue.{kind}.interface": "lo"})   # keep the test scheduler local
    handle = cluster_mod.start_cluster(cluster_mod.ClusterSettings(
        cluster=kind, jobs=0, dashboard_address="127.0.0.1:0"))
    try:
        assert handle.kind == kind
        script = handle.cluster.job_script()
        assert handle.client.scheduler_info()["workers"] == {}
        # TLS by default: the workers get the run's certificate, plain tcp is refused
        address = handle.cluster.scheduler_address
        assert address.startswith("tls://") and "--protocol tls://" in script
        for opt in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            path = re.search(rf"{opt} (\S+)", script).group(1)
            assert Path(path).parent == tmp_path   # shared-temp-directory null: the cwd
        with pytest.raises(OSError):
            Client(f"tcp://127.0.0.1:{address.rsplit(':', 1)[1]}", timeout=3,
                   security=Security(require_encryption=False))
    finally:
        handle.close()
    assert not list(tmp_path.glob(".dask-jobqueue.worker.*"))   # removed with the cluster

    # one single-threaded worker process per core, 2-3 GiB each
    assert cfg["processes"] == cfg["cores"]
    assert "--nthreads 1 " in script and f"--nworkers {cfg['processes']} " in script
    per_worker = _memory_limit(script)
    assert 2 * 2**30 <= per_worker <= 3 * 2**30
    assert per_worker * cfg["processes"] == pytest.approx(parse_bytes(cfg["memory"]), rel=1e-3)
    assert f"{cfg['python']} -m distributed.cli.dask_worker " in script
    assert f"--local-directory {cfg['local-directory']}" in script
    assert " ".join(cfg["worker-extra-args"]) in script
    for line in cfg["job-script-prologue"]:
        assert line in script.splitlines()
    assert "export OMP_NUM_THREADS=1" in cfg["job-script-prologue"]
    assert (tmp_path / cfg["log-directory"]).is_dir()
    if kind == "slurm":
        assert f"#SBATCH -p {cfg['queue']}" in script
        assert f"#SBATCH --cpus-per-task={cfg['cores']}" in script
        assert f"#SBATCH --mem={parse_bytes(cfg['memory']) // 2**30}G" in script
        assert f"#SBATCH -t {cfg['walltime']}" in script
        assert f"#SBATCH -e {cfg['log-directory']}/" in script
    else:
        assert f"#PBS -q {cfg['queue']}" in script
        assert f"#PBS -l walltime={cfg['walltime']}" in script
        m = re.search(rf"#PBS -l select=1:ncpus={cfg['cores']}:mem=(\d+)GB", script)
        # PBS size units are binary: 1gb = 2**30 bytes
        assert m and int(m.group(1)) * 2**30 >= parse_bytes(cfg["memory"])
    for directive in cfg["job-extra-directives"]:
        assert f"#{'SBATCH' if kind == 'slurm' else 'PBS'} {directive}" in script
    # workers retire before the walltime
    h, m_, s = (int(x) for x in cfg["walltime"].split(":"))
    lifetime = cfg["worker-extra-args"][cfg["worker-extra-args"].index("--lifetime") + 1]
    lt = re.fullmatch(r"(\d+)h(\d+)m", lifetime)
    assert lt and int(lt.group(1)) * 3600 + int(lt.group(2)) * 60 < h * 3600 + m_ * 60 + s


def test_predict_catalog_dask_config_option(dask_config_sandbox, tmp_path, monkeypatch):
    """``--dask-config`` files are merged, later ones winning, before the cluster starts;
    bad files are one-line errors."""
    seen: dict[str, Any] = {}

    def fake_start_new(settings, **kwargs):
        seen.update(kwargs, settings=settings, queue=dask.config.get("jobqueue.slurm.queue"),
                    walltime=dask.config.get("jobqueue.slurm.walltime"))
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(cluster_mod, "_start_new", fake_start_new)
    catalog = tmp_path / "cat.csv"
    catalog.write_text("obsid,ra,dec,snrg,teff,logg,feh,rv,path\n"
                       "1,10,20,50,6000,4,0,0,spec.fits\n")
    override = tmp_path / "override.yaml"
    override.write_text("jobqueue:\n  slurm:\n    queue: debug\n")
    base = ["predict-catalog", "--catalog", str(catalog), "--root", str(tmp_path),
            "--out", str(tmp_path / "out.zarr"), "--cluster", "slurm", "--jobs", "3"]
    res = CliRunner().invoke(cli, [*base, "--dask-config", str(JOBQUEUE_YAML),
                                   "--dask-config", str(override)])
    assert res.exit_code == 2 and "stopped by the test" in res.output
    assert seen["settings"].cluster == "slurm" and seen["settings"].jobs == 3
    assert seen["queue"] == "debug"   # the later file wins
    assert seen["walltime"] == yaml.safe_load(JOBQUEUE_YAML.read_text())[
        "jobqueue"]["slurm"]["walltime"]

    for text, message in (("jobqueue: [\n", "not valid YAML"),
                          ("- a\n- b\n", "expected a mapping")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        res = CliRunner().invoke(cli, [*base, "--dask-config", str(bad)])
        assert res.exit_code == 2 and message in res.output and str(bad) in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output


# --------------------------------------------------------------------------- systemd, cron

class _MultiDict(dict):
    """configparser dict that keeps every value of a repeated key (systemd allows them)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values...]}}`` of a systemd unit file."""
    text = path.read_text()
    assert not re.search(r"\\\n", text), f"{path.name}: no line continuations, please"
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       dict_type=_MultiDict, empty_lines_in_values=False,
                                       comment_prefixes=("#", ";"), delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text, source=str(path))
    return {s: {k: v.split("\n") for k, v in parser[s].items()} for s in parser.sections()}


_CALENDAR = re.compile(
    r"^(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)(?:[.,-]{1,2}(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun))*\s+)?"
    r"(?:(?:\*|\d{4})-(?:\*|\d{1,2}(?:/\d+)?)-(?:\*|\d{1,2}(?:/\d+)?)\s+)?"
    r"(?:\*|\d{1,2})(?::(?:\*|\d{1,2}(?:/\d+)?)){1,2}"
    r"(?:\s+(?:UTC|[A-Za-z]+/[A-Za-z_]+))?$"
    r"|^(?:minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually)$")


def exec_start(unit: dict[str, dict[str, list[str]]]) -> list[str]:
    (line,) = unit["Service"]["ExecStart"]
    words = shlex.split(line)
    words[0] = words[0].lstrip("-@:+!")
    return words


def test_systemd_units():
    svc, timer = read_unit(SERVICE), read_unit(TIMER)
    assert svc["Unit"]["Description"][0]
    s = svc["Service"]
    assert s["Type"] == ["oneshot"]
    assert s["User"][0] and s["User"][0] != "root"
    assert Path(s["WorkingDirectory"][0]).is_absolute()
    env = dict(e.split("=", 1) for line in s["Environment"] for e in shlex.split(line))
    assert env["MPLBACKEND"] == "Agg" and env["KERAS_BACKEND"] in ("tensorflow", "jax", "torch")
    # "nothing to do" is not a failure; a moved or broken job file (usage error) is
    assert s["SuccessExitStatus"][0].split() == [str(EXIT_NOTHING_TO_DO)]
    assert re.fullmatch(r"\d+(h|min|s)?", s["TimeoutStartSec"][0])
    assert -20 <= int(s["Nice"][0]) <= 19 and s["IOSchedulingClass"][0] in (
        "best-effort", "idle", "2", "3")
    argv = exec_start(svc)
    assert Path(argv[0]).is_absolute(), "systemd needs an absolute executable path"
    assert not re.search(r"(?<!%)%(?!%)", s["ExecStart"][0]), "escape % as %% in units"

    t = timer["Timer"]
    (calendar,) = t["OnCalendar"]
    assert _CALENDAR.match(calendar), calendar
    assert t["Persistent"] == ["true"]
    assert t.get("Unit", [SERVICE.name]) == [SERVICE.name]
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    if shutil.which("systemd-analyze"):
        res = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0 and "Next elapse" in res.stdout, res.stderr


def test_systemd_analyze_verify(tmp_path):
    """``systemd-analyze verify`` finds no unknown key or bad value (the executable path is
    pointed at this environment's console script, the only thing verify looks up)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    script = shutil.which("csstflux", path=str(Path(sys.executable).parent))
    assert script, "the csstflux console script is not installed in this environment"
    argv = exec_start(read_unit(SERVICE))
    text = SERVICE.read_text().replace(f"ExecStart={argv[0]} ", f"ExecStart={script} ")
    assert script in text
    (tmp_path / SERVICE.name).write_text(text)
    shutil.copy(TIMER, tmp_path / TIMER.name)
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / SERVICE.name),
                          str(tmp_path / TIMER.name)], capture_output=True, text=True,
                         timeout=60)
    problems = [ln for ln in res.stderr.splitlines() if "csstflux-nightly" in ln]
    assert not problems, "\n".join(problems)
    if res.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {res.stderr.strip()[-300:]}")


_CRON_FIELDS = [(0, 59, ()), (0, 23, ()), (1, 31, ()),
                (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                         "nov", "dec")),
                (0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))]


def check_cron_field(field: str, lo: int, hi: int, names: tuple[str, ...]) -> None:
    def value(v: str) -> int:
        if v.lower() in names:
            return names.index(v.lower()) + (1 if lo == 1 else 0)
        assert v.isdigit(), f"cron field {field!r}: {v!r}"
        assert lo <= int(v) <= hi, f"cron field {field!r}: {v} outside {lo}-{hi}"
        return int(v)

    for part in field.split(","):
        rng, slash, step = part.partition("/")
        if slash:
            assert step.isdigit() and int(step) >= 1, f"cron step {part!r}"
        if rng == "*":
            continue
        a, dash, b = rng.partition("-")
        if dash:
            assert value(a) <= value(b), f"cron range {part!r}"
        else:
            value(a)


def cron_jobs(path: Path) -> list[tuple[list[str], str]]:
    """``(time fields, command)`` of each job line of a user crontab."""
    jobs = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#") or _ASSIGNMENT.match(s):
            continue
        if s.startswith("@"):
            special, command = s.split(None, 1)
            assert special in ("@reboot", "@yearly", "@annually", "@monthly", "@weekly",
                               "@daily", "@midnight", "@hourly"), special
            jobs.append(([special], command))
            continue
        parts = s.split(None, 5)
        assert len(parts) == 6, f"cron line needs 5 time fields and a command: {s}"
        jobs.append((parts[:5], parts[5]))
    return jobs


def test_cron_line():
    jobs = cron_jobs(CRON)
    assert len(jobs) == 1
    (fields, command), = jobs
    for field, (lo, hi, names) in zip(fields, _CRON_FIELDS, strict=True):
        check_cron_field(field, lo, hi, names)
    assert not re.search(r"(?<!\\)%", command), "a bare % ends a crontab command: write \\%"
    words = simple_commands(command.replace("\\%", "%"))
    assert any(os.path.basename(w[0]) == "flock" for w in words), "run under a lock"
    assert ">>" in command and "2>&1" in command, "log stdout and stderr to a file"
    (kind, args), = invocations(command.replace("\\%", "%"))
    assert kind == "csstflux"
    # a check of the checker on cron syntax
    with pytest.raises(AssertionError):
        check_cron_field("61", 0, 59, ())
    with pytest.raises(AssertionError):
        check_cron_field("5-2", 0, 23, ())
    check_cron_field("*/15,1-5,jan", 1, 12, _CRON_FIELDS[3][2])


def test_a_moved_job_file_is_a_failure_for_systemd_and_cron(tmp_path):
    """The issue: a moved config exited 2, which the unit counted as success. Now the command
    exits with the usage code, which the unit does not accept, and the cron line's hook logs
    it; 0 and "nothing to do" are quiet."""
    from click.testing import CliRunner

    from csstflux.cli.errors import EXIT_DONE, EXIT_FAILURE, EXIT_USAGE
    from csstflux.cli.main import cli

    res = CliRunner().invoke(cli, ["nightly", "--config", str(tmp_path / "moved.toml"),
                                   "--night", "2024-01-01"])
    assert res.exit_code == EXIT_USAGE
    success = read_unit(SERVICE)["Service"]["SuccessExitStatus"][0].split()
    assert str(EXIT_USAGE) not in success and str(EXIT_FAILURE) not in success
    (_, command), = cron_jobs(CRON)
    hook = command[command.index("rc=$?"):].replace("\\%", "%").replace(
        "/var/log/csstflux/failures.log", str(tmp_path / "failures.log"))
    for code in (EXIT_DONE, EXIT_NOTHING_TO_DO, EXIT_USAGE, EXIT_FAILURE):
        subprocess.run(["bash", "-c", f"(exit {code}); {hook}"], check=True, timeout=30)
    lines = (tmp_path / "failures.log").read_text().splitlines()
    assert [ln.split()[-1] for ln in lines] == [str(EXIT_USAGE), str(EXIT_FAILURE)]


def test_scheduled_commands_exist():
    """The service and the cron line run the same thing: the nightly for ``yesterday``,
    through the console script, with options that exist."""
    argv = exec_start(read_unit(SERVICE))
    (svc_kind, svc_args), = invocations(shlex.join(argv))
    (_, command), = cron_jobs(CRON)
    (cron_kind, cron_args), = invocations(command.replace("\\%", "%"))
    assert svc_kind == cron_kind == "csstflux"
    assert svc_args == cron_args
    assert svc_args[0] == "nightly"
    assert svc_args[svc_args.index("--night") + 1] == "yesterday"
    assert "--dry-run" not in svc_args
    check_csstflux(svc_args, SERVICE.name)
    check_csstflux(cron_args, CRON.name)
    # the path names this package's console script
    assert os.path.basename(argv[0]) == "csstflux"
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name="csstflux")
    assert ep.value == "csstflux.cli.main:main"
    assert shutil.which("csstflux", path=str(Path(sys.executable).parent))


# --------------------------------------------------------------------------- pages

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_show_real_commands(page):
    """Every csstflux / dask scheduler / dask worker command in the page's shell blocks exists
    with the options shown."""
    calls = page_invocations(page)
    assert any(kind == "csstflux" for kind, _, _ in calls), f"{page.name}: no csstflux command"
    for kind, args, where in calls:
        if kind != "dask cuda worker":   # test_gpu_page_dask_cuda_options
            check_invocation(kind, args, where)


_SHELL_LANGS = {"", "bash", "sh", "shell", "console"}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of each fenced code block of a Markdown page (fences of three or
    more backticks; a MyST directive's info string starts with ``{``)."""
    blocks: list[tuple[str, str]] = []
    fence, info, body = "", "", []
    for line in text.splitlines():
        m = re.match(r"^\s*(`{3,})(.*)$", line)
        if not fence:
            if m:
                fence, info, body = m.group(1), m.group(2).strip(), []
        elif m and len(m.group(1)) >= len(fence) and not m.group(2).strip():
            blocks.append((info, "\n".join(body) + "\n"))
            fence = ""
        else:
            body.append(line)
    return blocks


def doc_page_invocations(page: Path) -> list[tuple[str, list[str], str]]:
    """Every csstflux / Dask CLI call in the shell blocks (``bash``, ``sh``, ``console`` or no
    language) of a README or documentation page."""
    name = page.relative_to(ROOT).as_posix()
    return [(kind, args, f"{name}: {line[:60]}")
            for info, body in fenced_blocks(page.read_text(encoding="utf-8"))
            if (info.split() or [""])[0].lower() in _SHELL_LANGS
            for line in shell_lines(body) for kind, args in invocations(line)]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_doc_pages_show_real_commands(page):
    """The commands shown in README and the documentation site exist with the options shown;
    the pages showing csstflux commands are those of DOC_COMMAND_PAGES."""
    calls = doc_page_invocations(page)
    name = page.relative_to(ROOT).as_posix()
    shows = any(kind == "csstflux" for kind, _, _ in calls)
    assert shows == (name in DOC_COMMAND_PAGES), (
        f"{name}: shows csstflux commands in a shell block: {shows}; "
        f"DOC_COMMAND_PAGES should {'' if shows else 'not '}name it")
    for kind, args, where in calls:
        if kind != "dask cuda worker":
            check_invocation(kind, args, where)


def test_doc_page_checker_reads_fences():
    text = ("```python\nx = 1\n```\n\nprose\n\n```bash\ncsstflux info \\\n  --json\n```\n"
            "````{literalinclude} f\n:end-before: \"```\"\n````\n```\ncsstflux jobs\n```\n")
    blocks = fenced_blocks(text)
    assert [info for info, _ in blocks] == ["python", "bash", "{literalinclude} f", ""]
    ((line,),) = [list(shell_lines(body)) for _, body in blocks[1:2]]
    assert invocations(line) == [("csstflux", ["info", "--json"])]


def test_gpu_page_matches_predict_catalog():
    page = (DEPLOY / "gpu.md").read_text()
    res = CliRunner().invoke(cli, ["predict-catalog", "--help"])
    assert res.exit_code == 0
    for opt in ("--cluster", "--batch-size", "--scheduler"):
        assert opt in res.output and opt in page
    gpu_runs = [args for kind, args, _ in page_invocations(DEPLOY / "gpu.md")
                if kind == "csstflux" and "--cluster" in args
                and args[args.index("--cluster") + 1] == "gpu"]
    assert gpu_runs and all(a[a.index("--batch-size") + 1] == "2048" for a in gpu_runs)
    for setting in ("--device-memory-limit", "--memory-limit", "--rmm-pool-size",
                    "XLA_PYTHON_CLIENT_PREALLOCATE=false", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                    "TF_FORCE_GPU_ALLOW_GROWTH=true", "PYTORCH_CUDA_ALLOC_CONF",
                    "KERAS_BACKEND=jax", "LocalCUDACluster"):
        assert setting in page, setting


def test_gpu_page_dask_cuda_options():
    calls = [(args, where) for kind, args, where in page_invocations(DEPLOY / "gpu.md")
             if kind == "dask cuda worker"]
    assert calls, "gpu.md shows no `dask cuda worker` command"
    dask_cuda_cli = pytest.importorskip("dask_cuda.cli", reason="dask-cuda not installed")
    for args, where in calls:
        check_click_args(dask_cuda_cli.worker, args, where)


# --------------------------------------------------------------------------- TLS

def _leaf_values(d: Any) -> Iterator[Any]:
    if isinstance(d, dict):
        for v in d.values():
            yield from _leaf_values(v)
    else:
        yield d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tls_recipe_end_to_end(tmp_path, dask_config_sandbox):
    """tls.md's openssl commands, a TLS ``dask scheduler`` (flags) and ``dask worker``
    (``DASK_CONFIG`` = tls.yaml); csstflux's client with tls.yaml gets in and computes; a
    tcp:// client, a client without a certificate and one signed by another CA do not."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    tls = tmp_path / "tls"
    (recipe,) = [b for b in shell_blocks(DEPLOY / "tls.md") if "openssl req -x509" in b]
    env = {**os.environ, "TLS_DIR": str(tls), "SCHEDULER_HOST": "localhost"}
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tls / "ca.key").stat().st_mode & 0o077 == 0, "keys readable by others"
    config = TLS_YAML.read_text().replace("/etc/csstflux/tls", str(tls))
    files = [v for v in _leaf_values(yaml.safe_load(config)) if isinstance(v, str) and "/" in v]
    assert len(files) == 7 and all(Path(f).is_file() for f in files), files
    config_file = tmp_path / "tls.yaml"
    config_file.write_text(config)

    port = _free_port()
    address = f"tls://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("scheduler", "worker")}
    procs = [subprocess.Popen(
        [str(bin_dir / "dask"), "scheduler", "--host", "tls://127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0", "--tls-ca-file", str(tls / "ca.pem"),
         "--tls-cert", str(tls / "scheduler.pem"), "--tls-key", str(tls / "scheduler.key")],
        stdout=logs["scheduler"], stderr=subprocess.STDOUT)]
    handle = None
    try:
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
             "--host", "127.0.0.1"],
            env={**os.environ, "DASK_CONFIG": str(config_file), "OMP_NUM_THREADS": "1"},
            stdout=logs["worker"], stderr=subprocess.STDOUT))
        dask.config.update(dask.config.config, yaml.safe_load(config))   # as --dask-config
        handle = cluster_mod.start_cluster(cluster_mod.ClusterSettings(scheduler=address))
        handle.client.wait_for_workers(1, timeout=60)
        (worker,) = handle.client.scheduler_info()["workers"]
        assert worker.startswith("tls://")
        assert handle.client.submit(operator.mul, 6, 7).result(timeout=30) == 42
        # the same client from the cluster options' files (--tls-ca-file, --tls-cert, ...)
        by_files = cluster_mod.start_cluster(cluster_mod.ClusterSettings(
            scheduler=address, tls_ca_file=tls / "ca.pem", tls_cert=tls / "client.pem",
            tls_key=tls / "client.key"))
        try:
            assert by_files.client.submit(operator.add, 1, 2).result(timeout=30) == 3
        finally:
            by_files.close()

        # plain TCP to the TLS port
        with pytest.raises(OSError):
            Client(f"tcp://127.0.0.1:{port}", timeout=5,
                   security=Security(require_encryption=False))
        # TLS that trusts the CA but shows no certificate: the scheduler ends the handshake
        # (an alert "certificate required", or just EOF, depending on timing); had it
        # accepted, recv() would wait for a message and time out instead
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        ctx.check_hostname = False
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw) as conn:
                conn.recv(8)
        # a certificate from another CA
        other = tmp_path / "other"
        other.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", "o.key",
                        "-out", "o.pem", "-days", "2", "-subj", "/CN=intruder"],
                       cwd=other, check=True, capture_output=True, timeout=30)
        with pytest.raises(OSError):
            Client(address, timeout=5, security=Security(
                tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(other / "o.pem"),
                tls_client_key=str(other / "o.key"), require_encryption=True))
    except BaseException:
        for f in logs.values():
            f.flush()
        print({n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in logs})
        raise
    finally:
        if handle is not None:
            handle.close()
        for p in procs:
            p.kill()
            p.wait(timeout=30)
        for f in logs.values():
            f.close()


# --------------------------------------------------------------------------- coverage

def test_every_deploy_file_is_covered():
    files = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert files == set(COVERED_BY), ("name the tests of each deploy/ file in COVERED_BY: "
                                      f"missing {sorted(files - set(COVERED_BY))}, "
                                      f"gone {sorted(set(COVERED_BY) - files)}")
    module = sys.modules[__name__]
    for path, tests in COVERED_BY.items():
        assert tests, path
        for name in tests:
            assert callable(getattr(module, name, None)), f"{path}: no test {name}"
