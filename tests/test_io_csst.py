"""CSST slitless throughput curves: the real files, the grid averaging, broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from csstflux.errors import InputFormatError, TruncatedFileError
from csstflux.grids import BANDS, OUTPUT_GRID, LogGrid
from csstflux.io.formats import csst_throughput as ct


@pytest.fixture(scope="module")
def sls_dir(shared_data: Path) -> Path:
    d = shared_data / "csst" / "csst_sls_tp"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


@pytest.mark.parametrize("order", ["1st", "0st"])
def test_real_curves_match_astropy(sls_dir: Path, order: str) -> None:
    curves = ct.load_band_throughputs(sls_dir, order)
    assert list(curves) == ["GU", "GV", "GI"]
    for band, (wave, sens) in curves.items():
        path = sls_dir / f"{band}.Throughput.{order}.fits"
        assert ct.identify(path)
        ref = fits.getdata(path, 1)
        np.testing.assert_array_equal(wave, ref["WAVELENGTH"])
        np.testing.assert_array_equal(sens, ref["SENSITIVITY"])
        assert wave.dtype == sens.dtype == np.float64 and wave.shape == (1601,)
        assert wave[0] == 2000.0 and wave[-1] == 18000.0
        peak = wave[np.argmax(sens)]
        assert BANDS[band].lo <= peak <= BANDS[band].hi, (band, peak)
    if order == "1st":  # CESS peak throughputs of the first order
        peaks = {b: s.max() for b, (_, s) in curves.items()}
        assert peaks == pytest.approx({"GU": 0.21407, "GV": 0.41008, "GI": 0.39908})


def test_zeroth_order_alias(sls_dir: Path) -> None:
    a = ct.load_band_throughputs(sls_dir, "0th")
    b = ct.load_band_throughputs(sls_dir, "0st")
    np.testing.assert_array_equal(a["GV"][1], b["GV"][1])
    with pytest.raises(ValueError, match="grating order"):
        ct.load_band_throughputs(sls_dir, "2nd")


def _fine_integral(wave: np.ndarray, sens: np.ndarray, lo: float, hi: float) -> float:
    """Independent reference: trapezoid on a 0.05 Å grid of np.interp (exact for linear)."""
    x = np.arange(lo, hi, 0.05)
    x = np.append(x, hi)
    return float(np.trapezoid(np.interp(x, wave, sens, left=0.0, right=0.0), x))


def test_grid_average_conserves_the_integral(sls_dir: Path) -> None:
    edges = OUTPUT_GRID.edges
    for band, (wave, sens) in ct.load_band_throughputs(sls_dir).items():
        on_grid = ct.throughput_on_grid(wave, sens)
        assert on_grid.shape == (574,) and np.all(on_grid >= 0)
        total = float(np.sum(on_grid * np.diff(edges)))
        ref = _fine_integral(wave, sens, edges[0], edges[-1])
        assert total == pytest.approx(ref, rel=1e-3), band  # measured: ~1e-9
        assert total == pytest.approx(ref, rel=1e-6), band
        # the band's throughput peak survives the averaging
        assert on_grid.max() == pytest.approx(sens.max(), rel=0.01)
        # where the curve is zero, so is its average: nothing leaks across pixels
        nz = np.flatnonzero(sens)
        lo, hi = wave[nz[0] - 1], wave[min(nz[-1] + 1, wave.size - 1)]
        outside = (edges[1:] <= lo) | (edges[:-1] >= hi)
        assert outside.sum() > 50 and np.all(on_grid[outside] == 0.0)
        assert np.all(on_grid[(edges[:-1] > wave[nz[0]]) & (edges[1:] < wave[nz[-1]])] > 0)


def test_grid_average_analytic() -> None:
    # triangle 0 → 1 → 0 on 4000–5000–6000 Å, integral 1000 Å; zero outside
    wave = np.array([4000.0, 5000.0, 6000.0])
    sens = np.array([0.0, 1.0, 0.0])
    grid = LogGrid(name="test", start=3000.0, stop=7000.0, dlnlambda=0.01, resolution=100.0)
    avg = ct.throughput_on_grid(wave, sens, grid)
    assert np.sum(avg * np.diff(grid.edges)) == pytest.approx(1000.0, rel=1e-12)
    # a pixel fully inside the rising half averages the line at its edges' midpoint
    k = np.flatnonzero((grid.edges[:-1] > 4000) & (grid.edges[1:] < 5000))[3]
    mid = 0.5 * (grid.edges[k] + grid.edges[k + 1])
    assert avg[k] == pytest.approx((mid - 4000.0) / 1000.0, rel=1e-12)
    # a curve that extends beyond the grid only counts its part inside
    flat = ct.throughput_on_grid(np.array([1000.0, 20000.0]), np.array([0.5, 0.5]), grid)
    np.testing.assert_allclose(flat, 0.5, rtol=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        ct.throughput_on_grid(wave[::-1], sens)


def _write(path: Path, cols: list[fits.Column]) -> Path:
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    return path


def test_written_table_with_float32_and_units(tmp_path: Path) -> None:
    w = np.linspace(3000, 4000, 11)
    path = _write(tmp_path / "t.fits", [
        fits.Column("FLAG", "J", array=np.arange(11)),
        fits.Column("WAVELENGTH", "E", unit="Angstrom", array=w),
        fits.Column("SENSITIVITY", "D", array=np.linspace(0, 0.5, 11))])
    wave, sens = ct.read_throughput(path)
    np.testing.assert_allclose(wave, w, rtol=1e-7)
    np.testing.assert_allclose(sens, np.linspace(0, 0.5, 11))


@pytest.mark.parametrize("problem", ["nm", "decreasing", "negative", "missing", "nan"])
def test_bad_tables_are_refused(tmp_path: Path, problem: str) -> None:
    w = np.linspace(3000, 4000, 11)
    s = np.linspace(0, 0.5, 11)
    unit = "nm" if problem == "nm" else None
    if problem == "decreasing":
        w = w[::-1]
    if problem == "negative":
        s = s - 0.1
    if problem == "nan":
        s[3] = np.nan
    cols = [fits.Column("WAVELENGTH", "D", unit=unit, array=w)]
    if problem != "missing":
        cols.append(fits.Column("SENSITIVITY", "D", array=s))
    path = _write(tmp_path / f"{problem}.fits", cols)
    with pytest.raises(InputFormatError) as info:
        ct.read_throughput(path)
    assert str(path) in str(info.value)
    assert ct.identify(path) is (problem != "missing")


def test_truncated_and_non_fits(tmp_path: Path, sls_dir: Path) -> None:
    raw = (sls_dir / "GU.Throughput.1st.fits").read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(TruncatedFileError):
        ct.read_throughput(cut)
    text = tmp_path / "curve.txt"
    text.write_text("3000 0.1\n4000 0.2\n")
    with pytest.raises(InputFormatError, match="not a FITS file"):
        ct.read_throughput(text)
    assert not ct.identify(text)
    with pytest.raises(InputFormatError, match="not found"):
        ct.load_band_throughputs(tmp_path)


def _good_table(path: Path, *, checksum: bool = False) -> Path:
    w = np.linspace(3000, 4000, 11)
    cols = [fits.Column("WAVELENGTH", "D", array=w),
            fits.Column("SENSITIVITY", "D", array=np.linspace(0, 0.5, 11))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(
        path, checksum=checksum)
    return path


def _patch(path: Path, old: bytes, new: bytes) -> Path:
    raw = path.read_bytes()
    assert raw.count(old) == 1 and len(old) == len(new)
    path.write_bytes(raw.replace(old, new))
    return path


def test_checksums_verified(tmp_path: Path) -> None:
    path = _good_table(tmp_path / "sum.fits", checksum=True)
    ct.read_throughput(path)
    raw = bytearray(path.read_bytes())
    raw[-2880 + 20] ^= 0x01  # inside the table's data: DATASUM no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(InputFormatError, match="data checksum mismatch") as info:
        ct.read_throughput(path)
    assert str(path) in str(info.value) and "[HDU 1]" in str(info.value)
    ct.read_throughput(path, verify_checksum=False)  # the table itself still decodes


def test_truncated_gzip(tmp_path: Path) -> None:
    import gzip

    raw = _good_table(tmp_path / "t.fits").read_bytes()
    path = tmp_path / "t.fits.gz"
    path.write_bytes(gzip.compress(raw)[:-200])
    with pytest.raises(TruncatedFileError, match="gzip stream ends early"):
        ct.read_throughput(path)


def test_column_formats_checked(tmp_path: Path) -> None:
    w = np.linspace(3000, 4000, 11)
    s = np.linspace(0, 0.5, 11)
    vector = _write(tmp_path / "vector.fits", [
        fits.Column("WAVELENGTH", "2D", array=np.stack([w, w], axis=1)),
        fits.Column("SENSITIVITY", "D", array=s)])
    with pytest.raises(InputFormatError, match="WAVELENGTH is not a scalar float column") as e:
        ct.read_throughput(vector)
    assert "[HDU 1]" in str(e.value) and "2D" in str(e.value)
    integer = _write(tmp_path / "integer.fits", [
        fits.Column("WAVELENGTH", "J", array=w.astype(np.int32)),
        fits.Column("SENSITIVITY", "D", array=s)])
    with pytest.raises(InputFormatError, match="not a scalar float column"):
        ct.read_throughput(integer)
    # columns before the wanted ones need only a known width: a variable-length array is fine
    varlen = _write(tmp_path / "varlen.fits", [
        fits.Column("NOTE", "PJ()", array=np.array([np.arange(k % 3) for k in range(11)],
                                                   dtype=object)),
        fits.Column("WAVELENGTH", "D", array=w), fits.Column("SENSITIVITY", "E", array=s)])
    wave, sens = ct.read_throughput(varlen)
    np.testing.assert_array_equal(wave, w)
    np.testing.assert_allclose(sens, s, rtol=1e-7)
    # an unknown type letter before them cannot be sized
    unknown = _patch(_write(tmp_path / "unknown.fits", [
        fits.Column("FLAG", "J", array=np.arange(11)), fits.Column("WAVELENGTH", "D", array=w),
        fits.Column("SENSITIVITY", "D", array=s)]), b"TFORM1  = 'J       '",
        b"TFORM1  = 'Z       '")
    with pytest.raises(InputFormatError, match=r"cannot size column 1 \(TFORM 'Z'\)"):
        ct.read_throughput(unknown)
    # a row narrower than the columns it declares
    narrow = _patch(_good_table(tmp_path / "narrow.fits"),
                    b"NAXIS1  =                   16", b"NAXIS1  =                   12")
    with pytest.raises(InputFormatError, match="SENSITIVITY lies outside the table row"):
        ct.read_throughput(narrow)
