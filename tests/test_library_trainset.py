"""``csstflux build-trainset`` end to end: real grid and libraries, and BOSZ/NGSL files written
here in their published formats."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
from csstflux.io.stores.trainset import SPLITS, TrainStore

WINDOW = OUTPUT_GRID.window(*SCALING_WINDOW)


def star_flux(wave, teff):
    """Planck shape times a few absorption lines: smooth, positive, with features."""
    x = 1.4388e8 / (wave * teff)
    f = wave**-5 / np.expm1(x)
    for c, depth in ((3934.8, 0.6), (4102.9, 0.4), (4341.7, 0.4), (4862.7, 0.4), (5175.0, 0.2),
                     (5891.6, 0.3), (6564.6, 0.4), (8544.4, 0.3)):
        f *= 1 - depth * np.exp(-0.5 * ((wave - c) / 3.0) ** 2)
    return f / f.max()


def write_bosz_dir(root, params):
    wave = 2300.0 * np.exp(np.arange(int(np.log(10800 / 2300) * 8000)) / 8000.0)
    root.mkdir()
    for teff, logg, feh in params:
        sign = "p" if feh >= 0 else "m"
        name = (f"am{sign}{abs(round(feh * 10)):02d}cp00op00t{teff:.0f}g{round(logg * 10):02d}"
                f"v20modrt0b4000rs.fits")
        flux = star_flux(wave, teff)
        cols = [fits.Column(name=n, format="D", array=a) for n, a in
                (("Wavelength", wave), ("SpecificIntensity", flux), ("Continuum", flux * 1.1))]
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(root / name)


def write_ngsl_dir(root, params):
    wave = np.linspace(1670.0, 10250.0, 8000)
    root.mkdir()
    for i, (teff, logg, feh) in enumerate(params):
        flux = 1e-13 * star_flux(wave, teff)
        t = Table({"WAVELENGTH": wave, "FLUX": flux, "STAT_ERR": 0.01 * flux,
                   "SYS_ERR": 0.02 * flux})
        prim = fits.PrimaryHDU()
        prim.header.update({"TELESCOP": "HST", "INSTRUME": "STIS", "TARGNAME": f"HD{i:05d}",
                            "TEFF": teff, "LOG_G": logg, "LOG_Z": feh, "EBMV": 0.01})
        fits.HDUList([prim, fits.table_to_hdu(t)]).writeto(root / f"h_stis_ngsl_hd{i:05d}_v2.fits")


def check_store(path):
    store = TrainStore(path)
    data = store.load()
    # every target scaled: mean over 5526-5586 Å is 1
    np.testing.assert_allclose(data.targets[:, WINDOW].mean(axis=1), 1.0, rtol=1e-5)
    # no star in two splits
    for subset in np.unique(data.subset):
        rows = data.subset == subset
        by_split = [set(data.name[rows & (data.split == v)]) for v in SPLITS.values()]
        assert not (by_split[0] & by_split[1]) and not (by_split[0] & by_split[2])
        assert not (by_split[1] & by_split[2])
    assert np.all(np.isfinite(data.inputs[~data.input_mask]))
    return store, data


def test_bosz_and_ngsl_paths_end_to_end(tmp_path):
    params = [(5800.0, 4.5, 0.0), (6200.0, 4.0, -0.5), (6500.0, 4.0, 0.0), (7000.0, 4.0, 0.0),
              (7500.0, 4.0, -0.5), (6000.0, 4.5, -0.5), (5500.0, 4.5, 0.0), (8000.0, 4.0, 0.0)]
    write_bosz_dir(tmp_path / "bosz", params)
    write_ngsl_dir(tmp_path / "ngsl", params)
    cfg = tmp_path / "t.toml"
    cfg.write_text(f"""[trainset]
out = "{tmp_path / 'ts.zarr'}"
seed = 3
[[trainset.sets]]
kind = "bosz"
path = "{tmp_path / 'bosz'}"
split = [3, 1]
validation_fraction = 0.0
[[trainset.sets]]
kind = "ngsl"
path = "{tmp_path / 'ngsl'}"
vet = false
""")
    res = CliRunner().invoke(cli, ["build-trainset", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [s["n_rows"] for s in summary["sets"]] == [8, 8]
    assert summary["sets"][0]["split_counts"] == {"train": 6, "test": 2, "validation": 0}
    store, data = check_store(tmp_path / "ts.zarr")
    bosz = data.subset == "bosz"
    # BOSZ inputs are the models' own R=2000 spectra: continuum-normalised, lines present
    assert np.median(data.inputs[bosz]) == pytest.approx(1.0, abs=0.02)
    assert data.inputs[bosz].min() < 0.8
    # BOSZ and NGSL carry the same stars here, so their targets agree where both exist (to the
    # 0.3 % that the readers' nominal resolutions, R=4000 and R=1000, make in the line cores)
    ngsl = data.subset == "ngsl"
    order_b = np.lexsort((data.logg[bosz], data.teff[bosz]))
    order_n = np.lexsort((data.logg[ngsl], data.teff[ngsl]))
    both = ~data.target_mask[bosz][order_b] & ~data.target_mask[ngsl][order_n]
    np.testing.assert_allclose(data.targets[bosz][order_b][both],
                               data.targets[ngsl][order_n][both], rtol=5e-3)
    sets = {s["subset"]: s for s in store.attrs["sets"]}
    assert "emulator" in sets["ngsl"]["stand_in"]
    assert len(sets["bosz"]["files_sha256"]) == 64
    # a second build is refused without --overwrite
    res = CliRunner().invoke(cli, ["build-trainset", "--config", str(cfg)])
    assert res.exit_code == 1 and "exists" in res.output


@pytest.mark.slow
def test_real_grid_miles_pickles(shared_data, tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(f"""[trainset]
out = "{tmp_path / 'ts.zarr'}"
[[trainset.sets]]
kind = "grid"
path = "{shared_data / 'ck04models'}"
n_samples = 300
[[trainset.sets]]
kind = "miles"
path = "{shared_data / 'miles'}"
vet = false
[[trainset.sets]]
kind = "pickles"
path = "{shared_data / 'pickles'}"
params = "{shared_data / 'calibration' / 'EEM_dwarf_UBVIJHK_colors_Teff.txt'}"
vet = false
""")
    res = CliRunner().invoke(cli, ["build-trainset", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    store, data = check_store(tmp_path / "ts.zarr")
    grid = data.subset == "grid"
    assert grid.sum() == 300
    assert np.all((data.teff[grid] >= 5000) & (data.teff[grid] <= 9750))
    assert (data.split[grid] == SPLITS["test"]).sum() == 75  # 3:1
    miles = data.subset == "miles"
    # MILES targets exist only where MILES has flux (3540-7410 Å)
    w = OUTPUT_GRID.wavelength
    assert data.target_mask[miles][:, (w < 3400) | (w > 7600)].all()
    assert not data.target_mask[miles][:, (w > 3700) & (w < 7300)].any()
    assert not data.target_mask[data.subset == "pickles"].any()
    sets = {s["subset"]: s for s in store.attrs["sets"]}
    assert "BOSZ" in sets["grid"]["stand_in"] and "NGSL" in sets["pickles"]["stand_in"]
    assert store.attrs["emulator"]["sha256"]
