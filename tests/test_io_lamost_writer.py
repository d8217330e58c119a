"""LAMOST LRS writer: write → csstflux.io.formats.lamost.read round trips, both layouts, gz and
plain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fitsio
import numpy as np
import pytest

from csstflux.io.fits.decode import load_fits_bytes
from csstflux.io.fits.lamost_writer import write_lrs
from csstflux.io.formats import lamost

N_PIX = 3909
REAL = "lamost/spec-55859-F5902_sp01-001_dr7.fits.gz"


@pytest.fixture
def spectrum() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    wave = 10 ** (3.5682 + 1e-4 * np.arange(N_PIX))
    flux = (1000 + 100 * rng.standard_normal(N_PIX)).astype(np.float32)
    ivar = rng.uniform(1e-4, 1e-2, N_PIX).astype(np.float32)
    andmask = np.zeros(N_PIX, np.int32)
    andmask[:5] = 1 << 23
    ivar[:5] = 0
    ormask = andmask.copy()
    ormask[100:110] = 1 << 20
    header = {"OBSID": 123456789, "RA": (359.987654, "[deg] RA"), "DEC": -12.345678,
              "CLASS": "STAR", "SUBCLASS": "G2", "Z": -1.2345e-4, "Z_ERR": 2.4e-5,
              "SNRU": 3.5, "SNRG": 40.25, "SNRR": 60.0, "SNRI": 70.5, "SNRZ": 50.0,
              "MJD": 57000, "LMJD": 57001, "PLANID": "HD000000N000000B01", "SPID": 7,
              "FIBERID": 123, "DATA_V": "LAMOST DR9"}
    return dict(wavelength=wave, flux=flux, ivar=ivar, andmask=andmask, ormask=ormask,
                header=header)


@pytest.mark.parametrize("layout", ["image", "coadd"])
@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_round_trip(tmp_path: Path, spectrum: dict[str, Any], layout: str, suffix: str) -> None:
    path = write_lrs(tmp_path / f"spec-57001-X_sp07-123{suffix}", layout=layout, **spectrum)
    assert lamost.identify(path) == "lamost-lrs"
    spec = lamost.read(path)
    assert spec.meta["release_format"] == layout
    np.testing.assert_array_equal(spec.flux, spectrum["flux"])
    np.testing.assert_array_equal(spec.wavelength, spectrum["wavelength"].astype(np.float32))
    usable = spectrum["ivar"] > 0
    np.testing.assert_array_equal(spec.error[usable],
                                  1 / np.sqrt(spectrum["ivar"][usable].astype(np.float64)))
    np.testing.assert_array_equal(spec.mask, spectrum["andmask"] != 0)
    np.testing.assert_array_equal(spec.meta["andmask"], spectrum["andmask"])
    np.testing.assert_array_equal(spec.meta["ormask"], spectrum["ormask"])
    hdr = spectrum["header"]
    for key in lamost._META_KEYS.values():
        name = key[0]
        if name in hdr:
            want = hdr[name][0] if isinstance(hdr[name], tuple) else hdr[name]
            got = spec.meta[next(k for k, v in lamost._META_KEYS.items() if v[0] == name)]
            assert got == want, name
    assert spec.meta["vacuum"] is True
    assert spec.meta["filename"] == "spec-57001-X_sp07-123.fits"


def test_gzip_output_is_deterministic(tmp_path: Path, spectrum: dict[str, Any]) -> None:
    a = write_lrs(tmp_path / "a.fits.gz", **spectrum).read_bytes()
    b = write_lrs(tmp_path / "b.fits.gz", **{**spectrum, "header": spectrum["header"]})
    assert a[:2] == b"\x1f\x8b"
    # FILENAME differs, everything else equal: rewrite a under b's name and compare
    assert write_lrs(tmp_path / "a.fits.gz", **spectrum).read_bytes() == a
    assert b.read_bytes() != a


def test_checksum_is_written_and_verified(tmp_path: Path, spectrum: dict[str, Any]) -> None:
    for layout in ("image", "coadd"):
        path = write_lrs(tmp_path / f"c-{layout}.fits", layout=layout, checksum=True, **spectrum)
        assert "CHECKSUM" in fitsio.read_header(path)
        lamost.read(path, verify_checksum=True)
        data_start = load_fits_bytes(path)[1][-1].data_start
        raw = bytearray(path.read_bytes())
        raw[data_start + 1001] ^= 0x10  # one bit of data
        path.write_bytes(bytes(raw))
        with pytest.raises(lamost.InputFormatError):
            lamost.read(path, verify_checksum=True)


def test_bad_arguments(tmp_path: Path, spectrum: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="layout"):
        write_lrs(tmp_path / "x.fits", layout="mrs", **spectrum)
    with pytest.raises(ValueError, match="length"):
        write_lrs(tmp_path / "x.fits", **{**spectrum, "flux": spectrum["flux"][:-1]})


def _header_dict(path: Path) -> dict[str, Any]:
    return {r["name"]: (r["value"], r.get("comment")) for r in fitsio.read_header(path).records()
            if r["name"] not in (None, "COMMENT", "HISTORY", "")}


@pytest.mark.parametrize("layout", ["image", "coadd"])
def test_real_file_rewritten(tmp_path: Path, shared_data: Path, layout: str) -> None:
    src = shared_data / REAL
    rows = fitsio.read(src, ext=0)
    flux, ivar, wave, andmask, ormask = rows
    out = write_lrs(tmp_path / src.name, wave, flux, ivar, andmask.astype(np.int32),
                    ormask.astype(np.int32), _header_dict(src), layout=layout)
    a, b = lamost.read(src), lamost.read(out)
    for k in ("wavelength", "flux", "mask"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    np.testing.assert_array_equal(a.error, b.error)
    for k, v in a.meta.items():
        if k == "release_format":
            assert b.meta[k] == layout
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b.meta[k])
        else:
            assert b.meta[k] == v, k
    if layout == "image":
        np.testing.assert_array_equal(fitsio.read(out, ext=0), rows)
        structural = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"}
        h_out, h_src = _header_dict(out), _header_dict(src)
        assert {k: v for k, v in h_out.items() if k not in structural} == {
            k: v for k, v in h_src.items() if k not in structural}


def test_wavelength_solution_written_as_lamost_states_it(tmp_path: Path,
                                                        spectrum: dict[str, Any]) -> None:
    """A log-linear row gets COEFF0/COEFF1 and the equal CRVAL1/CD1_1/CRPIX1/DC-FLAG (as in
    the real files), which the reader finds consistent; another row gets none; a header's
    own COEFF0/COEFF1 are kept even when the row disagrees."""
    for layout in ("image", "coadd"):
        path = write_lrs(tmp_path / f"log-{layout}.fits", layout=layout, **spectrum)
        h = fitsio.read_header(path, ext=0)
        assert (h["COEFF0"], h["COEFF1"], h["CRVAL1"], h["CD1_1"], h["CRPIX1"],
                h["DC-FLAG"]) == (3.5682, 1e-4, 3.5682, 1e-4, 1, 1)
        spec = lamost.read(path)
        assert spec.meta["wcs"] == "COEFF0/COEFF1" and spec.meta["wcs_mismatch_pixels"] < 1e-3
    linear = {**spectrum, "wavelength": np.linspace(3700, 9100, N_PIX)}
    h = fitsio.read_header(write_lrs(tmp_path / "lin.fits", **linear), ext=0)
    assert not {"COEFF0", "COEFF1", "CRVAL1", "CD1_1"} & set(h.keys())
    shifted = {**spectrum, "wavelength": spectrum["wavelength"] * 1.01,
               "header": {**spectrum["header"], "COEFF0": 3.5682, "COEFF1": 1e-4}}
    spec = lamost.read(write_lrs(tmp_path / "shifted.fits", **shifted))
    assert spec.meta["wcs_mismatch_pixels"] == pytest.approx(np.log10(1.01) / 1e-4, abs=0.01)
