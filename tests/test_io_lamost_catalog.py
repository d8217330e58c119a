"""LAMOST LASP-style catalogue reader: FITS and CSV, path building, missing values, selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from csstflux.errors import InputFormatError, TruncatedFileError
from csstflux.io import lamost_catalog, registry
from csstflux.io.lamost_catalog import Catalog

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
    assert "lamost_catalog" not in registry.READER_MODULES
