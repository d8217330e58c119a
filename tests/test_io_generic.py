"""Generic FITS (linear / log WCS) and ECSV/CSV table readers."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable, Table

from csstflux.airvac import air_to_vacuum
from csstflux.errors import InputFormatError
from csstflux.io.formats import generic_fits, generic_table, pickles


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def write_image(path: Path, flux, header: dict, extra_hdus=()) -> Path:
    prim = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    prim.header.update(header)
    fits.HDUList([prim, *extra_hdus]).writeto(path)
    return path


def test_linear_wcs_medium_and_error_extension(tmp_path: Path, rng) -> None:
    flux = rng.uniform(1, 2, 500).astype(np.float32)
    err = np.full(500, 0.1, np.float32)
    hdr = {"CRVAL1": 4000.0, "CDELT1": 2.0, "CRPIX1": 1.0, "AIRORVAC": "air", "FWHM": 3.0}
    f = write_image(tmp_path / "lin.fits", flux, hdr,
                    [fits.ImageHDU(err, name="ERROR")])
    assert generic_fits.identify(f)
    spec = generic_fits.read(f)
    np.testing.assert_allclose(spec.wavelength, air_to_vacuum(4000.0 + 2.0 * np.arange(500)),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(spec.flux, flux.astype(np.float64))
    np.testing.assert_allclose(spec.error, 0.1, rtol=1e-6)
    assert spec.resolution.fwhm == 3.0 and spec.meta["wavelength_medium_source"] == "AIRORVAC"
    vac = generic_fits.read(f, medium="vacuum")
    np.testing.assert_allclose(vac.wavelength, 4000.0 + 2.0 * np.arange(500))
    # CRPIX1 = 11 shifts the reference pixel; no medium keyword: vacuum by default
    g = write_image(tmp_path / "crpix.fits", flux, {"CRVAL1": 4020.0, "CD1_1": 2.0,
                                                     "CRPIX1": 11.0, "CUNIT1": "Angstrom"})
    s2 = generic_fits.read(g)
    np.testing.assert_allclose(s2.wavelength, 4000.0 + 2.0 * np.arange(500))
    assert s2.meta["wavelength_medium_source"] == "default"


def test_log_wcs_variants_and_ivar(tmp_path: Path, rng) -> None:
    flux = rng.uniform(1, 2, 300)
    ivar = np.full(300, 25.0, np.float32)
    f = write_image(tmp_path / "log10.fits", flux, {"CRVAL1": 3.6, "CDELT1": 1e-4,
                                                     "DC-FLAG": 1},
                    [fits.ImageHDU(ivar, name="IVAR")])
    spec = generic_fits.read(f)
    np.testing.assert_allclose(spec.wavelength, 10 ** (3.6 + 1e-4 * np.arange(300)), rtol=1e-12)
    np.testing.assert_allclose(spec.error, 0.2, rtol=1e-6)
    h = write_image(tmp_path / "heur.fits", flux, {"CRVAL1": 3.6, "CDELT1": 1e-4})
    np.testing.assert_allclose(generic_fits.read(h).wavelength, spec.wavelength)
    w = write_image(tmp_path / "wavelog.fits", flux, {"CRVAL1": 4000.0, "CDELT1": 0.4,
                                                       "CTYPE1": "WAVE-LOG"})
    np.testing.assert_allclose(generic_fits.read(w).wavelength,
                               4000.0 * np.exp(0.4 * np.arange(300) / 4000.0), rtol=1e-12)
    nm = write_image(tmp_path / "nm.fits", flux, {"CRVAL1": 400.0, "CDELT1": 0.1,
                                                   "CUNIT1": "nm"})
    np.testing.assert_allclose(generic_fits.read(nm).wavelength, 4000.0 + np.arange(300))


def test_generic_fits_reads_miles_and_directories(shared_data: Path, tmp_path: Path,
                                                  rng) -> None:
    from csstflux.io.formats import miles

    path = shared_data / "miles" / "MILES_res2.50_star_m0001V.fits"
    assert generic_fits.identify(path)
    spec = generic_fits.read(path, medium="air")
    ref = miles.read(path)
    np.testing.assert_array_equal(spec.flux, ref.flux)
    np.testing.assert_allclose(spec.wavelength, ref.wavelength, atol=1e-9)
    assert spec.resolution.fwhm == 2.5
    hdr = {"CRVAL1": 5000.0, "CDELT1": 1.0, "AIRORVAC": "vac", "FWHM": 2.0}
    for name in ("a", "b"):
        write_image(tmp_path / f"{name}.fits", rng.uniform(1, 2, 50), hdr)
    csv = tmp_path / "p.csv"            # a parameter table in the folder is not a spectrum
    csv.write_text("name,teff,logg,feh\na,5000,4.5,0.0\nb,6000,4.0,-0.5\n")
    assert generic_fits.identify(tmp_path)
    lib = generic_fits.read(tmp_path, params=csv)
    np.testing.assert_array_equal(lib.teff, [5000.0, 6000.0])
    assert lib.wavelength.shape == (50,) and not lib.per_star_grid    # one common grid
    # a file on its own grid: the library keeps one grid per star (no GridMismatchError)
    write_image(tmp_path / "c.fits", rng.uniform(1, 2, 60), hdr | {"CRVAL1": 5001.5})
    with pytest.warns(UserWarning, match="no parameters"):
        lib = generic_fits.read(tmp_path, params=csv)
    assert lib.per_star_grid and lib.wavelength.shape == (3, 60)
    np.testing.assert_array_equal(lib.wavelength[2], 5001.5 + np.arange(60))
    np.testing.assert_array_equal(lib.mask[:2, 50:], True)
    np.testing.assert_array_equal(lib.spectrum(0).flux, generic_fits.read(tmp_path / "a.fits").flux)
    assert lib.spectrum(0).n_pix == 50 and lib.star_resolution is None


def test_generic_fits_bad_inputs(tmp_path: Path, shared_data: Path) -> None:
    two_d = tmp_path / "img.fits"
    fits.PrimaryHDU(np.ones((5, 5))).writeto(two_d)
    assert not generic_fits.identify(two_d)
    with pytest.raises(InputFormatError, match="1-D spectrum"):
        generic_fits.read(two_d)
    dec = write_image(tmp_path / "dec.fits", np.ones(10), {"CRVAL1": 5000.0, "CDELT1": -1.0})
    with pytest.raises(InputFormatError, match="strictly increasing"):
        generic_fits.read(dec)
    nan = write_image(tmp_path / "nan.fits", np.full(10, np.nan), {"CRVAL1": 5000.0,
                                                                   "CDELT1": 1.0})
    with pytest.warns(UserWarning, match="every pixel is masked"):
        assert generic_fits.read(nan).mask.all()
    neg = write_image(tmp_path / "neg.fits", np.ones(10), {"CRVAL1": 5000.0, "CDELT1": 1.0},
                      [fits.ImageHDU(-np.ones(10, np.float32), name="ERR")])
    with pytest.raises(InputFormatError, match="negative flux error"):
        generic_fits.read(neg)
    assert not generic_fits.identify(shared_data / "pickles" / "g2v.sed")
    assert not generic_fits.identify(shared_data / "ck04models" / "catalog.fits")


# ------------------------------------------------------------------------------------ tables
def test_ecsv_with_units_nm_to_angstrom(tmp_path: Path) -> None:
    wave_nm = np.linspace(400.0, 700.0, 31)
    t = QTable({"Wavelength": wave_nm * u.nm,
                "flux": np.linspace(1, 2, 31) * u.erg / u.s / u.cm**2 / u.AA,
                "flux_err": np.full(31, 1e-3) * u.erg / u.s / u.cm**2 / u.nm})
    t.meta["medium"] = "air"
    f = tmp_path / "spec.ecsv"
    t.write(f, format="ascii.ecsv")
    assert generic_table.identify(f)
    spec = generic_table.read(f)
    np.testing.assert_allclose(spec.wavelength, air_to_vacuum(wave_nm * 10.0), atol=1e-9)
    np.testing.assert_allclose(spec.error, 1e-4, rtol=1e-12)     # per nm → per Å
    assert spec.meta["wavelength_medium_source"] == "table meta"
    assert "Angstrom" in spec.meta["flux_unit"]


def test_csv_header_units_and_aliases(tmp_path: Path) -> None:
    f = tmp_path / "spec.csv"
    f.write_text("# a comment\nLambda (um),FLAM,Sigma\n0.40,1.0,0.1\n0.45,1.1,0.1\n"
                 "0.50,1.2,0.0\n")
    assert generic_table.identify(f)
    spec = generic_table.read(f)
    np.testing.assert_allclose(spec.wavelength, [4000.0, 4500.0, 5000.0])
    np.testing.assert_array_equal(spec.flux, [1.0, 1.1, 1.2])
    assert list(spec.mask) == [False, False, True]                # zero error: masked
    g = tmp_path / "b.csv"
    g.write_text("wavelength[nm],flux\n500,1\n600,2\n")
    np.testing.assert_allclose(generic_table.read(g, medium="vacuum").wavelength, [5000, 6000])


def test_table_bad_inputs(tmp_path: Path, shared_data: Path) -> None:
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert not generic_table.identify(empty)
    with pytest.raises(InputFormatError, match="empty"):
        generic_table.read(empty)
    noflux = tmp_path / "n.csv"
    noflux.write_text("wavelength,counts\n1,2\n")
    assert not generic_table.identify(noflux)
    with pytest.raises(InputFormatError, match="wavelength/flux"):
        generic_table.read(noflux)
    dec = tmp_path / "d.csv"
    dec.write_text("wave,flux\n5000,1\n4000,1\n")
    with pytest.raises(InputFormatError, match="strictly increasing"):
        generic_table.read(dec)
    neg = tmp_path / "neg.csv"
    neg.write_text("wave,flux,err\n4000,1,-0.1\n5000,1,0.1\n")
    with pytest.raises(InputFormatError, match="negative"):
        generic_table.read(neg)
    badunit = tmp_path / "hz.csv"
    badunit.write_text("wavelength[Hz],flux\n1,1\n2,1\n")
    with pytest.raises(InputFormatError, match="not a length"):
        generic_table.read(badunit)
    assert not generic_table.identify(shared_data / "pickles" / "g2v.sed")
    assert not pickles.identify(noflux)



def test_header_medium_resolution_and_mask_keywords(tmp_path: Path) -> None:
    lam = 4000.0 + np.arange(100)
    flux = np.ones(100)
    for ctype, medium in (("WAVE", "vacuum"), ("AWAV", "air")):
        f = write_image(tmp_path / f"{ctype}.fits", flux, {"CRVAL1": 4000.0, "CDELT1": 1.0,
                                                          "CTYPE1": ctype, "R": 1800.0})
        spec = generic_fits.read(f)
        assert spec.meta["wavelength_medium_original"] == medium
        assert spec.meta["wavelength_medium_source"] == "CTYPE1"
        assert spec.resolution.resolving_power == 1800.0
        assert spec.meta["resolution_source"] == "R"
    # FWHM in the axis unit (nm → Å); a DQ extension: non-zero = bad
    dq = np.zeros(100, np.int16)
    dq[10:12] = 4
    g = write_image(tmp_path / "nm.fits", flux, {"CRVAL1": 400.0, "CDELT1": 0.1, "CUNIT1": "nm",
                                                 "FWHM": 0.2}, [fits.ImageHDU(dq, name="DQ")])
    spec = generic_fits.read(g)
    assert spec.resolution.fwhm == pytest.approx(2.0)
    np.testing.assert_array_equal(np.flatnonzero(spec.mask), [10, 11])
    assert spec.meta["mask_extension"] == "DQ"
    # a table: the wavelength column's name gives the medium, meta R the resolution
    t = Table({"wavelength_air": lam, "flux": flux, "quality": (lam == 4050).astype(int)},
              meta={"R": 2500, "TEFF": 6000})
    t.write(tmp_path / "t.ecsv", format="ascii.ecsv")
    spec = generic_table.read(tmp_path / "t.ecsv")
    assert spec.meta["wavelength_medium_source"] == "column name"
    np.testing.assert_allclose(spec.wavelength, air_to_vacuum(lam))
    assert spec.resolution.resolving_power == 2500 and spec.meta["teff"] == 6000
    np.testing.assert_array_equal(np.flatnonzero(spec.mask), [50])


def test_directory_of_tables_is_a_library(tmp_path: Path) -> None:
    from csstflux.io import identify, read

    for i, start in enumerate((4000.0, 4003.0)):
        lam = start + 2.0 * np.arange(80 + i)
        t = Table({"wavelength": lam, "flux": np.ones(lam.size)},
                  meta={"medium": "vacuum", "fwhm": 4.0, "logg": 4.0})
        t.write(tmp_path / f"s{i}.ecsv", format="ascii.ecsv")
    (tmp_path / "notes.csv").write_text("name,teff\ns0,5000\n")     # not a spectrum: skipped
    assert identify(tmp_path) == "generic-table"
    lib = read(tmp_path)
    assert lib.format == "generic-table" and list(lib.names) == ["s0", "s1"]
    assert lib.wavelength.shape == (2, 81) and lib.mask[0, 80]
    np.testing.assert_array_equal(lib.logg, [4.0, 4.0])
