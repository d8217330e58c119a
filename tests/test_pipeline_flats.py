"""Simulated exposures → cross-match → Dask tree reduction → 3D flat, against the truth."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import reduce

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from csstflux.errors import EmptyResultError, InputFormatError
from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE, pixel_to_sky
from csstflux.flat.equations import exposure_census, exposure_equations, merge
from csstflux.flat.fit import band_pixels, flux_ratios, outliers, solve_flat
from csstflux.flat.observe import DEFAULT_DETECTORS, simulate
from csstflux.flat.settings import FlatSettings
from csstflux.flat.stars import known_rate
from csstflux.flat.traces import load_instrument
from csstflux.grids import BAND_RESOLUTION, OUTPUT_GRID
from csstflux.io.stores import predictions as predstore
from csstflux.io.stores.exposures import list_exposures, read_exposure, read_truth, write_exposure
from csstflux.pipeline.flats import build_flat, write_outputs

RA, DEC = 150.0, 2.0
N_PER_DET = 100


def _stars(rng, extra_near=None, n=N_PER_DET):
    """``n`` stars on each default detector's footprint (boresight at RA, DEC)."""
    ra, dec = [], []
    for name in DEFAULT_DETECTORS:
        det = SLITLESS_FOCAL_PLANE[name]
        # stay 300 px inside the edges so small dithers keep every star on the detector
        x = rng.uniform(300, det.n_x - 300, n)
        y = rng.uniform(300, det.n_y - 300, n)
        r, d = pixel_to_sky(det, x, y, RA, DEC, 0.0)
        ra.append(r)
        dec.append(d)
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    if extra_near is not None:  # a second catalogue star 0.3″ from star extra_near
        ra = np.append(ra, ra[extra_near] + 0.3 / 3600 / np.cos(np.radians(dec[extra_near])))
        dec = np.append(dec, dec[extra_near])
    return ra, dec


def _store(path, ra, dec, rng, rel_err=0.01):
    """Predictions store of smooth SEDs with ``sed_err = rel_err × sed``."""
    n = ra.size
    table, perm = predstore.StarTable.build(
        obsid=np.arange(n) + 1000, ra=ra, dec=dec, snr_g=np.full(n, 50.0),
        teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n), rv=np.zeros(n),
        class_=np.full(n, "STAR"), source_file=np.full(n, "x.fits"))
    lam = OUTPUT_GRID.wavelength
    slope = rng.uniform(-0.5, 0.5, n)[perm]
    sed = 1.0 + slope[:, None] * (lam - 5556.0) / 8000.0
    predstore.create_store(path, table, chunk_stars=128)
    predstore.write_block(path, 0, n, sed, rel_err * sed, np.zeros(n, np.uint32))
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
    # the traces: each band pixel's light where the shipped instrument model puts it
    assert e.traced and e.attrs["traces"] is True
    assert e.attrs["extraction_resolution"] == {k: BAND_RESOLUTION[k[:2]]
                                                for k in DEFAULT_DETECTORS}
    inst = load_instrument()
    assert e.attrs["instrument"]["fingerprint"] == inst.fingerprint
    for name in DEFAULT_DETECTORS:
        on = np.flatnonzero(e.detector == name)
        inband = band_pixels(e.throughput[name])
        xt, yt = e.positions(on)
        geo = inst.geometry(name, e.x[on], e.y[on], OUTPUT_GRID.wavelength[inband],
                            OUTPUT_GRID.edges[: inband.sum() + 1])
        np.testing.assert_allclose(xt[:, inband], geo.x, atol=1e-3)  # float32 positions
        np.testing.assert_allclose(yt[:, inband], geo.y, atol=1e-3)
        assert np.isnan(xt[:, ~inband]).all()
        assert np.ptp(xt[:, inband], axis=1).min() > 200  # hundreds of pixels long
    frac = e.contamination[np.isfinite(e.counts)]
    assert np.all((frac >= 0) & (frac < 1))
    np.testing.assert_array_equal(e.contaminated, np.nan_to_num(e.contamination) > 1e-4)
    assert sim.contaminated_fraction[0] == pytest.approx(
        e.contaminated.sum() / np.isfinite(e.counts).sum())


def test_census_reads_sources_without_spectra(field, tmp_path):
    """The census pass reads positions only: it works on an exposure whose spectra are gone,
    and gives what the full read gives."""
    import shutil

    d, _ = field
    src = list_exposures(d / "exp")[0]
    full = exposure_census(src, d / "pred.zarr")
    light = read_exposure(src, spectra=False)
    np.testing.assert_array_equal(light.ra, read_exposure(src).ra)
    assert light.counts.shape == (len(light), OUTPUT_GRID.n) and not light.counts.flags.writeable
    bare = tmp_path / src.name
    shutil.copytree(src, bare)
    shutil.rmtree(bare / "counts")
    with pytest.raises(InputFormatError, match="counts"):
        read_exposure(bare)
    light_census = exposure_census(bare, d / "pred.zarr")
    assert sum(v.size for v in full.ids.values()) > 0
    assert full.ids.keys() == light_census.ids.keys()
    for k in full.ids:
        np.testing.assert_array_equal(light_census.ids[k], full.ids[k])


def test_build_flat_recovers_truth(field, dask_scheduler_address, tmp_path):
    from distributed import Client

    d, _ = field
    with Client(dask_scheduler_address) as client:
        res = build_flat(d / "exp", d / "pred.zarr", client,
                         FlatSettings(star_scale="known", grid=9))
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

    assert res.provenance["max_repeats"] == 3  # every star on all three pointings
    # the Dask tree reduction equals the single-process sum of the same equations
    paths = list_exposures(d / "exp")
    census = sum(exposure_census(p, d / "pred.zarr") for p in paths)
    local = reduce(merge, [exposure_equations(p, d / "pred.zarr",
                                              FlatSettings(star_scale="known"),
                                              clip=res.clip, repeats=census)
                           for p in paths])
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
        res = build_flat(d / "exp", d / "pred_dup.zarr", client,
                         FlatSettings(star_scale="median", max_iter=1))
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
    summary = json.loads(res.stdout)
    assert summary["matches"]["matched"] > 0 and (tmp_path / "cube.fits").is_file()


def _noisy_field(path, seed, n, rel_err, **kw):
    """Store + 3 noisy dithered exposures of ``n`` stars per detector, polynomial truth."""
    rng = np.random.default_rng(seed)
    ra, dec = _stars(rng, n=n)
    _store(path / "pred.zarr", ra, dec, rng, rel_err=rel_err)
    with pytest.warns(UserWarning, match="top-hat"):
        # ripple 0: the true flat is an order-2 polynomial in (x, y), what the fit represents
        simulate(path / "pred.zarr", path / "exp", ra=RA, dec=DEC, radius_deg=1.0,
                 n_pointings=3, ideal=False, seed=seed, dither_arcsec=20.0, amplitude=0.03,
                 ripple=0.0, **kw)
    return read_truth(path / "exp")


def _z(solutions, flats):
    """(recovered − true) / σ per detector, each (n_band, n_gy, n_gx)."""
    return {k: (solutions[k].flat - flats[k]) / solutions[k].sigma for k in flats}


@pytest.mark.slow
def test_build_flat_errors_are_calibrated(dask_scheduler_address, tmp_path):
    """Noisy Dask build with SED errors: z = (recovered − true)/σ is N(0, 1).

    Every star is seen on 3 dithered pointings with one true SED, drawn once around its
    prediction from a 2 % ``sed_err`` correlated along λ (L = 5 pixels), so its SED error is
    the same in all 3 exposures; photon and read noise are independent. Weighting each ratio
    as independent gave a z std of 1.45 here; the census of repeats fixes it.

    Tolerances. The z of the 81 grid points of one wavelength are linear in 6 polynomial
    coefficients (5 after normalisation); along λ the SED part is correlated with ρ = e^(−1/5)
    between neighbours, so z² correlates with ρ² and each detector's ~190 wavelengths count as
    ≳ 190 (1 − ρ²)/(1 + ρ²) ≈ 38 independent ones. N_eff ≳ 3 × 38 × 5 ≈ 570, SE(std) =
    1/√(2 N_eff) ≈ 0.03: |std − 1| < 0.12 is 4 SE (this seed: 0.985 in physical units, 0.981
    in relative ones; seeds 12–16 with 300 stars, physical: 0.984–1.053). The mean over the
    grid is pinned near 0 by both
    flats having detector mean 1 (|mean| ≤ 0.002 measured): |mean| < 0.05 catches an offset
    or sign error, not noise.
    """
    from distributed import Client

    flats, *_ = _noisy_field(tmp_path, 11, 250, 0.02, correlation_length=5.0)
    with Client(dask_scheduler_address) as client:
        res = build_flat(tmp_path / "exp", tmp_path / "pred.zarr", client,
                         FlatSettings(star_scale="known", max_iter=10))
    assert res.provenance["max_repeats"] == 3 and res.provenance["clip_converged"]
    z = _z(res.solutions, flats)
    zall = np.concatenate([v.ravel() for v in z.values()])
    assert np.all(np.isfinite(zall)) and zall.size == 81 * sum(f.shape[0] for f in flats.values())
    assert abs(zall.mean()) < 0.05
    assert abs(zall.std() - 1.0) < 0.12
    for k, v in z.items():
        assert abs(v.std() - 1.0) < 0.2, k  # N_eff ≈ 190 per detector: 0.2 is 4 SE
        # χ² over its expectation for a correct model, lowered ~2 % by the 3σ clipping
        assert 0.9 < np.nanmedian(res.solutions[k].reduced_chi2) < 1.05, k

    # the same ratios weighted as if each exposure's SED error were independent: overconfident
    naive = reduce(merge, [exposure_equations(p, tmp_path / "pred.zarr",
                                              FlatSettings(star_scale="known"), clip=res.clip)
                           for p in list_exposures(tmp_path / "exp")])
    zn = _z({k: solve_flat(v, res.grid_x, res.grid_y)
             for k, v in naive.equations.items()}, flats)
    assert np.concatenate([v.ravel() for v in zn.values()]).std() > 1.25


@pytest.mark.slow
def test_build_flat_clipping_converges_on_outliers(dask_scheduler_address, tmp_path):
    """Planted outliers: clipped, the loop reaches a fixed point, the flat stays calibrated."""
    from distributed import Client

    # relative units (the simulation before physical units): its GU signal-to-noise, ≥ 17
    # per pixel, puts every planted blend (40-100 % too bright) beyond 3σ; with the photon
    # conversion the faintest GU stars have S/N ≈ 5 and a 40 % blend is not an outlier there.
    # No traces: the R = 200 matching of a traced exposure would spread each planted
    # cosmic-ray pixel into its neighbours, and the test counts planted pixels one by one.
    flats, *_ = _noisy_field(tmp_path, 21, 200, 0.01, units="relative", traces=False)
    rng = np.random.default_rng(21)
    planted = {}
    for path in list_exposures(tmp_path / "exp"):
        e = read_exposure(path)
        counts = e.counts.astype(float)
        blend = rng.random(len(e)) < 0.05  # a blend: the whole spectrum 40–100 % too bright
        counts[blend] *= rng.uniform(1.4, 2.0, blend.sum())[:, None]
        hit = (rng.random(counts.shape) < 0.005) & np.isfinite(counts)  # cosmic-ray pixels
        counts[hit] += 30.0 * e.counts_err[hit]
        write_exposure(tmp_path / "exp", replace(e, counts=counts.astype(np.float32)))
        planted[path.name] = (blend, hit)
    max_iter = 10
    with Client(dask_scheduler_address) as client:
        res = build_flat(tmp_path / "exp", tmp_path / "pred.zarr", client,
                         FlatSettings(star_scale="known", max_iter=max_iter))
        raw = build_flat(tmp_path / "exp", tmp_path / "pred.zarr", client,
                         FlatSettings(star_scale="known", max_iter=0))
    prov = res.provenance
    assert prov["clip_converged"] and prov["clip_changed_last"] == 0
    assert res.n_passes < max_iter  # 6 here: 5 clipping passes, the last one changing nothing

    # every planted ratio lies beyond 3σ of the final model, and few good ones do
    ds = predstore.open_predictions(tmp_path / "pred.zarr")
    obsid = np.asarray(ds["obsid"].values)
    order = np.argsort(obsid)
    n_good = n_good_out = 0
    for path in list_exposures(tmp_path / "exp"):
        e = read_exposure(path)
        blend, hit = planted[path.name]
        row = order[np.searchsorted(obsid, e.id, sorter=order)]
        pred = np.asarray(ds["sed"].values)[row]
        perr = np.asarray(ds["sed_err"].values)[row]
        for name in DEFAULT_DETECTORS:
            det = SLITLESS_FOCAL_PLANE[name]
            on = e.detector == name
            tp = e.throughput[name]
            band = band_pixels(tp)
            # the recorded truth: scale, ebv and the photon conversion (known_rate)
            rate, rate_err = known_rate(e, np.flatnonzero(on), pred[on], perr[on])
            r, err = flux_ratios(e.counts[on], e.counts_err[on], rate, rate_err, tp,
                                 exposure_time=e.exposure_time)
            out = outliers(res.clip[name], e.x[on], e.y[on], r, err, shape=det.shape)
            bad = blend[on][:, None] | hit[on][:, band]
            assert out[bad].all(), name
            n_good += int((~bad).sum())
            n_good_out += int(out[~bad].sum())
    assert n_good_out / n_good < 0.005  # a 3σ cut on Gaussian ratios removes 0.27 %

    z = np.concatenate([v.ravel() for v in _z(res.solutions, flats).values()])
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.15  # as above, N_eff ≈ 2800
    z_raw = np.concatenate([v.ravel() for v in _z(raw.solutions, flats).values()])
    assert z_raw.std() > 3  # without clipping the outliers dominate


def _pair_store(path, rng):
    """A store of ``_stars`` plus, beside star 0 of GV-02, a neighbour 100 px further along x
    and 2 px up: their first-order traces overlap over ~200 pixels, inside the aperture."""
    ra, dec = _stars(rng)
    det = SLITLESS_FOCAL_PLANE["GV-02"]
    from csstflux.flat.detectors import sky_to_pixel

    i = N_PER_DET  # the first GV-02 star (GU-03's come first)
    x, y = sky_to_pixel(det, ra[i:i + 1], dec[i:i + 1], RA, DEC, 0.0)
    r, d = pixel_to_sky(det, x + 100.0, y + 2.0, RA, DEC, 0.0)
    _store(path, np.append(ra, r), np.append(dec, d), rng)
    return i


def test_contaminated_pixels_are_flagged_and_left_out(dask_scheduler_address, tmp_path):
    """Two stars whose traces overlap in the aperture: both flagged CONTAMINATED where they
    do; build-flat leaves those pixels out (counted) and recovers the ideal flat exactly, and
    the same exposures with the mask cleared give a flat off by far more."""
    from distributed import Client

    i = _pair_store(tmp_path / "pred.zarr", np.random.default_rng(4))
    with pytest.warns(UserWarning, match="top-hat"):
        simulate(tmp_path / "pred.zarr", tmp_path / "exp", ra=RA, dec=DEC, radius_deg=1.0,
                 n_pointings=2, ideal=True, seed=2, dither_arcsec=5.0, amplitude=0.03)
    e = read_exposure(list_exposures(tmp_path / "exp")[0])
    rows = np.flatnonzero(e.contaminated.any(axis=1))
    pair = np.flatnonzero(np.isin(e.id, [1000 + i, 1000 + 3 * N_PER_DET]))
    assert set(pair) <= set(rows)
    assert 100 < e.contaminated[pair[0]].sum() < 300
    assert np.nanmax(e.contamination[pair]) > 0.1
    flats, *_ = read_truth(tmp_path / "exp")
    for p in list_exposures(tmp_path / "exp"):  # the same exposures, nothing flagged
        ex = read_exposure(p)
        write_exposure(tmp_path / "blind", replace(ex, contaminated=np.zeros_like(
            ex.contaminated)))
    with Client(dask_scheduler_address) as client:
        res = build_flat(tmp_path / "exp", tmp_path / "pred.zarr", client,
                         FlatSettings(star_scale="known", max_iter=0))
        blind = build_flat(tmp_path / "blind", tmp_path / "pred.zarr", client,
                           FlatSettings(star_scale="known", max_iter=0))
    excluded = res.provenance["contaminated_excluded"]
    assert excluded["GV-02"] >= 2 * 2 * 100 and res.summary()["contaminated_excluded"]
    assert blind.provenance["contaminated_excluded"] == dict.fromkeys(DEFAULT_DETECTORS, 0)
    for k in DEFAULT_DETECTORS:
        np.testing.assert_allclose(res.solutions[k].flat, flats[k], atol=2e-6)
    assert np.abs(blind.solutions["GV-02"].flat - flats["GV-02"]).max() > 1e-3


def test_exposures_without_traces_still_build(field, dask_scheduler_address, tmp_path):
    """Exposures without traces (simulated with ``traces=False``, or written before traces):
    every wavelength at the source's x, y, R = 200 spectra; read and fitted as before."""
    from distributed import Client

    d, _ = field
    with pytest.warns(UserWarning, match="top-hat"):
        simulate(d / "pred.zarr", tmp_path / "old", ra=RA, dec=DEC, radius_deg=1.0,
                 n_pointings=2, ideal=True, seed=5, dither_arcsec=5.0, traces=False)
    e = read_exposure(list_exposures(tmp_path / "old")[0])
    assert not e.traced and e.attrs["traces"] is False and e.contaminated is None
    assert e.extraction_resolution("GV-02") is None
    x, y = e.positions()
    np.testing.assert_array_equal(x, e.x) and np.testing.assert_array_equal(y, e.y)
    with Client(dask_scheduler_address) as client:
        res = build_flat(tmp_path / "old", d / "pred.zarr", client,
                         FlatSettings(star_scale="known", max_iter=0))
    flats, *_ = read_truth(tmp_path / "old")
    assert res.provenance["n_exposures_traced"] == 0
    for k in DEFAULT_DETECTORS:
        np.testing.assert_allclose(res.solutions[k].flat, flats[k], atol=2e-6)


def test_fields_that_give_nothing_exit_1(field, tmp_path):
    """No star on any detector (simulate-exposures), no exposure or no match (build-flat):
    said, exit status 1, and the simulation writes nothing."""
    from csstflux.cli.main import cli

    d, _ = field
    with pytest.raises(EmptyResultError, match="can land on GI-30"):
        simulate(d / "pred.zarr", tmp_path / "none", ra=RA, dec=DEC, radius_deg=1.0,
                 detectors=("GI-30",), throughput_dir=None)
    assert not (tmp_path / "none").exists()
    with pytest.raises(EmptyResultError, match="no star of the predictions store"):
        simulate(d / "pred.zarr", tmp_path / "none", ra=RA + 90, dec=DEC, radius_deg=0.1)
    res = CliRunner().invoke(cli, [
        "simulate-exposures", "--predictions", str(d / "pred.zarr"), "--out",
        str(tmp_path / "none"), "--ra", str(RA), "--dec", str(DEC), "--detectors", "GI-30"])
    assert res.exit_code == 1 and "GI-30" in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, [
        "build-flat", "--exposures", str(tmp_path / "empty"), "--predictions",
        str(d / "pred.zarr"), "--out", str(tmp_path / "cube"), "--scheduler", "tcp://x:1"])
    assert res.exit_code == 1 and "no exposure-*.zarr" in res.output


def test_no_source_matched_exits_1(field, dask_scheduler_address, tmp_path):
    """Exposures of one field against a store of stars elsewhere: nothing matched, exit 1."""
    from csstflux.cli.main import cli

    d, _ = field
    rng = np.random.default_rng(9)
    ra, dec = _stars(rng, n=5)
    _store(tmp_path / "far.zarr", ra + 3.0, dec, rng)
    res = CliRunner().invoke(cli, [
        "build-flat", "--exposures", str(d / "exp"), "--predictions",
        str(tmp_path / "far.zarr"), "--out", str(tmp_path / "cube"), "--scheduler",
        dask_scheduler_address, "--max-iter", "0"])
    assert res.exit_code == 1 and "no exposure source matched" in res.output
