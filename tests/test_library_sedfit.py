"""Teff from a star's own SED (``csstflux.library.sedfit``) and the training sets that use it."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.grids import OUTPUT_GRID
from csstflux.io import read
from csstflux.io.stores.trainset import SPLITS, TrainStore
from csstflux.library.sed_grid import load_sed_grid
from csstflux.library.sedfit import fit_teff
from csstflux.library.sets import SetConfig


def test_recovers_off_node_temperatures_at_any_scale():
    grid = load_sed_grid()
    teff = np.array([5123.0, 6377.0, 7311.0, 8411.0, 9600.0])
    sed, inside = grid(teff, 4.2, -0.3)
    assert inside.all()
    fit = fit_teff(sed * np.array([[0.5], [2.0], [3.0], [1e-3], [7.0]]), None, 4.2, -0.3)
    # the grid interpolates linearly between nodes 250 K apart; the parabola on a 0.3 %
    # Teff grid recovers the point to well under one trial step
    np.testing.assert_allclose(fit.teff, teff, rtol=2e-3)
    assert np.all(fit.rms < 5e-3)


def test_noise_masked_pixels_and_wavelengths_outside_the_window_do_not_matter():
    grid = load_sed_grid()
    sed, _ = grid(np.array([6000.0, 6000.0]), 4.4, 0.0)
    rng = np.random.default_rng(1)
    w = OUTPUT_GRID.wavelength
    noisy = sed * (1 + 0.01 * rng.standard_normal(sed.shape))
    mask = np.zeros(sed.shape, bool)
    mask[0, 200:230] = True
    noisy[0, 200:230] = 50.0                                 # garbage, masked
    noisy[1, w < 3800] *= 0.5                                # outside the window
    noisy[1, w > 9500] = -1.0                                # non-positive: left out
    fit = fit_teff(noisy, mask, 4.4, 0.0)
    np.testing.assert_allclose(fit.teff, 6000.0, rtol=5e-3)
    # a star's colour moves the answer: the same SED tilted redder fits cooler
    tilted = sed[:1] * (w / 5556.0) ** 0.5
    assert fit_teff(tilted, None, 4.4, 0.0).teff[0] < 5800.0


def test_nothing_to_compare_gives_nan():
    sed = np.full((1, OUTPUT_GRID.n), np.nan)
    fit = fit_teff(sed, None, 4.4, 0.0)
    assert np.isnan(fit.teff[0]) and fit.n_pixels[0] == 0


def test_set_options_are_checked():
    with pytest.raises(ValueError, match="emulated inputs"):
        SetConfig(kind="miles", path="x", teff_from_sed=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SetConfig(kind="pickles", path="x", validation_fraction=1.5)
    SetConfig(kind="ngsl", path="x", teff_from_sed=True, validation_fraction=1.0)


def write_ngsl_from_ck04(root, shared_data, stars):
    """NGSL-format files whose fluxes are CK04 models; headers claim other temperatures."""
    root.mkdir()
    wave = np.linspace(1670.0, 10250.0, 8000)
    for i, (teff, claimed) in enumerate(stars):
        lib = read(shared_data / "ck04models", format="ck04", teff_range=(teff, teff),
                   logg_range=(4.5, 4.5), feh_range=(0.0, 0.0))
        flux = 1e-13 * np.interp(wave, lib.wavelength, lib.flux[0])
        t = Table({"WAVELENGTH": wave, "FLUX": flux, "STAT_ERR": 0.01 * flux,
                   "SYS_ERR": 0.02 * flux})
        prim = fits.PrimaryHDU()
        prim.header.update({"TELESCOP": "HST", "INSTRUME": "STIS", "TARGNAME": f"HD{i:05d}",
                            "TEFF": claimed, "LOG_G": 4.5, "LOG_Z": 0.0, "EBMV": 0.0})
        fits.HDUList([prim, fits.table_to_hdu(t)]).writeto(root / f"h_stis_ngsl_hd{i:05d}_v2.fits")


def test_trainset_emulates_at_the_sed_temperature_and_can_hold_a_set_out(shared_data,
                                                                         tmp_path):
    # true Teff, catalogue Teff (wrong by hundreds of K, one of them outside 5000-9750 K)
    stars = [(5750.0, 6150.0), (6500.0, 6100.0), (7000.0, 7400.0), (8000.0, 7600.0),
             (6250.0, 6250.0), (5500.0, 4900.0)]
    write_ngsl_from_ck04(tmp_path / "ngsl", shared_data, stars)
    cfg = tmp_path / "t.toml"
    cfg.write_text(f"""[trainset]
out = "{tmp_path / 'ts.zarr'}"
[[trainset.sets]]
kind = "ngsl"
path = "{tmp_path / 'ngsl'}"
vet = false
teff_from_sed = true
split = [1, 1]
validation_fraction = 1.0
""")
    res = CliRunner().invoke(cli, ["build-trainset", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    counts = summary["sets"][0]["split_counts"]
    assert counts["train"] == 0 and counts["test"] + counts["validation"] == len(stars)
    store = TrainStore(tmp_path / "ts.zarr")
    data = store.load()
    order = np.argsort(data.name)
    # the star catalogued at 4900 K is kept: its SED says 5500 K
    np.testing.assert_allclose(data.teff[order], [s[0] for s in stars], rtol=0.01)
    assert set(data.split) <= {SPLITS["test"], SPLITS["validation"]}
    prov = store.attrs["sets"][0]["teff_from_sed"]
    assert prov["n_fitted"] == len(stars)
    assert sorted(prov["catalogue_teff"].values()) == sorted(s[1] for s in stars)
