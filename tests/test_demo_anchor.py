"""End to end on the demo release: predict with the shipped model, anchor to the header
photometry, and compare with the truth the demo generator injected."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.demo.release import build_demo_release
from csstflux.flags import Flag
from csstflux.io.formats.lamost_photometry import HEADER_BANDS
from csstflux.pipeline.anchor import AnchorOptions, run_anchor

TRUSTED = ~np.uint32(Flag.NO_PHOTOMETRY | Flag.PHOT_INCONSISTENT | Flag.OUT_OF_DISTRIBUTION
                     | Flag.OUTSIDE_DOMAIN | Flag.BAD_INPUT | Flag.NONFINITE_OUTPUT)


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory, dask_scheduler_address: str):
    rel = build_demo_release(tmp_path_factory.mktemp("demo"), n_stars=400, seed=7,
                             broken=False)
    out = tmp_path_factory.mktemp("store") / "demo.zarr"
    res = CliRunner().invoke(cli, ["predict-catalog", "--catalog", str(rel.catalog), "--root",
                                   str(rel.root), "--out", str(out), "--chunk-stars", "100",
                                   "--scheduler", dask_scheduler_address,
                                   "--photometry", "header", "--json"])
    assert res.exit_code == 0, res.output
    first = json.loads(res.output[res.output.index("{"):])
    held = run_anchor(AnchorOptions(store=str(out), holdout=("u", "z"), overwrite=True), None)
    import xarray as xr

    return rel, xr.open_zarr(out), first["anchor"], held.summary


@pytest.mark.slow
def test_reddening_and_scale_recovered(anchored) -> None:
    rel, ds, first, summary = anchored
    assert first["n_anchored"] > 300   # the predict-catalog --photometry stage ran
    obsid = ds["obsid"].values
    true_ebv = np.array([rel.true_ebv[int(o)] for o in obsid])
    true_scale = np.array([rel.true_scale[int(o)] for o in obsid])
    ok = (ds["flags"].values & ~TRUSTED) == 0
    assert ok.sum() > 300 and summary["n_anchored"] == ok.sum()
    z = (ds["ebv"].values - true_ebv) / ds["ebv_err"].values
    # the demo's truth is an ATLAS9 SED and the network was trained mostly on other spectra:
    # E(B-V) comes out ~0.015 high on 2000 demo stars; the errors stay honest
    assert abs(np.median(ds["ebv"].values[ok] - true_ebv[ok])) < 0.03
    assert 0.8 < np.std(z[ok]) < 1.25
    zs = np.log(ds["scale"].values / true_scale) / (ds["scale_err"].values / ds["scale"].values)
    assert 0.8 < np.std(zs[ok]) < 1.25


@pytest.mark.slow
def test_holdout_measures_the_true_sed_difference(anchored) -> None:
    """The hold-out statistic of a band equals what the truth says of the anchored SED there:
    median(true AB − model AB), within the photometric noise's share."""
    rel, ds, _, held = anchored
    ds = ds.load()
    bands = [str(b) for b in ds["phot_band"].values]
    assert bands == list(HEADER_BANDS)   # the order of the manifest's true_mag_ab
    obsid = ds["obsid"].values
    true = np.array([rel.true_mag_ab[int(o)] for o in obsid])
    ok = (ds["flags"].values & ~TRUSTED) == 0
    assert set(held["holdout"]) == {"sdss_u", "sdss_z", "ps1_z"}
    for band, st in held["holdout"].items():
        j = bands.index(band)
        truth = np.nanmedian((true[:, j] - ds["phot_mag_model"].values[:, j])[ok])
        assert st["n"] > 100
        assert abs(st["median"] - truth) < 0.01, band
        assert st["robust_sigma"] < 0.12


@pytest.mark.slow
def test_corrupted_header_bands_rejected(anchored) -> None:
    rel, store, _, _ = anchored
    bands = [str(b) for b in store["phot_band"].values]
    index = {int(o): i for i, o in enumerate(store["obsid"].values)}
    absurd = [p for p in rel.phot_problems if p.kind == "absurd"]
    missing = [p for p in rel.phot_problems if p.kind == "missing"]
    assert absurd and missing
    for p in missing:
        assert np.isnan(store["phot_mag"].values[index[p.obsid], bands.index(p.band)])
    # the anchored store read last was fitted with u and z held out: judge only the others
    judged = [p for p in absurd if not p.band.endswith(("_u", "_z"))]
    caught = [bool(store["phot_rejected"].values[index[p.obsid], bands.index(p.band)])
              or bool(store["flags"].values[index[p.obsid]] & Flag.PHOT_INCONSISTENT)
              for p in judged]
    assert all(caught)
