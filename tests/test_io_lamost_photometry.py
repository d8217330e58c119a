"""Input-catalogue photometry from LAMOST headers: the real DR6/DR7/DR9 files against astropy,
the rules on synthetic cards, and files written in both layouts read back."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st
from lamost_files import write

from csstflux.io.fits import decode
from csstflux.io.formats import lamost
from csstflux.io.formats.lamost_photometry import HEADER_BANDS, MAG_RANGE, header_photometry

DR7_UGRIZ = "spec-55859-F5902_sp01-001_dr7.fits.gz"
DR9_PS1 = "spec-55859-F5902_sp01-013_dr8.fits.gz"
DR6_KP = "spec-57287-KP193637N444141V03_sp10-161.fits.gz"
DR7_FIBERMAG = "spec-58397-EG014118N254444M01_sp03-031.fits"
MRS_G = "med-58408-TD230151N343645T01_sp01-015.fits"
SDSS = [f"sdss_{b}" for b in "ugriz"]
PS1 = [f"ps1_{b}" for b in "grizy"]


def _bands(mag: np.ndarray, names: list[str]) -> np.ndarray:
    return mag[[HEADER_BANDS.index(b) for b in names]]


def _cards(**values: object) -> dict[str, str]:
    """Raw header cards as the FITS decoder gives them: strings quoted, numbers as written."""
    return {k: f"'{v}'" if isinstance(v, str) else str(v) for k, v in values.items()}


@pytest.fixture
def lamost_dir(shared_data: Path) -> Path:
    return shared_data / "lamost"


def _astropy_header(path: Path) -> fits.Header:
    with fits.open(path) as hdul:
        return hdul[0].header.copy()


def _primary_cards(path: Path) -> dict[str, str]:
    return decode.head_cards(path, max_hdus=1)[0]


# --- real files ---------------------------------------------------------------------------------

def test_dr7_ugriz_gives_its_five_header_values(lamost_dir: Path) -> None:
    hdr = _astropy_header(lamost_dir / DR7_UGRIZ)
    assert hdr["MAGTYPE"] == "ugriz"
    mag, note = header_photometry(_primary_cards(lamost_dir / DR7_UGRIZ))
    assert mag.dtype == np.float32 and mag.shape == (len(HEADER_BANDS),)
    np.testing.assert_array_equal(_bands(mag, SDSS),
                                  np.float32([hdr[f"MAG{i}"] for i in range(1, 6)]))
    assert np.isnan(_bands(mag, PS1)).all()
    assert hdr["MAG6"] == hdr["MAG7"] == 99.0      # present in the header, not a band
    assert note == "MAGTYPE 'ugriz'"
    # the reader puts the same into meta, and so does the cheap header scan
    s = lamost.read(lamost_dir / DR7_UGRIZ)
    np.testing.assert_array_equal(s.meta["header_mag"], mag)
    assert s.meta["header_mag_note"] == note
    h = lamost.read_header(lamost_dir / DR7_UGRIZ)
    assert h is not None
    np.testing.assert_array_equal(h["header_mag"], mag)


def test_dr9_coadd_gives_its_ps1_values(lamost_dir: Path) -> None:
    hdr = _astropy_header(lamost_dir / DR9_PS1)
    assert "MAGTYPE" not in hdr
    s = lamost.read(lamost_dir / DR9_PS1)
    assert s.meta["release_format"] == "coadd"
    mag = s.meta["header_mag"]
    np.testing.assert_array_equal(_bands(mag, PS1),
                                  np.float32([hdr[f"MAG_PS_{b}"] for b in "GRIZY"]))
    assert np.isnan(_bands(mag, SDSS)).all()
    assert s.meta["header_mag_note"] == "MAG_PS_*"


@pytest.mark.parametrize(("name", "magtype"), [(DR6_KP, "Kp"), (DR7_FIBERMAG, "fibermagr")])
def test_magtypes_without_filters_give_nothing(lamost_dir: Path, name: str,
                                               magtype: str) -> None:
    hdr = _astropy_header(lamost_dir / name)
    assert hdr["MAGTYPE"] == magtype and MAG_RANGE[0] < hdr["MAG1"] < MAG_RANGE[1]
    s = lamost.read(lamost_dir / name)
    assert np.isnan(s.meta["header_mag"]).all()
    assert s.meta["header_mag_note"] == f"MAGTYPE '{magtype}': no known filter"


def test_mrs_header_single_g(lamost_dir: Path) -> None:
    """The medium-resolution file (refused by the reader) states MAGTYPE 'g': SDSS g only."""
    hdr = _astropy_header(lamost_dir / MRS_G)
    h = lamost.read_header(lamost_dir / MRS_G)
    assert h is not None and hdr["MAGTYPE"] == "g"
    expected = np.full(len(HEADER_BANDS), np.nan, np.float32)
    expected[HEADER_BANDS.index("sdss_g")] = hdr["MAG1"]
    np.testing.assert_array_equal(h["header_mag"], expected)


# --- rules, on synthetic cards --------------------------------------------------------------------

def test_sentinels_are_missing_without_a_note() -> None:
    mag, note = header_photometry(_cards(MAGTYPE="ugriz", MAG1=99.0, MAG2=99.99, MAG3=-9999,
                                         MAG4="", MAG5="nan", MAG6=16.0))
    assert np.isnan(mag).all() and note == "MAGTYPE 'ugriz'"


def test_out_of_range_dropped_with_note_odd_in_range_kept() -> None:
    # 24.58 in u for a 16th-magnitude star is odd but possible: rejecting it is the fit's job
    mag, note = header_photometry(_cards(MAGTYPE="ugriz", MAG1=24.58, MAG2=16.1, MAG3=3.2,
                                         MAG4=31.5, MAG5=30.0))
    np.testing.assert_array_equal(_bands(mag, SDSS), np.float32([24.58, 16.1, np.nan, np.nan,
                                                                 30.0]))
    assert note == ("MAGTYPE 'ugriz'; MAG3 = 3.2 outside 5-30 mag, dropped; "
                    "MAG4 = 31.5 outside 5-30 mag, dropped")


def test_gri_maps_to_g_r_i() -> None:
    mag, note = header_photometry(_cards(MAGTYPE="gri", MAG1=15.0, MAG2=14.5, MAG3=14.25,
                                         MAG4=13.0, MAG5=12.0))
    want = dict(zip(["sdss_g", "sdss_r", "sdss_i"], [15.0, 14.5, 14.25], strict=True))
    for band, value in zip(HEADER_BANDS, mag, strict=True):
        assert value == want[band] if band in want else np.isnan(value), band
    assert note == "MAGTYPE 'gri'"


@given(st.sets(st.sampled_from("ugriz"), min_size=1))
def test_any_sdss_subsequence_maps_in_order(letters: set[str]) -> None:
    magtype = "".join(c for c in "ugriz" if c in letters)
    values = {f"MAG{i + 1}": 10.0 + i for i in range(7)}
    mag, _ = header_photometry(_cards(MAGTYPE=magtype, **values))
    for i, c in enumerate(magtype):
        assert mag[HEADER_BANDS.index(f"sdss_{c}")] == np.float32(10.0 + i)
    assert np.count_nonzero(np.isfinite(mag)) == len(magtype)


@pytest.mark.parametrize("magtype", ["fibermagr", "Kp", "rg", "gg", "G", "UGRIZ", "ugrizy",
                                     "gaia"])
def test_other_magtypes_give_nothing(magtype: str) -> None:
    mag, note = header_photometry(_cards(MAGTYPE=magtype, MAG1=15.0, MAG2=15.0, MAG3=15.0))
    assert np.isnan(mag).all() and note == f"MAGTYPE {magtype!r}: no known filter"


def test_ps1_alongside_magtype_and_no_photometry() -> None:
    mag, note = header_photometry(_cards(MAGTYPE="Kp", MAG1=12.0, MAG_PS_G=17.0,
                                         MAG_PS_Y=99.0))
    np.testing.assert_array_equal(_bands(mag, PS1), np.float32([17.0, *[np.nan] * 4]))
    assert np.isnan(_bands(mag, SDSS)).all()
    assert note == "MAGTYPE 'Kp': no known filter; MAG_PS_*"
    mag, note = header_photometry(_cards(OBSID=1, MAG1=15.0))   # MAG without MAGTYPE
    assert np.isnan(mag).all() and note == "no photometry"


# --- written files, both layouts ---------------------------------------------------------------

@pytest.mark.parametrize(("layout", "suffix"),
                         list(itertools.product(("image", "coadd"), (".fits", ".fits.gz"))))
def test_written_headers_read_back(tmp_path: Path, layout: str, suffix: str) -> None:
    header = {"MAGTYPE": "ugriz", "MAG1": 18.78, "MAG2": 17.12, "MAG3": 16.42, "MAG4": 16.15,
              "MAG5": 15.97, "MAG6": 99.0, "MAG7": 99.0, "MAG_PS_G": 17.05, "MAG_PS_R": 16.5,
              "MAG_PS_I": 16.2, "MAG_PS_Z": 16.0, "MAG_PS_Y": 15.9}
    path = write(tmp_path / f"spec-1-x_sp01-001{suffix}", layout=layout, header=header)
    s = lamost.read(path)
    expected = np.float32([header[f"MAG{i}"] for i in range(1, 6)]
                          + [header[f"MAG_PS_{b}"] for b in "GRIZY"])
    np.testing.assert_array_equal(s.meta["header_mag"], expected)
    assert s.meta["header_mag_note"] == "MAGTYPE 'ugriz'; MAG_PS_*"
    h = lamost.read_header(path)
    assert h is not None and h["header_mag_note"] == s.meta["header_mag_note"]
    np.testing.assert_array_equal(h["header_mag"], expected)
