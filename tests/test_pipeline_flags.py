"""Every flag the predict job sets for a known cause, and the counts it reports.

- input files (written in the real formats): a broken red arm and a wavelength row 5 % off
  its WCS are BAD_INPUT (not predicted, failures name the ratio and the mismatch), a red arm
  at S/N 8.8 is LOW_SNR_ARM (predicted), a row 0.05 pixel off is fine;
- outputs (:func:`run_chunk` with a fake model): non-positive SED pixels become NaN and are
  counted; NEGATIVE_SED only inside GU/GV/GI; NONFINITE_OUTPUT only for a non-finite number;
- catalogue rows, judged while planning: bad RA/Dec (NaN, blank, -9999, RA 400, Dec -95) are
  BAD_COORDS and predicted, stored after the indexed stars; repeated obsids keep their first
  row (DUPLICATE) and list the others; names that are not UTF-8 (CSV, FITS, a scanned root)
  are kept;
- the whole command on the session cluster: flag counts in its JSON, in the store and in the
  human summary equal the planted numbers and the store's flags; catalogue errors stop it
  before any cluster starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner
from lamost_files import COEFF0, COEFF1, N_PIX, WAVE, write

from csstflux.cli.main import cli
from csstflux.flags import Flag
from csstflux.grids import BANDS, OUTPUT_GRID
from csstflux.io.stores.predictions import (
    StarTable,
    create_store,
    finalize,
    open_predictions,
    read_attrs,
    read_failures,
)
from csstflux.library.domain import DomainModel, load_domain_model
from csstflux.pipeline.predict import PredictOptions, build_plan, read_inputs
from csstflux.pipeline.tasks import _prepare_batch, count_flags, run_chunk

NON_UTF8 = b"spec-\xff\xfe-x_sp01-001.fits"
#: Catalogue RA/Dec that have no sky position (LASP's -9999 and a blank included).
BAD_COORDS = [("nan", 5.0), ("", 5.0), (-9999, 5.0), (400, 5.0), (10.0, -95)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("spectra")
    k = np.arange(N_PIX)
    wcs = {"COEFF0": COEFF0, "COEFF1": COEFF1}
    paths = {
        "good": write(d / "spec-good.fits.gz", seed=1),
        "good_coadd": write(d / "spec-good-coadd.fits.gz", layout="coadd", seed=2),
        "wcs_fine": write(d / "spec-wcs-fine.fits", wave=10 ** (COEFF0 + COEFF1 * (k + 0.05)),
                          header=wcs, seed=3),
        "low_red": write(d / "spec-low-red.fits.gz", layout="coadd", snr=(32.0, 8.8), seed=4),
        "broken_arm": write(d / "spec-broken-arm.fits.gz", layout="coadd", red_scale=0.2,
                            seed=5),
        "wcs_off": write(d / "spec-wcs-off.fits.gz", wave=WAVE * 1.05, header=wcs, seed=6),
        "non_utf8": write(os.fsencode(d) + b"/" + NON_UTF8, seed=7),
    }
    return {k: str(v) for k, v in paths.items()}


# --- one chunk, a fake model -------------------------------------------------------------

def _table(paths: list[str]) -> StarTable:
    n = len(paths)
    f4 = np.full(n, 50.0, np.float32)
    return StarTable(obsid=np.arange(n, dtype=np.int64) + 1, ra=np.full(n, 10.0),
                     dec=np.full(n, 20.0), snr_g=f4, teff=f4, logg=f4, feh=f4, rv=f4,
                     class_=np.full(n, "STAR"), healpix=np.zeros(n, np.int64),
                     source_file=np.asarray(paths, dtype=str))


def test_run_chunk_flags_inputs_and_outputs(files: dict[str, str], tmp_path: Path) -> None:
    order = ["good", "good_coadd", "wcs_fine", "good", "low_red", "non_utf8", "broken_arm",
             "wcs_off"]
    paths = [files[k] for k in order]
    store = create_store(tmp_path / "p.zarr", _table(paths), chunk_stars=len(paths))
    w = OUTPUT_GRID.wavelength
    below_gu = np.flatnonzero(w < BANDS["GU"].lo)[:3]        # 2500-2515 Å, outside every band
    in_gv = np.flatnonzero(BANDS["GV"].mask(w))[10]
    calls: list[int] = []

    def fake_model(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(flux))
        sed = np.ones((len(flux), OUTPUT_GRID.n), np.float32)
        sed_err = np.full_like(sed, 0.02)
        sed[0, below_gu] = -0.003        # the issue: slightly negative, outside the bands
        sed[1, in_gv] = 0.0              # inside GV
        sed_err[2, 100] = np.inf         # a non-finite number
        return sed, sed_err

    base = np.zeros(len(paths), np.uint32)
    base[3] = Flag.BAD_COORDS
    summary = run_chunk(str(store), 0, 0, len(paths), paths, np.zeros(len(paths)), base,
                        fake_model, batch_size=64, catalog_teff=np.full(len(paths), 6000.0),
                        domain=_never_flags())
    assert calls == [6]                                   # the two BAD_INPUT files not predicted
    finalize(store)
    ds = open_predictions(store)
    flags = [Flag(int(f)) for f in ds.flags.values]
    assert flags == [Flag(0), Flag.NEGATIVE_SED, Flag.NONFINITE_OUTPUT, Flag.BAD_COORDS,
                     Flag.LOW_SNR_ARM, Flag(0), Flag.BAD_INPUT, Flag.BAD_INPUT]
    np.testing.assert_array_equal(ds.n_masked_sed.values, [3, 1, 0, 0, 0, 0, 0, 0])
    sed = ds.sed.values
    assert np.isnan(sed[0, below_gu]).all() and np.isnan(ds.sed_err.values[0, below_gu]).all()
    assert np.isfinite(np.delete(sed[0], below_gu)).all()
    assert np.isnan(sed[1, in_gv]) and np.isinf(ds.sed_err.values[2, 100])
    assert np.isnan(sed[6:]).all()
    (arm_file, arm_msg), (wcs_file, wcs_msg) = summary["failures"]
    assert arm_file == files["broken_arm"] and arm_msg.startswith(files["broken_arm"] + ": ")
    assert "broken arm" in arm_msg and "allowed 0.333-3" in arm_msg
    assert "red/blue 0.19" in arm_msg    # 0.2 made, times the continuum slope 0.974
    assert wcs_file == files["wcs_off"]
    assert "header WCS (COEFF0/COEFF1) by up to 212 pixels (allowed 0.1)" in wcs_msg
    assert summary["n_predicted"] == 6 and summary["n_nonfinite"] == 1
    assert summary["n_masked_sed"] == 4
    expected = dict.fromkeys(count_flags(np.zeros(0, np.uint32)), 0)
    expected.update(NEGATIVE_SED=1, NONFINITE_OUTPUT=1, BAD_COORDS=1, LOW_SNR_ARM=1,
                    BAD_INPUT=2)
    assert summary["flag_counts"] == expected == count_flags(ds.flags.values)


def _never_flags() -> DomainModel:
    """The shipped domain model with thresholds that flag nothing (these spectra are toys)."""
    return replace(load_domain_model(), chi2_snr=np.array([1.0]),
                   chi2_threshold=np.array([np.inf]), color_z_threshold=np.inf)


def test_run_chunk_stores_domain_estimates_and_flags(files: dict[str, str],
                                                     tmp_path: Path) -> None:
    """What the spectrum says of itself reaches the store: estimates equal the domain model
    run on the prepared batch; OUT_OF_DISTRIBUTION where it says so; OUTSIDE_DOMAIN from the
    estimate only where the catalogue has no Teff (a catalogue Teff inside the domain wins)."""
    order = ["good", "good_coadd", "wcs_fine", "low_red", "broken_arm"]
    paths = [files[k] for k in order]
    n = len(paths)
    store = create_store(tmp_path / "d.zarr", _table(paths), chunk_stars=n)
    model = load_domain_model()
    batch = _prepare_batch(paths, np.zeros(n), 0)
    est = model.estimate(batch.flux, batch.err, color=batch.color)
    outside, ood = model.flags(est)
    # thresholds placed so that every predicted star is flagged by chi2 and by its Teff (the
    # toy spectra sit anywhere): the test is about where the flags and numbers go
    cut = float(np.sort(est.chi2)[0]) * 0.999
    model = replace(model, chi2_snr=np.array([1.0]), chi2_threshold=np.array([cut]),
                    color_z_threshold=np.inf, teff_margin=1e6)
    est = model.estimate(batch.flux, batch.err, color=batch.color)
    outside, ood = model.flags(est)
    assert ood.all() and outside.all()
    teff = np.array([np.nan, 6000.0, np.nan, 6000.0, np.nan])

    def fake_model(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.ones((len(flux), OUTPUT_GRID.n), np.float32),
                np.full((len(flux), OUTPUT_GRID.n), 0.01, np.float32))

    run_chunk(str(store), 0, 0, n, paths, np.zeros(n), np.zeros(n, np.uint32), fake_model,
              catalog_teff=teff, domain=model)
    finalize(store)
    ds = open_predictions(store, dask=False)
    rows = batch.rows
    assert list(rows) == [0, 1, 2, 3]                     # broken_arm is not predicted
    np.testing.assert_allclose(ds.teff_est.values[rows], est.teff, rtol=1e-6)
    np.testing.assert_allclose(ds.novelty_chi2.values[rows], est.chi2, rtol=1e-6)
    np.testing.assert_allclose(ds.color_z.values[rows], est.color_z, rtol=1e-5)
    assert np.isnan(ds.teff_est.values[4]) and np.isnan(ds.logg_est_err.values[4])
    got = ds.flags.values
    assert all(got[i] & Flag.OUT_OF_DISTRIBUTION for i in rows)
    assert [bool(got[i] & Flag.OUTSIDE_DOMAIN) for i in rows] == [True, False, True, False]
    assert ds.teff_est.attrs["units"] == "K"


# --- planning: catalogue rows ----------------------------------------------------------------

def _catalog_rows(files: dict[str, str]) -> list[dict[str, object]]:
    """Planted: 5 rows without a position; obsid 300 three times and 301 twice (3 rows
    dropped, 2 kept rows DUPLICATE); a file whose name is not UTF-8; the three bad files."""
    rows: list[dict[str, object]] = []

    def add(obsid: int, key: str, ra: object = 10.0, dec: object = 20.0) -> None:
        rows.append({"obsid": obsid, "ra": ra, "dec": dec, "snrg": 50.0, "teff": 6000.0,
                     "logg": 4.0, "feh": 0.0, "rv": 0.0, "class": "STAR",
                     "path": files[key]})

    for i, key in enumerate(["good", "good_coadd", "wcs_fine", "low_red", "broken_arm",
                             "wcs_off", "non_utf8"]):
        add(100 + i, key, 10.0 + 0.1 * i, 20.0)
    for i, (ra, dec) in enumerate(BAD_COORDS):
        add(200 + i, "good", ra, dec)
    add(300, "good", 11.0, 21.0)
    add(301, "good_coadd", 11.5, 21.0)
    add(300, "good_coadd", 11.0, 21.0)
    add(301, "good", 11.5, 21.0)
    add(300, "wcs_off", 11.0, 21.0)
    return rows


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    names = list(rows[0])
    lines = [",".join(names).encode()]
    lines += [b",".join(os.fsencode(str(r[n])) for n in names) for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _write_fits(path: Path, rows: list[dict[str, object]]) -> Path:
    def num(v: object) -> float:
        return float("nan") if v in ("", "nan") else float(v)  # type: ignore[arg-type]

    cols = {n: [num(r[n]) if n in ("ra", "dec") else r[n] for r in rows] for n in rows[0]}
    cols["path"] = np.array([os.fsencode(str(p)) for p in cols["path"]], dtype="S300")
    Table(cols).write(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "fits"])
def test_plan_judges_catalogue_rows(files: dict[str, str], tmp_path: Path, kind: str) -> None:
    rows = _catalog_rows(files)
    cat = (_write_csv if kind == "csv" else _write_fits)(tmp_path / f"cat.{kind}", rows)
    opts = PredictOptions(out=str(tmp_path / "p.zarr"), model="m", catalog=str(cat))
    inputs = read_inputs(opts)
    plan = build_plan(opts, "sha", None, inputs)
    stars = plan.stars
    assert plan.n_stars == len(rows) - 3 and len(set(stars.obsid.tolist())) == plan.n_stars
    bad = (plan.flags & Flag.BAD_COORDS) != 0
    assert bad.sum() == len(BAD_COORDS) and bad[-len(BAD_COORDS):].all()   # after the others
    assert stars.obsid[bad].tolist() == [200, 201, 202, 203, 204]
    assert (stars.healpix[bad] == -1).all() and np.isnan(stars.ra[bad]).all()
    dup = (plan.flags & Flag.DUPLICATE) != 0
    assert sorted(stars.obsid[dup].tolist()) == [300, 301]
    kept = dict(zip(stars.obsid.tolist(), stars.source_file.tolist(), strict=True))
    assert kept[300] == files["good"] and kept[301] == files["good_coadd"]   # first rows
    assert [f for f, _ in plan.dropped] == [files["good_coadd"], files["good"], files["wcs_off"]]
    assert plan.dropped[0][1].startswith("duplicate obsid 300: catalogue row 15 dropped, row 13")
    # the name that is not UTF-8 is kept byte for byte and still opens its file
    name = kept[106]
    assert os.fsencode(name).endswith(NON_UTF8) and Path(name).is_file()
    assert build_plan(opts, "sha", None, inputs).input_hash == plan.input_hash


def test_plan_scans_a_root_with_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "release"
    root.mkdir()
    write(root / "spec-1-a_sp01-001.fits.gz", header={"OBSID": 1, "RA": 10.0, "DEC": 20.0})
    write(os.fsencode(root) + b"/" + NON_UTF8, header={"OBSID": 2, "RA": None})
    write(root / "spec-3-c_sp01-003.fits", header={"OBSID": 1, "RA": 10.0, "DEC": 20.0})
    opts = PredictOptions(out=str(tmp_path / "p.zarr"), model="m", root=str(root))
    plan = build_plan(opts, "sha", None)
    assert plan.n_stars == 2 and len(plan.dropped) == 1
    by_obsid = dict(zip(plan.stars.obsid.tolist(), plan.flags.tolist(), strict=True))
    assert by_obsid == {1: Flag.DUPLICATE, 2: Flag.BAD_COORDS}
    assert os.fsencode(plan.stars.source_file[1]).endswith(NON_UTF8)


def test_catalogue_problems_stop_before_any_cluster(files: dict[str, str], model: str,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("a cluster was started before the catalogue was checked")

    monkeypatch.setattr("csstflux.pipeline.cluster.start_cluster", refuse)
    rows = [{k: v for k, v in r.items() if k != "teff"} for r in _catalog_rows(files)]
    # a bad catalogue file fails (1); a selection that leaves nothing is a usage error (2)
    cases = [(_write_csv(tmp_path / "noteff.csv", rows), [], "lacks required columns ['teff']",
              1),
             (_write_csv(tmp_path / "ok.csv", _catalog_rows(files)), ["--min-snr", "1e9"],
              "the selection leaves no star to predict", 2)]
    for catalog, extra, message, code in cases:
        res = CliRunner().invoke(cli, ["predict-catalog", "--catalog", str(catalog), "--model",
                                       model, "--out", str(tmp_path / "p.zarr"), *extra])
        assert res.exit_code == code, res.output
        (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert message in line and str(catalog) in line, line
        assert "Traceback" not in res.output and not (tmp_path / "p.zarr").exists()


# --- the whole command ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from csstflux.model.card import save_model
    from csstflux.model.network import build_uaranet

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(build_uaranet(seed=5), path)
    return str(path)


def test_command_counts_every_planted_flag(files: dict[str, str], model: str, tmp_path: Path,
                                           dask_scheduler_address: str) -> None:
    catalog = _write_csv(tmp_path / "cat.csv", _catalog_rows(files))
    out = tmp_path / "pred.zarr"
    args = ["predict-catalog", "--catalog", str(catalog), "--model", model, "--out", str(out),
            "--chunk-stars", "4", "--batch-size", "8", "--max-failed-fraction", "0.5",
            "--scheduler", dask_scheduler_address]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    counts = summary["flag_counts"]
    planted = {"BAD_COORDS": 5, "DUPLICATE": 2, "BAD_INPUT": 2, "LOW_SNR_ARM": 1,
               "LOW_SNR": 0, "COVERAGE": 0, "UNREADABLE": 0}
    assert {k: counts[k] for k in planted} == planted
    ds = open_predictions(out)
    flags = ds.flags.values
    assert counts == count_flags(flags) == read_attrs(out)["flag_counts"]
    assert summary["n_stars"] == 14 and summary["n_duplicates"] == 3
    assert summary["n_failed"] == 2 and summary["n_predicted"] == 12
    by_obsid = dict(zip(ds.obsid.values.tolist(), flags.tolist(), strict=True))
    assert by_obsid[104] & Flag.BAD_INPUT and by_obsid[105] & Flag.BAD_INPUT
    assert by_obsid[103] & Flag.LOW_SNR_ARM and not by_obsid[103] & Flag.BAD_INPUT
    assert not by_obsid[102] & (Flag.BAD_INPUT | Flag.LOW_SNR_ARM)     # 0.05 pixel: fine
    assert np.isfinite(ds.sed.values[ds.obsid.values == 106]).any()    # the non-UTF-8 name
    assert ds.source_file.values[ds.obsid.values == 106][0].endswith(
        "spec-\\xff\\xfe-x_sp01-001.fits")
    # stars without a position: predicted, last, never in a sky query, found by their flag
    no_pos = (flags & Flag.BAD_COORDS) != 0
    assert no_pos[-5:].all() and (ds.healpix.values[no_pos] == -1).all()
    assert np.isfinite(ds.sed.values[no_pos]).any(axis=1).all()
    cone = open_predictions(out, cone=(10.0, 20.0, 5.0))
    assert not (cone.flags.values & Flag.BAD_COORDS).any() and cone.sizes["star"] == 9
    files_, errors = read_failures(out)
    assert len(files_) == 5 and sum(e.startswith("duplicate obsid") for e in errors) == 3
    assert any("red/blue" in e for e in errors) and any("212 pixels" in e for e in errors)
    # the finished store's rerun prints the same counts for a person
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("stars per flag:"))
    for name, n in counts.items():
        assert (f"{name} {n}" in line) == (n > 0), line
    assert "3 catalogue row(s) dropped as repeated obsids" in res.output
