"""BOSZ and STIS NGSL readers on small files the tests write in the published formats."""

from __future__ import annotations

import bz2
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from csstflux.errors import GridMismatchError, InputFormatError, TruncatedFileError
from csstflux.io.formats import bosz, ngsl

BOSZ_NAME = "amm13cp03op00t5750g45v20modrt0b2000rs"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20170401)


def _bosz_arrays(rng: np.random.Generator, n: int = 300, start: float = 3000.0):
    wave = start * (1.0 + 1.0 / 4000.0) ** np.arange(n)       # R=2000, two bins per element
    flux = 1e6 * (1.0 + 0.1 * rng.standard_normal(n)) ** 2
    return wave, flux, flux * 1.3


def write_bosz_fits(path: Path, wave, flux, cont, names=("Wavelength", "SpecificIntensity",
                                                           "Continuum")) -> Path:
    cols = [fits.Column(name=n, format="D", array=a)
            for n, a in zip(names, (wave, flux, cont), strict=True)]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    return path


def test_bosz_name_parsing() -> None:
    par = bosz.parse_name(BOSZ_NAME + ".fits")
    assert par["mh"] == -1.25 and par["cm"] == 0.25 and par["am"] == 0.0
    assert (par["teff"], par["logg"], par["vturb"], par["vrot"]) == (5750.0, 4.5, 2.0, 0.0)
    assert par["resolving_power"] == 2000.0 and par["resampled"]
    assert bosz.parse_name("amp08cm05om03t12000g40v20modrt0b500rs.asc.bz2")["mh"] == 0.75
    assert bosz.parse_name("amp08cm05om03t12000g40v20modrt0b500rs.asc.bz2")["am"] == -0.25
    with pytest.raises(ValueError):
        bosz.parse_name("g2v.sed")


def test_bosz_fits_and_ascii_agree(tmp_path: Path, rng: np.random.Generator) -> None:
    wave, flux, cont = _bosz_arrays(rng)
    f = write_bosz_fits(tmp_path / f"{BOSZ_NAME}.fits", wave, flux, cont)
    assert bosz.identify(f)
    spec = bosz.read(f)
    np.testing.assert_array_equal(spec.wavelength, wave)          # vacuum, unchanged
    np.testing.assert_array_equal(spec.flux, flux)
    np.testing.assert_array_equal(spec.meta["continuum"], cont)
    assert spec.resolution.resolving_power == 2000.0 and spec.meta["mh"] == -1.25
    text = "\n".join(f"{w:.6f} {a:.9e} {c:.9e}" for w, a, c in zip(wave, flux, cont,
                                                                      strict=True))
    a3 = tmp_path / f"{BOSZ_NAME}.asc.bz2"
    a3.write_bytes(bz2.compress(text.encode()))
    a2 = tmp_path / "amp00cp00op00t6000g40v20modrt0b2000rs.asc"
    a2.write_text("\n".join(f"{w:.6f} {a:.9e}" for w, a in zip(wave, flux, strict=True)))
    s3, s2 = bosz.read(a3), bosz.read(a2)
    np.testing.assert_allclose(s3.flux, flux, rtol=1e-9)
    np.testing.assert_allclose(s3.wavelength, wave, atol=1e-6)
    np.testing.assert_allclose(s3.meta["continuum"], cont, rtol=1e-9)
    assert np.all(np.isnan(s2.meta["continuum"])) and s2.meta["teff"] == 6000.0
    air = bosz.read(f, medium="air")
    assert air.wavelength[0] > wave[0] and air.meta["wavelength_medium_original"] == "air"


def test_bosz_directory_library(tmp_path: Path, rng: np.random.Generator) -> None:
    wave, flux, cont = _bosz_arrays(rng)
    sub = tmp_path / "insbroad_002000" / "metal_+0.00"
    sub.mkdir(parents=True)
    write_bosz_fits(sub / "amp00cp00op00t6000g40v20modrt0b2000rs.fits", wave, flux * 2, cont)
    write_bosz_fits(sub / "amp00cp00op00t5000g45v20modrt0b2000rs.fits", wave, flux, cont)
    write_bosz_fits(tmp_path / f"{BOSZ_NAME}.fits", wave, flux * 3, cont)
    assert bosz.identify(tmp_path)
    lib = bosz.read(tmp_path)
    assert lib.n_star == 3 and list(lib.teff) == [5750.0, 5000.0, 6000.0]
    np.testing.assert_array_equal(lib.feh, [-1.25, 0.0, 0.0])
    np.testing.assert_array_equal(lib.extra["carbon"], [0.25, 0.0, 0.0])
    np.testing.assert_array_equal(lib.flux[2], flux * 2)
    assert lib.extra["continuum"].shape == (3, wave.size) and lib.resolution.resolving_power == 2000
    write_bosz_fits(tmp_path / "amp00cp00op00t7000g45v20modrt0b500rs.fits", wave, flux, cont)
    with pytest.raises(InputFormatError, match="mixes BOSZ resolutions"):
        bosz.read(tmp_path)
    assert bosz.read(tmp_path, resolving_power=500).n_star == 1
    write_bosz_fits(tmp_path / "amp00cp00op00t8000g45v20modrt0b2000rs.fits", wave * 1.001,
                    flux, cont)
    with pytest.raises(GridMismatchError, match="t8000"):
        bosz.read(tmp_path, resolving_power=2000)


def test_bosz_bad_inputs(tmp_path: Path, rng: np.random.Generator) -> None:
    wave, flux, cont = _bosz_arrays(rng)
    wrong = write_bosz_fits(tmp_path / f"{BOSZ_NAME}.fits", wave, flux, cont,
                            names=("WAVE", "FLUX", "CONT"))
    assert not bosz.identify(wrong)
    with pytest.raises(InputFormatError, match="lacks column WAVELENGTH"):
        bosz.read(wrong)
    good = write_bosz_fits(tmp_path / "amp00cp00op00t5000g45v20modrt0b2000rs.fits",
                           wave, flux, cont)
    raw = good.read_bytes()
    good.write_bytes(raw[:-3000])
    with pytest.raises(TruncatedFileError):
        bosz.read(good)
    empty = tmp_path / "amp00cp00op00t5250g45v20modrt0b2000rs.asc"
    empty.write_text("")
    with pytest.raises(InputFormatError, match="empty"):
        bosz.read(empty)
    rev = tmp_path / "amp00cp00op00t5500g45v20modrt0b2000rs.asc"
    rev.write_text("\n".join(f"{w} {a}" for w, a in zip(wave[::-1], flux, strict=True)))
    with pytest.raises(InputFormatError, match="strictly increasing"):
        bosz.read(rev)
    broken = tmp_path / "amp00cp00op00t5750g45v20modrt0b2000rs.asc.bz2"
    broken.write_bytes(b"BZh9 not really")
    with pytest.raises(InputFormatError, match="decompress"):
        bosz.read(broken)
    assert not bosz.identify(tmp_path / "missing.fits")


# ------------------------------------------------------------------------------------ NGSL
def write_ngsl(path: Path, wave, flux, stat, sys_err, dq=None, header=None,
               stat_name="STAT_ERR") -> Path:
    t = Table({"WAVELENGTH": wave, "FLUX": flux, stat_name: stat, "SYS_ERR": sys_err})
    if dq is not None:
        t["DQ"] = dq.astype(np.int16)
    prim = fits.PrimaryHDU()
    prim.header.update({"TELESCOP": "HST", "INSTRUME": "STIS", "DATAQUAL": "good",
                        **(header or {})})
    fits.HDUList([prim, fits.table_to_hdu(t)]).writeto(path)
    return path


def _ngsl_arrays(rng: np.random.Generator, n: int = 200):
    wave = np.linspace(1700.0, 10200.0, n)
    flux = 1e-13 * (1.0 + 0.05 * rng.standard_normal(n))
    stat = np.abs(1e-15 * (1.0 + 0.1 * rng.standard_normal(n)))
    return wave, flux, stat, 0.03 * np.abs(flux)


def test_ngsl_single_file_errors_and_mask(tmp_path: Path, rng: np.random.Generator) -> None:
    wave, flux, stat, sys_err = _ngsl_arrays(rng)
    dq = np.zeros(wave.size, int)
    dq[10] = 4
    stat[20] = 0.0
    sys_err[20] = 0.0
    f = write_ngsl(tmp_path / "h_stis_ngsl_hd102212_v2.fits", wave, flux, stat, sys_err, dq,
                   header={"TARGNAME": "HD102212", "TEFF": 3800.0, "LOG_G": 1.1,
                           "LOG_Z": 0.1, "EBMV": 0.02})
    assert ngsl.identify(f)
    spec = ngsl.read(f)
    np.testing.assert_array_equal(spec.wavelength, wave)
    np.testing.assert_array_equal(spec.flux, flux)
    good = ~np.isin(np.arange(wave.size), [10, 20])
    np.testing.assert_allclose(spec.error[good], np.hypot(stat, sys_err)[good], rtol=1e-12)
    assert spec.mask[10] and spec.mask[20] and spec.mask.sum() == 2
    assert spec.meta["name"] == "hd102212" and spec.meta["header_teff"] == 3800.0
    assert spec.resolution.resolving_power == 1000.0
    alias = write_ngsl(tmp_path / "h_stis_ngsl_hd000001_v2.fits", wave, flux, stat, sys_err,
                       stat_name="STATERROR")
    np.testing.assert_allclose(ngsl.read(alias).error[good], np.hypot(stat, sys_err)[good])


def test_ngsl_library_with_params(tmp_path: Path, rng: np.random.Generator) -> None:
    wave, flux, stat, sys_err = _ngsl_arrays(rng)
    for star in ("hd102212", "bd+112998"):
        write_ngsl(tmp_path / f"h_stis_ngsl_{star}_v2.fits", wave, flux, stat, sys_err)
    csv = tmp_path / "params.csv"
    csv.write_text("name,teff,logg,[Fe/H],ebv\nHD 102212,3800,1.1,0.1,0.02\n"
                   "BD+112998,5876,2.8,-0.6,0.13\n")
    assert ngsl.identify(tmp_path)
    lib = ngsl.read(tmp_path, params=csv)
    assert list(lib.names) == ["bd+112998", "hd102212"]
    np.testing.assert_array_equal(lib.teff, [5876.0, 3800.0])
    np.testing.assert_array_equal(lib.feh, [-0.6, 0.1])
    np.testing.assert_array_equal(lib.extra["ebv"], [0.13, 0.02])
    nop = ngsl.read(tmp_path)
    assert np.all(np.isnan(nop.teff))
    write_ngsl(tmp_path / "h_stis_ngsl_hd000358_v2.fits", wave + 0.5, flux, stat, sys_err)
    with pytest.warns(UserWarning, match="no parameters"), \
            pytest.raises(GridMismatchError, match="hd000358"):
        ngsl.read(tmp_path, params=csv)


def test_ngsl_bad_inputs(tmp_path: Path, rng: np.random.Generator) -> None:
    wave, flux, stat, sys_err = _ngsl_arrays(rng)
    t = Table({"WAVELENGTH": wave, "STAT_ERR": stat})
    f = tmp_path / "h_stis_ngsl_hd000002_v2.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t)]).writeto(f)
    with pytest.raises(InputFormatError, match="required columns"):
        ngsl.read(f)
    rev = write_ngsl(tmp_path / "h_stis_ngsl_hd000003_v2.fits", wave[::-1], flux, stat,
                     sys_err)
    with pytest.raises(InputFormatError, match="strictly increasing"):
        ngsl.read(rev)
    nan = write_ngsl(tmp_path / "h_stis_ngsl_hd000004_v2.fits", wave, flux * np.nan, stat,
                     sys_err)
    with pytest.warns(UserWarning, match="every pixel is masked"):
        assert ngsl.read(nan).mask.all()
    other = tmp_path / "spectrum.fits"
    fits.PrimaryHDU(np.ones(10)).writeto(other)
    assert not ngsl.identify(other)


def test_registry_routes_written_files(tmp_path: Path, rng: np.random.Generator) -> None:
    from csstflux.io import identify, read

    b = write_bosz_fits(tmp_path / "amp00cp00op00t5000g45v20modrt0b2000rs.fits",
                        *_bosz_arrays(rng))
    n = write_ngsl(tmp_path / "h_stis_ngsl_hd000005_v2.fits", *_ngsl_arrays(rng))
    g = tmp_path / "x.fits"
    img = fits.PrimaryHDU(np.ones(20, np.float32))
    img.header.update({"CRVAL1": 5000.0, "CDELT1": 1.0})
    img.writeto(g)
    c = tmp_path / "x.csv"
    c.write_text("wavelength,flux\n5000,1\n5001,1\n")
    got = {p.name: identify(p) for p in (b, n, g, c)}
    assert got == {b.name: "bosz", n.name: "ngsl", g.name: "generic-fits",
                   c.name: "generic-table"}
    assert read(c).format == "generic-table" and read(g).n_pix == 20
