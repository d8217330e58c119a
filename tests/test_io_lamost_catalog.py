"""LAMOST LASP-style catalogue reader: FITS and CSV, path building, missing values, selection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from csstflux.errors import InputFormatError, TruncatedFileError
from csstflux.io import registry
from csstflux.io.formats import lamost_catalog
from csstflux.io.formats.lamost_catalog import Catalog

ROWS = {
    "OBSID": [101001, 101013, 359910161, 677503031],
    "RA": [332.202274, 332.321523, 292.058720, 24.376852],
    "DEC": [-2.056767, -2.122024, 43.925228, 25.427147],
    "SNRG": [12.22, 5.56, 87.63, 153.72],
    "TEFF": [5301.2, 8900.0, -9999.0, 5812.5],
    "LOGG": [4.4, 4.0, -9999.0, 4.3],
    "FEH": [-0.2, -9999.0, -9999.0, 0.05],
    "RV": [-41.5, -320.0, -51.4, -1.9],
    "CLASS": ["STAR", "STAR", "GALAXY", "STAR"],
    "LMJD": [55859, 55859, 57287, 58397],
    "PLANID": ["F5902", "F5902", "KP193637N444141V03", "EG014118N254444M01"],
    "SPID": [1, 1, 10, 3],
    "FIBERID": [1, 13, 161, 31],
}
EXPECTED_NAMES = [
    "55859/F5902/spec-55859-F5902_sp01-001.fits.gz",
    "55859/F5902/spec-55859-F5902_sp01-013.fits.gz",
    "57287/KP193637N444141V03/spec-57287-KP193637N444141V03_sp10-161.fits.gz",
    "58397/EG014118N254444M01/spec-58397-EG014118N254444M01_sp03-031.fits.gz",
]


def _write_csv(path: Path, rows: dict[str, list], sep: str = ",") -> Path:
    names = list(rows)
    lines = ["# LASP test catalogue", sep.join(n.lower() for n in names)]
    lines += [sep.join(str(rows[n][i]) for n in names) for i in range(len(rows["OBSID"]))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(params=["fits", "fits.gz", "csv", "psv"])
def catalogue(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param.startswith("fits"):
        path = tmp_path / f"lrs_cat.{request.param}"
        Table(ROWS).write(path)
        return path
    return _write_csv(tmp_path / "lrs_cat.csv", ROWS, "," if request.param == "csv" else "|")


def test_reads_columns_and_builds_paths(catalogue: Path) -> None:
    assert lamost_catalog.identify(catalogue)
    cat = lamost_catalog.read(catalogue, root="/data/lamost/dr7/fits")
    assert isinstance(cat, Catalog) and len(cat) == 4
    assert cat.obsid.dtype == np.int64
    np.testing.assert_array_equal(cat.obsid, ROWS["OBSID"])
    np.testing.assert_allclose(cat.ra, ROWS["RA"], rtol=0, atol=1e-9)
    assert cat.ra.dtype == np.float64 and cat.teff.dtype == np.float64
    # -9999 (LASP "not measured") becomes NaN, nothing else does
    np.testing.assert_array_equal(np.isnan(cat.teff), [False, False, True, False])
    np.testing.assert_array_equal(np.isnan(cat.feh), [False, True, True, False])
    assert cat.teff[0] == pytest.approx(5301.2) and cat.rv[1] == pytest.approx(-320.0)
    assert list(cat.class_) == ROWS["CLASS"] and cat.has_class
    assert list(cat.path) == ["/data/lamost/dr7/fits/" + n for n in EXPECTED_NAMES]


def test_custom_template_and_default_root(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "cat.csv", ROWS)
    cat = lamost_catalog.read(path)
    assert cat.path[0] == "./" + EXPECTED_NAMES[0]
    tpl = "{root}/{planid}/spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits"
    cat = lamost_catalog.read(path, root="/r", template=tpl)
    assert cat.path[2] == "/r/KP193637N444141V03/spec-57287-KP193637N444141V03_sp10-161.fits"
    with pytest.raises(InputFormatError, match="bad path template"):
        lamost_catalog.read(path, template="{root}/{nosuchfield}")


def test_path_column_and_no_class(tmp_path: Path) -> None:
    rows = {k: v for k, v in ROWS.items() if k not in ("LMJD", "PLANID", "SPID", "FIBERID",
                                                       "CLASS")}
    rows["Filename"] = ["a.fits.gz", "b.fits.gz", "/abs/c.fits", "d.fits"]
    path = _write_csv(tmp_path / "cat.csv", rows)
    cat = lamost_catalog.read(path)
    assert list(cat.path) == rows["Filename"]
    cat = lamost_catalog.read(path, root="/data")
    assert list(cat.path) == ["/data/a.fits.gz", "/data/b.fits.gz", "/abs/c.fits", "/data/d.fits"]
    assert not cat.has_class and list(cat.class_) == [""] * 4
    with pytest.raises(ValueError, match="class column"):
        cat.select(star_only=True)


def test_empty_fields_are_nan(tmp_path: Path) -> None:
    rows = dict(ROWS)
    rows["LOGG"] = ["", 4.0, 4.1, 4.2]
    cat = lamost_catalog.read(_write_csv(tmp_path / "cat.csv", rows))
    assert np.isnan(cat.logg[0]) and cat.logg[1] == 4.0


def test_select(catalogue: Path) -> None:
    cat = lamost_catalog.read(catalogue)
    assert list(cat.select(min_snr=10).obsid) == [101001, 359910161, 677503031]
    assert list(cat.select(star_only=True).obsid) == [101001, 101013, 677503031]
    # NaN teff (the galaxy) fails the cut; the range is closed
    assert list(cat.select(teff_range=(5301.2, 8900.0)).obsid) == [101001, 101013, 677503031]
    sel = cat.select(min_snr=10, star_only=True, teff_range=(4000, 7000))
    assert list(sel.obsid) == [101001, 677503031] and sel.path[1] == cat.path[3]
    assert list(cat.select(limit=2).obsid) == [101001, 101013]
    assert len(cat.select(min_snr=1e6)) == 0
    with pytest.raises(ValueError, match="limit"):
        cat.select(limit=-1)


def test_missing_columns_named(tmp_path: Path) -> None:
    rows = {k: v for k, v in ROWS.items() if k not in ("TEFF", "SPID")}
    with pytest.raises(InputFormatError, match=r"lacks required columns \['teff', 'spid'\]") as e:
        lamost_catalog.read(_write_csv(tmp_path / "cat.csv", rows))
    assert "found ['class', 'dec'" in str(e.value) and "cat.csv" in str(e.value)
    rows = {k: v for k, v in ROWS.items() if k != "RV"}
    path = tmp_path / "cat.fits"
    Table(rows).write(path)
    with pytest.raises(InputFormatError, match=r"\['rv'\]"):
        lamost_catalog.read(path)


def test_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputFormatError, match="empty"):
        lamost_catalog.read(empty)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("obsid,ra,dec\n1,2\n")
    with pytest.raises(InputFormatError, match="wrong number of fields"):
        lamost_catalog.read(ragged)
    fits_path = tmp_path / "cat.fits"
    Table(ROWS).write(fits_path)
    raw = fits_path.read_bytes()
    fits_path.write_bytes(raw[:-3000])
    with pytest.raises(TruncatedFileError):
        lamost_catalog.read(fits_path)
    rows = dict(ROWS)
    rows["OBSID"] = ["x", 2, 3, 4]
    with pytest.raises(InputFormatError, match="obsid"):
        lamost_catalog.read(_write_csv(tmp_path / "badid.csv", rows))


def test_identify(tmp_path: Path, shared_data: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("wavelength,flux\n1,2\n")
    assert not lamost_catalog.identify(other)
    assert not lamost_catalog.identify(shared_data / "lamost" /
                                       "spec-55859-F5902_sp01-001_dr7.fits.gz")
    assert not lamost_catalog.identify(tmp_path)
    assert "csstflux.io.formats.lamost_catalog" not in registry.READER_MODULES


# --- rows with problems are kept, never fatal -------------------------------------------------

BAD_RA = ["nan", "", -9999, 400, 10.0, "abc"]
BAD_DEC = [0.0, 5.0, 5.0, 5.0, -95, 5.0]


def _bad_coord_rows() -> dict[str, list]:
    n = len(BAD_RA)
    rows = {k: (v * 2)[:n] for k, v in ROWS.items()}
    rows["OBSID"] = list(range(1, n + 1))
    rows["RA"], rows["DEC"] = BAD_RA, BAD_DEC
    return rows


def test_bad_coordinates_are_kept_as_nan_or_as_given(tmp_path: Path) -> None:
    from csstflux.io.validate import has_sky_position

    cat = lamost_catalog.read(_write_csv(tmp_path / "cat.csv", _bad_coord_rows()))
    assert len(cat) == len(BAD_RA)
    np.testing.assert_array_equal(np.isnan(cat.ra), [True, True, True, False, False, True])
    assert cat.ra[3] == 400.0 and cat.dec[4] == -95.0
    assert not has_sky_position(cat.ra, cat.dec).any()
    # FITS: NaN and -9999 from a float column
    rows = dict(ROWS)
    rows["RA"] = [np.nan, -9999.0, 400.0, 24.376852]
    path = tmp_path / "cat.fits"
    Table(rows).write(path)
    cat = lamost_catalog.read(path)
    np.testing.assert_array_equal(has_sky_position(cat.ra, cat.dec), [False] * 3 + [True])
    # other columns stay strict: a word in teff refuses the catalogue, naming the column
    rows = dict(ROWS)
    rows["TEFF"] = ["hot", 1, 2, 3]
    with pytest.raises(InputFormatError, match="'teff' is not numeric"):
        lamost_catalog.read(_write_csv(tmp_path / "t.csv", rows))


def test_drop_duplicates_keeps_first_rows(tmp_path: Path) -> None:
    rows = {k: (v * 2)[:6] for k, v in ROWS.items()}
    rows["OBSID"] = [5, 6, 5, 7, 5, 6]
    cat = lamost_catalog.read(_write_csv(tmp_path / "cat.csv", rows), root="/r")
    kept, repeated, dropped = cat.drop_duplicates()
    assert kept.obsid.tolist() == [5, 6, 7]
    assert repeated.tolist() == [True, True, False]
    np.testing.assert_array_equal(kept.path, cat.path[[0, 1, 3]])
    assert [f for f, _ in dropped] == [cat.path[2], cat.path[4], cat.path[5]]
    assert dropped[0][1] == (f"duplicate obsid 5: catalogue row 3 dropped, row 1 "
                             f"({cat.path[0]}) kept")
    assert "row 6 dropped, row 2" in dropped[2][1]
    unique, rep, none = kept.drop_duplicates()
    assert len(unique) == 3 and not rep.any() and none == []


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    """Undecodable bytes survive as surrogate escapes: the name still opens its file."""
    raw_name = b"spec-\xff\xfe-x_sp01-001.fits"
    rows = {k: v[:2] for k, v in ROWS.items() if k not in ("LMJD", "PLANID", "SPID", "FIBERID")}
    # CSV with the raw bytes in a path column (the rest of the file is ASCII)
    header = ",".join(k.lower() for k in rows) + ",path\n"
    body = b"".join(",".join(str(rows[k][i]) for k in rows).encode() + b"," + name + b"\n"
                    for i, name in enumerate((raw_name, b"plain.fits")))
    csv_path = tmp_path / "cat.csv"
    csv_path.write_bytes(header.encode() + body)
    assert lamost_catalog.identify(csv_path)
    cat = lamost_catalog.read(csv_path, root=str(tmp_path))
    assert os.fsencode(cat.path[0]) == os.fsencode(str(tmp_path)) + b"/" + raw_name
    with open(os.path.join(os.fsencode(tmp_path), raw_name), "wb") as fh:   # a real file
        fh.write(b"x")
    assert Path(cat.path[0]).read_bytes() == b"x"
    assert cat.path[1].endswith("/plain.fits")
    # FITS binary table with a bytes column
    fits_path = tmp_path / "cat.fits"
    table = Table(rows)
    table["PATH"] = np.array([raw_name, b"plain.fits"], dtype="S40")
    table.write(fits_path)
    cat = lamost_catalog.read(fits_path)
    assert os.fsencode(cat.path[0]) == raw_name and cat.path[1] == "plain.fits"


def test_path_columns_are_compact_utf8_and_keep_undecodable_names():
    from csstflux.containers import text_array

    paths = [f"/data/lamost/dr9/20{i % 90:02d}1231/plan{i:05d}/spec-{i:08d}.fits.gz"
             for i in range(1000)]
    compact = text_array(paths)
    fixed = np.asarray(paths, dtype=str)
    assert compact.dtype == np.dtypes.StringDType()
    assert compact.tolist() == paths and np.all(compact == fixed)
    assert compact[[3, 1]].tolist() == [paths[3], paths[1]]
    # 16 bytes per entry in the array (the text lives beside it) against 4 bytes per character
    assert compact.nbytes == 16 * len(paths) and fixed.nbytes == 4 * len(paths) * len(paths[0])
    odd = ["/data/spec-\udcff.fits", "/data/spec-1.fits"]      # bytes kept as surrogates
    kept = text_array(odd)
    assert kept.dtype.kind == "U" and kept.tolist() == odd


@pytest.mark.parametrize("block", [1, 3, 4, 1000])
def test_csv_read_in_blocks_gives_the_same_catalogue(tmp_path: Path, monkeypatch, block) -> None:
    """Blocks of 1, 3 (a partial last block), 4 (an exact multiple: no empty block) and more
    rows than the file: the same arrays, and a ragged row is still named by its number."""
    rows = {k: v * 3 for k, v in ROWS.items()}                 # 12 rows
    rows["OBSID"] = list(range(1, 13))
    path = _write_csv(tmp_path / "cat.csv", rows)
    monkeypatch.setattr(lamost_catalog, "CSV_BLOCK_ROWS", 1000)
    whole = lamost_catalog.read(path, root="/data")
    monkeypatch.setattr(lamost_catalog, "CSV_BLOCK_ROWS", block)
    cat = lamost_catalog.read(path, root="/data")
    assert len(cat) == 12 and list(cat.obsid) == list(range(1, 13))
    for name in ("ra", "dec", "teff", "rv"):
        np.testing.assert_array_equal(getattr(cat, name), getattr(whole, name))
    assert cat.path.tolist() == whole.path.tolist() and list(cat.class_) == list(whole.class_)
    assert cat.path.tolist()[4] == "/data/" + EXPECTED_NAMES[0]
    lines = path.read_text().splitlines()
    lines[9] = lines[9].rsplit(",", 1)[0]                    # data row 8 loses a field
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError, match="in data row 8"):
        lamost_catalog.read(path)
