"""The layer contract of pyproject.toml holds (import-linter), and the core stays light."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: " in res.stdout and " broken" in res.stdout
    assert "0 broken" in res.stdout


def test_core_import_does_not_pull_heavy_stacks():
    code = ("import sys, csstflux.grids, csstflux.io, csstflux.spectra; "
            "bad = [m for m in ('keras', 'tensorflow', 'dask', 'distributed') if m in sys.modules];"
            "print(','.join(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
