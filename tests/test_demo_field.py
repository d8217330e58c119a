"""``csstflux demo-field``: demo stars on the slitless detectors, predicted into a store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.demo.field import MARGIN_PX, field_positions
from csstflux.errors import ConfigError
from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE, sky_to_pixel


@pytest.mark.slow
def test_positions_lie_on_the_detectors() -> None:
    dets = ("GU-03", "GV-29", "GI-10")
    ra, dec = field_positions(359.9, -30.0, 50, dets, seed=1)
    assert ra.size == 150 and np.all((ra >= 0) & (ra < 360))
    for k, name in enumerate(dets):
        det = SLITLESS_FOCAL_PLANE[name]
        x, y = sky_to_pixel(det, ra[50 * k:50 * (k + 1)], dec[50 * k:50 * (k + 1)], 359.9,
                            -30.0, 0.0)
        assert np.all((x > MARGIN_PX - 1) & (x < det.n_x - MARGIN_PX + 1))
        assert np.all((y > MARGIN_PX - 1) & (y < det.n_y - MARGIN_PX + 1))
    with pytest.raises(ConfigError):
        field_positions(10.0, 95.0, 5)
    with pytest.raises(ConfigError):
        field_positions(10.0, 5.0, 5, ("XX-99",))


@pytest.mark.slow
def test_command_writes_a_predicted_store(tmp_path) -> None:
    out = tmp_path / "field.zarr"
    args = ["demo-field", "--ra", "150", "--dec", "2.2", "--per-detector", "20", "--out",
            str(out), "--workers", "1", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{"):])
    assert doc["n_stars"] == 60 and doc["n_predicted"] == 60
    import xarray as xr

    ds = xr.open_zarr(out)
    assert np.isfinite(ds["sed"].values).any(axis=1).all()
    assert (ds["header_mag"].notnull().sum("header_band") >= 4).all()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
