"""Simulated exposures → cross-match → Dask tree reduction → 3D flat, against the truth."""

from __future__ import annotations

import json
from functools import reduce

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from csstflux.core.detectors import SLITLESS_FOCAL_PLANE, pixel_to_sky
from csstflux.grids import OUTPUT_GRID
from csstflux.io import predstore
from csstflux.io.exposures import list_exposures, read_exposure, read_truth
from csstflux.pipeline.flats import (
    DEFAULT_DETECTORS,
    build_flat,
    exposure_equations,
    merge,
    simulate,
    write_outputs,
)

RA, DEC = 150.0, 2.0
N_PER_DET = 100


def _stars(rng, extra_near=None):
    """~100 stars on each default detector's footprint (boresight at RA, DEC), smooth SEDs."""
    ra, dec = [], []
    for name in DEFAULT_DETECTORS:
        det = SLITLESS_FOCAL_PLANE[name]
        # stay 300 px inside the edges so small dithers keep every star on the detector
        x = rng.uniform(300, det.n_x - 300, N_PER_DET)
        y = rng.uniform(300, det.n_y - 300, N_PER_DET)
        r, d = pixel_to_sky(det, x, y, RA, DEC, 0.0)
        ra.append(r)
        dec.append(d)
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    if extra_near is not None:  # a second catalogue star 0.3″ from star extra_near
        ra = np.append(ra, ra[extra_near] + 0.3 / 3600 / np.cos(np.radians(dec[extra_near])))
        dec = np.append(dec, dec[extra_near])
    return ra, dec


def _store(path, ra, dec, rng):
    n = ra.size
    table, perm = predstore.StarTable.build(
        obsid=np.arange(n) + 1000, ra=ra, dec=dec, snr_g=np.full(n, 50.0),
        teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n), rv=np.zeros(n),
        class_=np.full(n, "STAR"), source_file=np.full(n, "x.fits"))
    lam = OUTPUT_GRID.wavelength
    slope = rng.uniform(-0.5, 0.5, n)[perm]
    sed = 1.0 + slope[:, None] * (lam - 5556.0) / 8000.0
    predstore.create_store(path, table, chunk_stars=128)
    predstore.write_block(path, 0, n, sed, 0.01 * sed, np.zeros(n, np.uint32))
    predstore.finalize(path)
    return table


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("flats")
    ra, dec = _stars(rng)
    _store(d / "pred.zarr", ra, dec, rng)
    ra2, dec2 = _stars(np.random.default_rng(7), extra_near=5)
    _store(d / "pred_dup.zarr", ra2, dec2, np.random.default_rng(7))
    with pytest.warns(UserWarning, match="top-hat"):
        sim = simulate(d / "pred.zarr", d / "exp", ra=RA, dec=DEC, radius_deg=1.0,
                       n_pointings=3, ideal=True, seed=1, dither_arcsec=5.0, amplitude=0.03)
    return d, sim


def test_simulated_exposures(field):
    d, sim = field
    paths = list_exposures(d / "exp")
    assert [p.name for p in paths] == ["exposure-0000.zarr", "exposure-0001.zarr",
                                       "exposure-0002.zarr"]
    e = read_exposure(paths[0])
    assert len(e) == 3 * N_PER_DET and set(e.detector) == set(DEFAULT_DETECTORS)
    assert e.counts.shape == (len(e), OUTPUT_GRID.n) and e.counts.dtype == np.float32
    gv = e.detector == "GV-02"
    outside = ~(e.throughput["GV-02"] > 0)
    assert np.isnan(e.counts[gv][:, outside]).all() and np.isfinite(e.counts[gv][:, ~outside]).all()
    flats, waves, gx, gy, _ = read_truth(d / "exp")
    assert set(flats) == set(DEFAULT_DETECTORS) and flats["GU-03"].shape == (
        waves["GU-03"].size, 9, 9)


def test_build_flat_recovers_truth(field, dask_scheduler_address, tmp_path):
    from distributed import Client

    d, _ = field
    with Client(dask_scheduler_address) as client:
        res = build_flat(d / "exp", d / "pred.zarr", client, star_scale="known", grid=9)
    flats, waves, gx, gy, _ = read_truth(d / "exp")
    np.testing.assert_allclose(res.grid_x, gx)
    for name in DEFAULT_DETECTORS:
        np.testing.assert_allclose(res.wavelength[name], waves[name])
        # ideal, noise-free, order-2 truth: exact up to float32 counts (~1e-7 relative)
        np.testing.assert_allclose(res.solutions[name].flat, flats[name], atol=2e-6)
        assert np.ptp(flats[name]) > 0.01  # the truth is not trivially flat
    m = res.equations.matches
    assert m["matched"] == m["total"] == 9 * N_PER_DET and m["ambiguous"] == 0
    assert res.equations.n_exposures == 3

    # the Dask tree reduction equals the single-process sum of the same equations
    local = reduce(merge, [exposure_equations(p, d / "pred.zarr", star_scale="known",
                                              clip=res.clip)
                           for p in list_exposures(d / "exp")])
    for name in DEFAULT_DETECTORS:
        a, b = res.equations.equations[name], local.equations[name]
        np.testing.assert_allclose(a.ata, b.ata, rtol=1e-10)
        np.testing.assert_allclose(a.atb, b.atb, rtol=1e-10)
        np.testing.assert_array_equal(a.n, b.n)

    out = write_outputs(res, tmp_path / "flat")
    with fits.open(out["fits"]) as hl:
        assert [h.name for h in hl[1:]] == list(DEFAULT_DETECTORS)
        h = hl["GV-02"].header
        assert h["CTYPE3"] == "WAVE-LOG" and h["ORDER"] == 2 and h["NEXPOSUR"] == 3
        assert h["NSTARS"] == 9 * N_PER_DET and h["CSSTFVER"] and "STORE" in h
        assert hl["GV-02"].data.shape == (waves["GV-02"].size, 9, 9)
        lam = WCS(h).spectral.pixel_to_world(np.arange(waves["GV-02"].size)).to_value("AA")
        np.testing.assert_allclose(lam, waves["GV-02"], rtol=1e-9)


def test_ambiguous_match_dropped(field, dask_scheduler_address):
    from distributed import Client

    d, _ = field
    with Client(dask_scheduler_address) as client:
        res = build_flat(d / "exp", d / "pred_dup.zarr", client, star_scale="median",
                         max_iter=1)
    m = res.equations.matches
    assert m["ambiguous"] == 3 and m["matched"] == 9 * N_PER_DET - 3
    assert res.equations.n_used == m["matched"]


def test_cli_end_to_end(field, dask_scheduler_address, tmp_path):
    from csstflux.cli.main import cli

    d, _ = field
    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, [
        "simulate-exposures", "--predictions", str(d / "pred.zarr"), "--out", str(out),
        "--ra", str(RA), "--dec", str(DEC), "--radius", "1.0", "--pointings", "2",
        "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, [
        "build-flat", "--exposures", str(out), "--predictions", str(d / "pred.zarr"),
        "--out", str(tmp_path / "cube"), "--scheduler", dask_scheduler_address, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["matches"]["matched"] > 0 and (tmp_path / "cube.fits").is_file()
