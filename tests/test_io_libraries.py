"""Readers of the real MILES, CK04 and Pickles libraries in ../shared/data, checked against
independent readers (astropy, fitsio, numpy.loadtxt) and published numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from csstflux.airvac import air_to_vacuum, vacuum_to_air
from csstflux.errors import GridMismatchError, InputFormatError, TruncatedFileError
from csstflux.io.formats import ck04, miles, pickles

MILES_FILE = "MILES_res2.50_star_m0001V.fits"


# ---------------------------------------------------------------------------------- MILES
@pytest.fixture(scope="module")
def miles_dir(shared_data: Path) -> Path:
    return shared_data / "miles"


@pytest.fixture(scope="module")
def miles_lib(miles_dir: Path):
    return miles.read(miles_dir)


def test_miles_single_star_matches_header_and_astropy(miles_dir: Path) -> None:
    path = miles_dir / MILES_FILE
    spec = miles.read(path)
    hdr = fits.getheader(path)
    assert (hdr["CRVAL1"], hdr["CDELT1"], hdr["NAXIS1"]) == (3540.5, 0.9, 4300)
    assert spec.n_pix == 4300
    # first pixel: the air wavelength 3540.5 Å converted to vacuum
    assert spec.wavelength[0] == pytest.approx(float(air_to_vacuum(3540.5)), abs=1e-9)
    np.testing.assert_allclose(vacuum_to_air(spec.wavelength), 3540.5 + 0.9 * np.arange(4300),
                               atol=1e-7)
    np.testing.assert_array_equal(spec.flux, fits.getdata(path).astype(np.float64))
    assert spec.resolution.fwhm == 2.5
    assert spec.meta["wavelength_medium_original"] == "air"
    assert spec.meta["flux_unit"] == "relative"
    assert np.all(np.isnan(spec.error)) and not spec.mask.any()


def test_miles_library_order_grid_and_parameters(miles_lib, miles_dir: Path) -> None:
    n_files = len(list(miles_dir.glob("MILES_res2.50_star_m*.fits")))
    assert miles_lib.n_star == n_files == 787
    ids = miles_lib.extra["miles_id"]
    assert np.all(np.diff(ids) > 0) and miles_lib.names[0] == "m0001"
    assert miles_lib.wavelength.shape == (4300,)
    i = 0  # m0001 = HD224930: 5305 K, 4.49, -0.75 in paramsMILES_v9.1.txt
    assert (miles_lib.teff[i], miles_lib.logg[i], miles_lib.feh[i]) == (5305.0, 4.49, -0.75)
    assert miles_lib.extra["star"][i] == "HD224930"
    j = int(np.flatnonzero(miles_lib.names == "m0838")[0])  # G156-031: [Fe/H] '--'
    assert miles_lib.teff[j] == 2748.0 and np.isnan(miles_lib.feh[j])
    np.testing.assert_array_equal(miles_lib.flux[5], miles.read(miles_dir / Path(
        f"MILES_res2.50_star_m{ids[5]:04d}V.fits")).flux)


def test_miles_params_db_agrees_with_full_table(miles_lib, miles_dir: Path) -> None:
    db = miles.read_params(miles_dir / "MILES_params.db")
    for k, star_id in enumerate(miles_lib.extra["miles_id"][:300]):
        if int(star_id) == 221:   # listed as '022.' in both files: no parameters assigned
            assert 221 not in db and np.isnan(miles_lib.teff[k])
            continue
        rec = db[int(star_id)]
        for key in ("teff", "logg", "feh"):
            a, b = rec[key], getattr(miles_lib, key)[k]
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def test_miles_grid_mismatch_and_bad_files(miles_dir: Path, tmp_path: Path) -> None:
    for n in (1, 2):
        shutil.copy(miles_dir / f"MILES_res2.50_star_m000{n}V.fits", tmp_path)
    with fits.open(tmp_path / "MILES_res2.50_star_m0002V.fits", mode="update") as h:
        h[0].header["CRVAL1"] = 3541.0
    with pytest.raises(GridMismatchError, match="m0002V"):
        miles.read(tmp_path)
    raw = (miles_dir / MILES_FILE).read_bytes()
    trunc = tmp_path / "MILES_res2.50_star_m0009V.fits"
    trunc.write_bytes(raw[: len(raw) // 2])
    assert miles.identify(trunc)
    with pytest.raises(TruncatedFileError):
        miles.read(trunc)
    empty = tmp_path / "MILES_res2.50_star_m0010V.fits"
    empty.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty"):
        miles.read(empty)


def test_miles_identify(miles_dir: Path, shared_data: Path) -> None:
    assert miles.identify(miles_dir) and miles.identify(miles_dir / MILES_FILE)
    assert not miles.identify(shared_data / "ck04models" / "catalog.fits")
    assert not miles.identify(shared_data / "pickles" / "g2v.sed")
    assert not miles.identify(shared_data / "pickles")


# ------------------------------------------------------------------------------------ CK04
@pytest.fixture(scope="module")
def ck_dir(shared_data: Path) -> Path:
    return shared_data / "ck04models"


@pytest.fixture(scope="module")
def ck_lib(ck_dir: Path):
    return ck04.read(ck_dir)


def test_ck04_model_matches_astropy_column(ck_lib, ck_dir: Path) -> None:
    path = ck_dir / "ckp00" / "ckp00_5750.fits"
    with fits.open(path) as h:
        wave = h[1].data["WAVELENGTH"].astype(np.float64)
        flux = h[1].data["g45"].astype(np.float64)
    i = int(np.flatnonzero(ck_lib.names == "ckp00_5750_g45")[0])
    np.testing.assert_array_equal(ck_lib.flux[i], flux)
    np.testing.assert_array_equal(ck_lib.wavelength, wave)   # vacuum as tabulated
    assert (ck_lib.teff[i], ck_lib.logg[i], ck_lib.feh[i]) == (5750.0, 4.5, 0.0)
    assert wave.size == 1221 and ck_lib.resolution.resolving_power is None
    assert ck_lib.resolution.fwhm is None


def test_ck04_counts_models_and_skips_zero_columns(ck_lib, ck_dir: Path) -> None:
    expected = 0
    for f in ck_dir.glob("ck[mp]??/ck*.fits"):
        data = fitsio.read(f, ext=1)
        expected += sum(np.any(data[c] != 0) for c in data.dtype.names if c != "WAVELENGTH")
    assert ck_lib.n_star == expected == 3808
    # AA_README: ckp00_8000 has no log g 0.0 / 0.5 models, its g10 exists
    assert fitsio.read(ck_dir / "ckp00" / "ckp00_8000.fits", ext=1)["g00"].max() == 0
    assert "ckp00_8000_g00" not in ck_lib.names and "ckp00_8000_g10" in ck_lib.names
    assert len(set(ck_lib.names)) == ck_lib.n_star


def test_ck04_selection_reads_only_needed_files(ck_lib, ck_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_load = ck04.fd.load_fits_bytes

    def spy(path):
        opened.append(Path(path).name)
        return real_load(path)

    monkeypatch.setattr(ck04.fd, "load_fits_bytes", spy)
    sub = ck04.read(ck_dir, teff_range=(5500, 6000), logg_range=(4.0, 4.5), feh_range=(0, 0))
    assert sorted(opened) == ["catalog.fits", "ckp00_5500.fits", "ckp00_5750.fits",
                              "ckp00_6000.fits"]
    assert sub.n_star == 6 and set(sub.logg) == {4.0, 4.5}
    i = int(np.flatnonzero(sub.names == "ckp00_5750_g45")[0])
    j = int(np.flatnonzero(ck_lib.names == "ckp00_5750_g45")[0])
    np.testing.assert_array_equal(sub.flux[i], ck_lib.flux[j])
    with pytest.raises(InputFormatError, match="no CK04 models"):
        ck04.read(ck_dir, teff_range=(100, 200))


def test_ck04_bad_inputs(ck_dir: Path, tmp_path: Path) -> None:
    shutil.copy(ck_dir / "catalog.fits", tmp_path)
    (tmp_path / "ckp00").mkdir()
    raw = (ck_dir / "ckp00" / "ckp00_5750.fits").read_bytes()
    (tmp_path / "ckp00" / "ckp00_5750.fits").write_bytes(raw[:-5000])
    assert ck04.identify(tmp_path)
    with pytest.raises(TruncatedFileError):
        ck04.read(tmp_path, teff_range=(5750, 5750), feh_range=(0, 0))
    with pytest.raises(InputFormatError, match="missing"):
        ck04.read(tmp_path, teff_range=(6000, 6000), feh_range=(0, 0))
    assert not ck04.identify(ck_dir / "catalog.fits")
    assert not ck04.identify(ck_dir.parent / "miles")


# --------------------------------------------------------------------------------- Pickles
@pytest.fixture(scope="module")
def pk_dir(shared_data: Path) -> Path:
    return shared_data / "pickles"


@pytest.fixture(scope="module")
def mamajek(shared_data: Path) -> Path:
    return shared_data / "calibration" / "EEM_dwarf_UBVIJHK_colors_Teff.txt"


def _mamajek_teff(path: Path, spt: str) -> float:
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.split()[:1] == [spt]:
            return float(line.split()[1])
    raise AssertionError(spt)


def test_pickles_library(pk_dir: Path, mamajek: Path) -> None:
    lib = pickles.read(pk_dir, table_path=mamajek)
    listed = [Path(ln.split()[0]).stem for ln in
              (pk_dir / "PICKLES_MOD.list").read_text().splitlines() if ln.strip()]
    assert lib.n_star == 131 and list(lib.names) == listed
    assert {"g2v", "m2p5v", "rk0iii", "wg5v", "b57v"} <= set(lib.names)
    # file grid: 5 Å steps from 1145 Å, in air; vacuum below 2000 Å is unchanged
    np.testing.assert_allclose(vacuum_to_air(lib.wavelength), 1145.0 + 5.0 * np.arange(4773),
                               atol=1e-6)
    assert lib.wavelength[0] == 1145.0
    g2v = int(np.flatnonzero(lib.names == "g2v")[0])
    assert lib.teff[g2v] == _mamajek_teff(mamajek, "G2V") == 5770.0
    assert (lib.logg[g2v], lib.feh[g2v]) == (4.4, 0.0)
    data = np.loadtxt(pk_dir / "g2v.sed")
    np.testing.assert_array_equal(lib.flux[g2v], data[:, 1])
    wg5v = int(np.flatnonzero(lib.names == "wg5v")[0])
    assert lib.feh[wg5v] == -0.5 and lib.teff[wg5v] == _mamajek_teff(mamajek, "G5V")
    assert np.all(np.isfinite(lib.teff)) and lib.meta["flux_unit"] == "relative"


def test_pickles_parameter_rules(mamajek: Path, tmp_path: Path) -> None:
    assert pickles.parse_type("b57v") == ("", 16.0, "v")
    assert pickles.parse_type("m2p5v") == ("", 62.5, "v")
    assert pickles.parse_type("m10iii") == ("", 70.0, "iii")
    assert pickles.parse_type("rk0iii") == ("r", 50.0, "iii")
    par = pickles.pickles_parameters(["k0iii", "g0i", "k0v", "rk0iii"], mamajek)
    # Schmidt-Kaler (1982) via CDBS AA_README Table 2: K0 III 4750 K, G0 I 5550 K
    np.testing.assert_array_equal(par["teff"], [4750.0, 5550.0,
                                                _mamajek_teff(mamajek, "K0V"), 4750.0])
    np.testing.assert_array_equal(par["logg"], [2.5, 1.0, 4.4, 2.5])
    np.testing.assert_array_equal(par["feh"], [0.0, 0.0, 0.0, 0.3])
    assert np.isnan(pickles.pickles_parameters(["g2v"])["teff"][0])   # no table: NaN
    csv = tmp_path / "p.csv"
    csv.write_text("name,teff,logg,feh\nG2V,5800,4.44,0.02\n")
    own = pickles.pickles_parameters(["g2v"], mamajek, params_csv=csv)
    assert (own["teff"][0], own["logg"][0], own["feh"][0]) == (5800.0, 4.44, 0.02)


def test_pickles_single_file_and_bad_inputs(pk_dir: Path, tmp_path: Path) -> None:
    spec = pickles.read(pk_dir / "a0v.sed")
    np.testing.assert_array_equal(spec.flux, np.loadtxt(pk_dir / "a0v.sed")[:, 1])
    assert spec.meta["name"] == "a0v" and pickles.identify(pk_dir / "a0v.sed")
    empty = tmp_path / "g2v.sed"
    empty.write_text("")
    with pytest.raises(InputFormatError, match="empty"):
        pickles.read(empty)
    bad = tmp_path / "k0v.sed"
    bad.write_text("5000 1.0\n4995 1.1\n5005 1.2\n")
    with pytest.raises(InputFormatError, match="strictly increasing"):
        pickles.read(bad)
    text = tmp_path / "m0v.sed"
    text.write_text("wavelength flux\nabc def\n")
    assert not pickles.identify(text)
    with pytest.raises(InputFormatError):
        pickles.read(text)
    assert not pickles.identify(pk_dir / "README")
    assert pickles.identify(pk_dir)


def test_registry_identifies_real_libraries(shared_data: Path) -> None:
    from csstflux.io import identify

    expected = {"miles": "miles", "miles/" + MILES_FILE: "miles", "ck04models": "ck04",
                "pickles": "pickles", "pickles/g2v.sed": "pickles"}
    assert {k: identify(shared_data / k) for k in expected} == expected
