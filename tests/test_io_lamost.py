"""LAMOST LRS reader: real DR6/DR7/DR9 files, small files in both layouts, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from csstflux.airvac import air_to_vacuum
from csstflux.errors import InputFormatError, TruncatedFileError, UnsupportedFormatError
from csstflux.io import registry
from csstflux.io.fits import decode
from csstflux.io.formats import lamost
from csstflux.io.validate import coverage_problems

DR7 = "spec-55859-F5902_sp01-001_dr7.fits.gz"
DR9_COADD = "spec-55859-F5902_sp01-013_dr8.fits.gz"
LRS_FILES = (DR7, DR9_COADD, "spec-57287-KP193637N444141V03_sp10-161.fits.gz",
             "spec-58397-EG014118N254444M01_sp03-031.fits")
MRS = "med-58408-TD230151N343645T01_sp01-015.fits"
N_PIX = 3908
#: Log-linear LRS grid: log10 λ of pixel 0 and step (COEFF0, COEFF1 in the real headers).
COEFF0, COEFF1 = 3.5682, 1e-4


@pytest.fixture
def lamost_dir(shared_data: Path) -> Path:
    return shared_data / "lamost"


def _astropy_rows(path: Path) -> tuple[np.ndarray, ...]:
    """flux, ivar, wavelength, andmask, ormask read independently with astropy."""
    with fits.open(path) as hdul:
        if hdul[0].data is not None:
            return tuple(np.array(r, dtype=np.float64) for r in hdul[0].data)
        row = hdul["COADD"].data[0]
        return tuple(np.array(row[c], dtype=np.float64) for c in lamost.COADD_COLUMNS)


# --- real files ---------------------------------------------------------------------------------

def test_dr7_image_real_values(lamost_dir: Path) -> None:
    s = lamost.read(lamost_dir / DR7)
    assert s.format == "lamost-lrs"
    assert s.meta["obsid"] == 101001
    assert s.meta["ra"] == pytest.approx(332.202274, abs=1e-9)
    assert s.meta["dec"] == pytest.approx(-2.056767, abs=1e-9)
    assert s.n_pix == N_PIX
    # the stored float32 grid follows 10**(COEFF0 + COEFF1 k) to 3e-7 (1 mÅ at 3700 Å)
    assert s.wavelength[0] == pytest.approx(10**COEFF0, rel=1e-6)
    assert s.wavelength[-1] == pytest.approx(10 ** (COEFF0 + COEFF1 * (N_PIX - 1)), rel=1e-6)
    assert (s.meta["class"], s.meta["subclass"]) == ("STAR", "G7")
    assert s.meta["snrg"] == pytest.approx(12.22) and s.meta["snrr"] == pytest.approx(27.16)
    assert s.meta["z"] == pytest.approx(-0.0001387)
    assert (s.meta["lmjd"], s.meta["mjd"], s.meta["planid"], s.meta["spid"],
            s.meta["fiberid"]) == (55859, 55858, "F5902", 1, 1)
    assert s.meta["data_v"] == "LAMOST DR7" and s.meta["vacuum"] is True
    assert s.meta["release_format"] == "image" and s.meta["flux_unit"] == "relative"
    assert s.meta["wavelength_medium_original"] == "vacuum"
    assert s.resolution.resolving_power == 1800.0
    flux, ivar, wave, _, _ = _astropy_rows(lamost_dir / DR7)
    np.testing.assert_array_equal(s.flux, flux)
    np.testing.assert_array_equal(s.wavelength, wave)
    np.testing.assert_allclose(s.error, 1 / np.sqrt(ivar), rtol=1e-15)
    assert not s.mask.any()


def test_dr9_coadd_real_values(lamost_dir: Path) -> None:
    s = lamost.read(lamost_dir / DR9_COADD)
    assert s.meta["obsid"] == 101013 and s.meta["data_v"] == "LAMOST DR9"
    assert s.meta["release_format"] == "coadd"
    assert s.meta["ra"] == pytest.approx(332.321523, abs=1e-9)
    assert s.meta["subclass"] == "A2" and s.n_pix == N_PIX
    flux, ivar, wave, andmask, _ = _astropy_rows(lamost_dir / DR9_COADD)
    np.testing.assert_array_equal(s.flux, flux)
    np.testing.assert_array_equal(s.wavelength, wave)
    np.testing.assert_array_equal(s.mask, (ivar <= 0) | (andmask != 0))


@pytest.mark.parametrize("name", LRS_FILES)
def test_real_lrs_files_agree_with_astropy(lamost_dir: Path, name: str) -> None:
    path = lamost_dir / name
    assert lamost.identify(path) == "lamost-lrs"
    s = lamost.read(path)
    flux, ivar, wave, andmask, ormask = _astropy_rows(path)
    np.testing.assert_array_equal(s.flux, flux)
    np.testing.assert_array_equal(s.wavelength, wave)
    assert np.all(np.diff(s.wavelength) > 0)
    bad = ~(ivar > 0) | (andmask != 0) | ~np.isfinite(flux)
    np.testing.assert_array_equal(s.mask, bad)
    np.testing.assert_array_equal(np.isnan(s.error), ~(ivar > 0))
    np.testing.assert_allclose(s.error[ivar > 0], ivar[ivar > 0] ** -0.5, rtol=1e-15)
    np.testing.assert_array_equal(s.meta["andmask"], andmask)
    np.testing.assert_array_equal(s.meta["ormask"], ormask)
    assert coverage_problems(s) == []


@pytest.mark.parametrize("name", LRS_FILES)
def test_real_header_meta_same_from_read_and_read_header(lamost_dir: Path, name: str) -> None:
    """Every header key of read()'s meta (header magnitudes included: both layouts) equals
    what the cheap header scan gives."""
    s = lamost.read(lamost_dir / name)
    h = lamost.read_header(lamost_dir / name)
    assert h is not None
    assert s.meta["header_mag"].shape == (10,) and s.meta["header_mag"].dtype == np.float32
    for key, value in h.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(s.meta[key], value)
        else:
            assert s.meta[key] == value, key


def test_real_file_with_zero_ivar_pixels(lamost_dir: Path) -> None:
    s = lamost.read(lamost_dir / "spec-58397-EG014118N254444M01_sp03-031.fits")
    assert s.n_pix == 3909 and int(s.mask.sum()) == 48
    assert np.isnan(s.error[s.mask]).all() and np.isfinite(s.error[~s.mask]).all()


def test_mrs_file_refused(lamost_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = lamost_dir / MRS
    assert lamost.identify(path) == "lamost-mrs"
    with pytest.raises(UnsupportedFormatError, match="medium-resolution") as info:
        lamost.read(path)
    assert MRS in str(info.value) and "not an LRS input" in str(info.value)
    # the registry routes "lamost-mrs" here (other readers are not needed for this)
    monkeypatch.setattr(registry, "READER_MODULES", ("csstflux.io.formats.lamost",))
    assert registry.reader_for("lamost-mrs") is lamost
    assert registry.identify(path) == "lamost-mrs"
    with pytest.raises(UnsupportedFormatError, match="medium-resolution"):
        registry.read(path)


def test_other_formats_not_identified(shared_data: Path, tmp_path: Path) -> None:
    miles = shared_data / "miles" / "MILES_res2.50_star_m0001V.fits"
    assert lamost.identify(miles) is False
    with pytest.raises(InputFormatError, match="5 rows") as info:
        lamost.read(miles)
    assert miles.name in str(info.value)
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n" * 50)
    assert lamost.identify(text) is False
    with pytest.raises(InputFormatError, match="not a FITS file"):
        lamost.read(text)
    assert lamost.identify(tmp_path) is False


# --- small files in the real layouts -------------------------------------------------------------

def _header(**extra: object) -> fits.Header:
    h = fits.Header()
    cards = dict(TELESCOP="LAMOST", ORIGIN="NAOC-LAMOST", DATA_V="LAMOST DR7", OBSID=4242,
                 FILENAME="spec-56000-TEST01_sp02-042.fits", LMJD=56000, MJD=55999,
                 PLANID="TEST01", RA=10.5, DEC=-20.25, SPID=2, FIBERID=42, VACUUM=True,
                 CLASS="STAR", SUBCLASS="K1", Z=1e-4, Z_ERR=2e-5, SNRU=3.0, SNRG=30.0,
                 SNRR=40.0, SNRI=45.0, SNRZ=20.0)
    cards.update(extra)
    for k, v in cards.items():
        if v is not None:
            h[k] = v
    return h


def _rows(n: int = 400, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    wave = 10 ** (COEFF0 + np.arange(n) * (np.log10(9100 / 3700) / (n - 1)))
    flux = 100 + 20 * np.sin(wave / 300) + rng.normal(0, 1, n)
    return {"flux": flux, "ivar": rng.uniform(0.5, 2.0, n), "wavelength": wave,
            "andmask": np.zeros(n), "ormask": np.zeros(n)}


def write_image(path: Path, rows: dict[str, np.ndarray] | None = None, *,
                checksum: bool = False, **header: object) -> Path:
    """DR1-7 layout: (5, n) float32 primary image."""
    r = _rows() if rows is None else rows
    data = np.vstack([r[k] for k in lamost.IMAGE_ROWS]).astype(np.float32)
    fits.PrimaryHDU(data, header=_header(**header)).writeto(path, checksum=checksum)
    return path


def write_coadd(path: Path, rows: dict[str, np.ndarray] | None = None, *, n_rows: int = 1,
                drop: str | None = None, **header: object) -> Path:
    """DR8+ layout: empty primary with metadata, one-row COADD table of vector columns."""
    r = _rows() if rows is None else rows
    n = r["flux"].size
    r = {**r, "normalization": np.full(n, -9999.0)}
    cols = [fits.Column(name=k.upper(), format=f"{n}E",
                        array=np.tile(r[k].astype(np.float32), (n_rows, 1)))
            for k in (*lamost.IMAGE_ROWS, "normalization") if k.upper() != drop]
    hdul = fits.HDUList([fits.PrimaryHDU(header=_header(DATA_V="LAMOST DR9", **header)),
                         fits.BinTableHDU.from_columns(cols, name="COADD")])
    hdul.writeto(path)
    return path


@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
@pytest.mark.parametrize("layout", ["image", "coadd"])
def test_written_layouts_round_trip(tmp_path: Path, suffix: str, layout: str) -> None:
    rows = _rows()
    writer = write_image if layout == "image" else write_coadd
    path = writer(tmp_path / f"spec-56000-TEST01_sp02-042{suffix}", rows)
    assert decode.is_gzip(path) == (suffix == ".fits.gz")
    assert lamost.identify(path) == "lamost-lrs"
    s = lamost.read(path)
    assert s.meta["release_format"] == layout
    for key in ("flux", "wavelength"):
        np.testing.assert_array_equal(getattr(s, key), rows[key].astype(np.float32))
    np.testing.assert_allclose(s.error, rows["ivar"].astype(np.float32).astype(np.float64) ** -0.5,
                               rtol=1e-15)
    assert not s.mask.any()
    assert (s.meta["obsid"], s.meta["planid"], s.meta["spid"], s.meta["fiberid"]) == (
        4242, "TEST01", 2, 42)
    assert s.meta["snrg"] == 30.0 and s.meta["class"] == "STAR"
    assert s.source == str(path)


def test_masks_andmask_masks_ormask_does_not(tmp_path: Path) -> None:
    rows = _rows()
    rows["andmask"][10:15] = 4
    rows["ormask"][10:30] = 8
    rows["ivar"][50] = 0.0
    rows["ivar"][51] = -1.0
    rows["flux"][60] = np.nan
    rows["ivar"][70] = np.inf
    s = lamost.read(write_image(tmp_path / "spec.fits", rows))
    expected = np.zeros(s.n_pix, bool)
    expected[[10, 11, 12, 13, 14, 50, 51, 60, 70]] = True
    np.testing.assert_array_equal(s.mask, expected)
    assert np.isnan(s.error[[50, 51, 70]]).all()
    assert s.meta["andmask"][12] == 4 and s.meta["ormask"][25] == 8
    assert s.meta["andmask"].dtype == np.int32


def test_air_wavelengths_converted(tmp_path: Path) -> None:
    rows = _rows()
    s = lamost.read(write_image(tmp_path / "spec.fits", rows, VACUUM=False))
    assert s.meta["vacuum"] is False and s.meta["wavelength_medium_original"] == "air"
    expected = air_to_vacuum(rows["wavelength"].astype(np.float32))
    np.testing.assert_allclose(s.wavelength, expected, rtol=0, atol=1e-9)
    assert np.all(s.wavelength > rows["wavelength"].astype(np.float32))


def test_missing_header_keys_are_none(tmp_path: Path) -> None:
    gone = dict.fromkeys(("OBSID", "RA", "SNRG", "CLASS", "VACUUM", "FILENAME", "Z"))
    s = lamost.read(write_image(tmp_path / "spec.fits", **gone))
    for key in ("obsid", "ra", "snrg", "class", "vacuum", "filename", "z"):
        assert s.meta[key] is None
    assert s.meta["dec"] == -20.25
    assert s.meta["wavelength_medium_original"] == "vacuum"


def test_checksums_verified(tmp_path: Path) -> None:
    path = write_image(tmp_path / "spec.fits", checksum=True)
    raw = path.read_bytes()
    hdu = decode.walk_hdus(raw)[0]
    # our ones'-complement sum agrees with astropy's DATASUM
    assert decode.ones_complement_sum(raw[hdu.data_start:hdu.end]) == int(
        hdu.get_str("DATASUM"))
    lamost.read(path)
    data_flip = bytearray(raw)
    data_flip[hdu.data_start + 1001] ^= 0x10
    path.write_bytes(bytes(data_flip))
    with pytest.raises(InputFormatError, match="data checksum mismatch"):
        lamost.read(path)
    lamost.read(path, verify_checksum=False)  # the reader itself cannot tell
    head_flip = bytearray(raw)
    pos = raw.index(b"OBSID   =") + 40  # inside the blank value field
    head_flip[pos] ^= 0x01  # space -> '!' : still ASCII, only the checksum can tell
    path.write_bytes(bytes(head_flip))
    with pytest.raises(InputFormatError, match="HDU checksum mismatch"):
        lamost.read(path)


def test_coadd_with_checksums(tmp_path: Path) -> None:
    path = write_coadd(tmp_path / "spec.fits")
    with fits.open(path) as hdul:
        hdul.writeto(tmp_path / "sum.fits", checksum=True)
    assert lamost.read(tmp_path / "sum.fits").meta["release_format"] == "coadd"


# --- bad inputs ---------------------------------------------------------------------------------

def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "spec-56000-TEST01_sp02-042.fits.gz"
    path.write_bytes(b"")
    assert lamost.identify(path) == "lamost-lrs"  # by name, so read() can explain
    with pytest.raises(InputFormatError, match="empty") as info:
        lamost.read(path)
    assert path.name in str(info.value)


@pytest.mark.parametrize("layout", ["image", "coadd"])
def test_truncated_plain(tmp_path: Path, layout: str) -> None:
    path = (write_image if layout == "image" else write_coadd)(tmp_path / "spec.fits")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 2880 - 100])
    with pytest.raises(TruncatedFileError, match="shorter than its header") as info:
        lamost.read(path)
    assert "spec.fits" in str(info.value)


def test_truncated_inside_header(tmp_path: Path) -> None:
    path = write_image(tmp_path / "spec.fits")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(TruncatedFileError, match="inside a header"):
        lamost.read(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = write_image(tmp_path / "spec.fits.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TruncatedFileError, match="gzip stream ends early"):
        lamost.read(path)


def test_bit_flipped_gzip(tmp_path: Path) -> None:
    path = write_image(tmp_path / "spec.fits.gz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(InputFormatError, match="gzip") as info:
        lamost.read(path)
    assert "spec.fits.gz" in str(info.value)


def test_bit_flipped_header(tmp_path: Path) -> None:
    path = write_image(tmp_path / "spec.fits")
    raw = path.read_bytes()
    flipped = bytearray(raw)
    flipped[raw.index(b"NAXIS2  =") + 29] ^= 0x01  # NAXIS2 = 5 -> 4
    path.write_bytes(bytes(flipped))
    with pytest.raises(InputFormatError, match="5 rows"):
        lamost.read(path)
    flipped = bytearray(raw)
    flipped[raw.index(b"PLANID  =") + 12] ^= 0x80  # high bit: not ASCII any more
    path.write_bytes(bytes(flipped))
    with pytest.raises(InputFormatError, match="non-ASCII"):
        lamost.read(path)


def test_wrong_image_shape(tmp_path: Path) -> None:
    path = tmp_path / "spec.fits"
    fits.PrimaryHDU(np.ones((3, 100), np.float32), header=_header()).writeto(path)
    with pytest.raises(InputFormatError, match=r"expected \(5, n_pix\) image"):
        lamost.read(path)
    fits.PrimaryHDU(np.ones((5, 100), np.int16), header=_header()).writeto(path, overwrite=True)
    with pytest.raises(InputFormatError, match="BITPIX"):
        lamost.read(path)


def test_image_scaled_and_double(tmp_path: Path) -> None:
    rows = _rows()
    stored = np.vstack([(rows[k] - 1.0) / 2.0 for k in lamost.IMAGE_ROWS])  # float64
    hdu = fits.PrimaryHDU(stored, header=_header())
    hdu.header["BSCALE"], hdu.header["BZERO"] = 2.0, 1.0
    path = tmp_path / "spec.fits"
    hdu.writeto(path)
    s = lamost.read(path)
    np.testing.assert_allclose(s.flux, rows["flux"], rtol=1e-15)
    np.testing.assert_allclose(s.wavelength, rows["wavelength"], rtol=1e-15)


def test_coadd_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="lacks LRS columns"):
        lamost.read(write_coadd(tmp_path / "a.fits", drop="IVAR"))
    with pytest.raises(InputFormatError, match="exactly one spectrum"):
        lamost.read(write_coadd(tmp_path / "b.fits", n_rows=2))
    path = tmp_path / "c.fits"
    fits.HDUList([fits.PrimaryHDU(header=_header())]).writeto(path)
    with pytest.raises(InputFormatError, match="no COADD table"):
        lamost.read(path)


def _same_spectrum(a: object, b: object) -> None:
    for key in ("wavelength", "flux", "error", "mask"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    for key in ("andmask", "ormask"):
        np.testing.assert_array_equal(a.meta[key], b.meta[key], err_msg=key)   # type: ignore


def test_coadd_views_equal_the_fitsio_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           shared_data: Path) -> None:
    """The COADD columns taken as views of the decompressed bytes give the spectrum fitsio's
    read of the table gives (forced here by refusing the views), on written and real files."""
    files = [write_coadd(tmp_path / "spec-a.fits.gz"), write_coadd(tmp_path / "spec-b.fits"),
             shared_data / "lamost" / DR9_COADD]
    fast = [lamost.read(p) for p in files]
    monkeypatch.setattr(lamost, "plain_columns", lambda *args: None)
    for path, spec in zip(files, fast, strict=True):
        _same_spectrum(spec, lamost.read(path))


def test_coadd_tables_the_views_do_not_cover_go_to_fitsio(tmp_path: Path) -> None:
    """A scaled column (TSCALn) is left to fitsio, which applies the scale."""
    rows = _rows()
    path = write_coadd(tmp_path / "spec.fits", rows)
    with fits.open(path) as hdul:
        table = hdul["COADD"]
        table.header["TSCAL1"], table.header["TZERO1"] = 2.0, 0.0   # FLUX: twice what is stored
        hdul.writeto(tmp_path / "scaled.fits")
    raw, hdus = decode.load_fits_bytes(tmp_path / "scaled.fits")
    assert decode.plain_columns(raw, hdus[1], lamost.COADD_COLUMNS) is None
    s = lamost.read(tmp_path / "scaled.fits")
    np.testing.assert_array_equal(s.flux, 2.0 * rows["flux"].astype(np.float32))


@pytest.mark.parametrize("layout", ["image", "coadd"])
def test_wavelength_not_increasing(tmp_path: Path, layout: str) -> None:
    rows = _rows()
    rows["wavelength"][200], rows["wavelength"][201] = rows["wavelength"][201], rows[
        "wavelength"][200]
    path = (write_image if layout == "image" else write_coadd)(tmp_path / "spec.fits", rows)
    with pytest.raises(InputFormatError, match="wavelength not increasing"):
        lamost.read(path)


def test_all_nan_flux_reads_fully_masked(tmp_path: Path) -> None:
    rows = _rows()
    rows["flux"][:] = np.nan
    s = lamost.read(write_image(tmp_path / "spec.fits", rows))
    assert s.mask.all()
    assert coverage_problems(s) == ["no good pixels"]


def test_coverage_problems(tmp_path: Path) -> None:
    rows = _rows()
    rows["wavelength"] = np.linspace(5000.0, 9000.0, rows["flux"].size)
    s = lamost.read(write_image(tmp_path / "red.fits", rows))
    problems = coverage_problems(s)
    assert len(problems) == 1 and "5000.0-9000.0 A" in problems[0]
    rows = _rows()
    inside = np.flatnonzero((rows["wavelength"] > 4000) & (rows["wavelength"] < 7000))
    rows["ivar"][inside[::2]] = 0.0  # half of the range masked, ends still good
    s = lamost.read(write_image(tmp_path / "holes.fits", rows))
    problems = coverage_problems(s, 4000, 7000, min_good_fraction=0.8)
    assert len(problems) == 1 and "are good (need 80%)" in problems[0]
    assert coverage_problems(s, 4000, 7000, min_good_fraction=0.4) == []
    with pytest.raises(ValueError, match="lo < hi"):
        coverage_problems(s, 7000, 4000)
