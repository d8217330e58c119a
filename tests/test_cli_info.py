"""``csstflux info`` reports the grids and the stack."""

import json

from click.testing import CliRunner

from csstflux import grids
from csstflux.cli.main import cli


def test_info_json():
    res = CliRunner().invoke(cli, ["info", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["input_grid"]["n"] == grids.INPUT_GRID.n == 2238
    assert d["output_grid"]["n"] == 574
    assert d["output_grid"]["dlnlambda"] == 1 / 400
    assert d["bands"]["GV"] == {"lo": 4000.0, "hi": 6500.0}
    assert d["backend"] in {"tensorflow", "jax", "torch", "numpy"}
    for key in ("version", "keras", "dask", "zarr"):
        assert d[key]
    assert d["gzip_inflater"] in ("isal", "zlib-ng", "zlib")


def test_info_text():
    res = CliRunner().invoke(cli, ["info"])
    assert res.exit_code == 0
    assert "2238 px" in res.output and "574 px" in res.output
