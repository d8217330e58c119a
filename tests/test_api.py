"""The notebook API: csstflux.predict and csstflux.anchor equal the Dask commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import csstflux
from csstflux.cli.main import cli
from csstflux.demo.release import build_demo_release
from csstflux.errors import ConfigError
from csstflux.model.card import save_model
from csstflux.model.network import build_uaranet


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, dask_scheduler_address: str):
    rel = build_demo_release(tmp_path_factory.mktemp("rel"), n_stars=40, seed=9)
    model = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(build_uaranet(seed=3), model)
    out = tmp_path_factory.mktemp("out") / "job.zarr"
    res = CliRunner().invoke(cli, ["predict-catalog", "--catalog", str(rel.catalog), "--root",
                                   str(rel.root), "--model", str(model), "--out", str(out),
                                   "--chunk-stars", "16", "--max-failed-fraction", "0.5",
                                   "--scheduler", dask_scheduler_address, "--json"])
    assert res.exit_code == 0, res.output
    return rel, model, out


@pytest.mark.slow
def test_predict_equals_the_job(setup) -> None:
    rel, model, out = setup
    job = csstflux.open_predictions(out).load()
    ds = csstflux.predict(catalog=rel.catalog, root=rel.root, model=model)
    assert set(ds.data_vars) == set(job.data_vars)
    assert ds.sizes == job.sizes
    for name in ("obsid", "flags", "n_masked_sed", "header_mag"):
        np.testing.assert_array_equal(ds[name].values, job[name].values)
    for name in ("sed", "sed_err", "teff_est", "novelty_chi2"):
        np.testing.assert_allclose(ds[name].values, job[name].values, rtol=1e-6, equal_nan=True)
    assert ds.attrs["flag_counts"] == job.attrs["flag_counts"]
    assert ds.attrs["model"]["sha256"] == job.attrs["model"]["sha256"]
    # the backend that ran is recorded (ONNX Runtime on CPU, the graph exported once)
    assert ds.attrs["model_backends"] == job.attrs["model_backends"] == ["onnx"]


@pytest.mark.slow
def test_predict_files_and_errors(setup, tmp_path) -> None:
    rel, model, _ = setup
    good = [p for p in sorted(rel.root.rglob("spec-*.fits.gz"))
            if str(p) not in {q.path for q in rel.broken}][:5]
    ds = csstflux.predict(good, model=model)
    assert ds.sizes["star"] == 5 and np.isfinite(ds["sed"].values).any(axis=1).all()   # an
    # untrained model: some pixels <= 0, masked
    with pytest.raises(ConfigError, match="no such file"):
        csstflux.predict([tmp_path / "nothing.fits"], model=model)
    with pytest.raises(ConfigError):
        csstflux.predict()


@pytest.mark.slow
def test_anchor_dataset_equals_anchor_command(setup, tmp_path) -> None:
    rel, model, out = setup
    import shutil

    store = tmp_path / "copy.zarr"
    shutil.copytree(out, store)
    res = CliRunner().invoke(cli, ["anchor", str(store), "--holdout", "u", "--workers", "1",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_stars"] == 40
    on_disk = csstflux.open_predictions(store).load()
    mem = csstflux.anchor(csstflux.open_predictions(out).load(), holdout=("u",))
    for name in ("ebv", "ebv_err", "scale", "sed_abs", "phot_mag_model"):
        np.testing.assert_allclose(mem[name].values, on_disk[name].values, rtol=1e-5,
                                   equal_nan=True)
    np.testing.assert_array_equal(mem["flags"].values, on_disk["flags"].values)
    assert list(mem["phot_band"].values) == list(on_disk["phot_band"].values)


@pytest.mark.slow
def test_predict_arrays_take_the_file_path(setup) -> None:
    """A spectrum in memory (a Spectrum, or a mapping of arrays) is predicted exactly as the
    file it came from: same SED, same position and obsid; bad input gets a clear error."""
    rel, model, _ = setup
    f = sorted(rel.root.rglob("spec-*.fits*"))[0]
    sp = csstflux.io.read(f)
    from_file = csstflux.predict(f, model=model)
    from_spec = csstflux.predict(sp, model=model)
    from_map = csstflux.predict([{"wavelength": sp.wavelength, "flux": sp.flux,
                                  "error": sp.error, "mask": sp.mask, "ra": sp.meta["ra"],
                                  "dec": sp.meta["dec"], "z": sp.meta["z"], "obsid": 7}],
                                model=model)
    np.testing.assert_array_equal(from_spec.sed.values, from_file.sed.values)
    np.testing.assert_array_equal(from_map.sed.values, from_file.sed.values)
    assert int(from_spec.obsid[0]) == sp.meta["obsid"] and int(from_map.obsid[0]) == 7
    assert float(from_map.ra[0]) == pytest.approx(sp.meta["ra"])
    no_pos = csstflux.predict({"wavelength": sp.wavelength, "flux": sp.flux,
                               "ivar": 1 / sp.error**2}, model=model)
    assert int(no_pos.flags[0]) & csstflux.flags.Flag.BAD_COORDS
    with pytest.raises(ConfigError, match="give ivar or error"):
        csstflux.predict({"wavelength": sp.wavelength, "flux": sp.flux}, model=model)
    with pytest.raises(ConfigError, match="unknown key 'snr'"):
        csstflux.predict({"wavelength": sp.wavelength, "flux": sp.flux, "error": sp.error,
                          "snr": 3}, model=model)


@pytest.mark.slow
def test_load_model_is_the_jobs_predictor(setup) -> None:
    from csstflux.grids import INPUT_GRID, OUTPUT_GRID

    _, model, _ = setup
    pred = csstflux.load_model(model, backend="keras")
    assert pred.backend == "keras" and pred.card.name == "tiny"
    rng = np.random.default_rng(0)
    flux = 1 + 0.01 * rng.standard_normal((3, INPUT_GRID.n))
    sed, err = pred(flux, np.full_like(flux, 0.01))
    assert sed.shape == err.shape == (3, OUTPUT_GRID.n)
    assert np.isfinite(sed).all() and (err > 0).all()
    assert csstflux.load_model().card.name == "uaranet-default"
