"""Passband registry: names, magnitude systems and offsets, CSST curves, air/vacuum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from csstflux.airvac import air_to_vacuum
from csstflux.errors import ConfigError
from csstflux.photometry.bands import KNOWN_BANDS, PhotBand, load_bands, parse_band_list
from csstflux.photometry.synth import SyntheticPhotometry

SPECLITE = [n for n, s in KNOWN_BANDS.items() if s.source == "speclite"]
CSST = [n for n, s in KNOWN_BANDS.items() if s.source == "csst"]


def test_registry_has_every_named_band() -> None:
    expected = ([f"sdss_{b}" for b in "ugriz"] + [f"ps1_{b}" for b in "grizy"]
                + ["gaia_G", "gaia_BP", "gaia_RP", "galex_FUV", "galex_NUV"]
                + [f"csst_{b}" for b in ("nuv", "u", "g", "r", "i", "z", "y")])
    assert sorted(KNOWN_BANDS) == sorted(expected)


def test_parse_band_list() -> None:
    assert parse_band_list("sdss_u,sdss_g") == ("sdss_u", "sdss_g")
    assert parse_band_list(" GAIA_g , ps1_Y,sdss_u,,sdss_u ") == ("gaia_G", "ps1_y", "sdss_u")


@pytest.mark.parametrize(("bad", "nearest"), [("sdss_gg", "sdss_g"), ("csst_nvu", "csst_nuv"),
                                              ("gaia_BPP", "gaia_BP"), ("galex_nu", "galex_NUV")])
def test_unknown_band_names_the_nearest(bad: str, nearest: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown photometric band '{bad}'.*'{nearest}'"):
        parse_band_list(f"sdss_r,{bad}")
    with pytest.raises(ConfigError, match=f"'{nearest}'"):
        load_bands([bad])


def test_empty_band_list_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_band_list(" , ")


def test_gaia_offsets_are_the_published_zero_point_differences() -> None:
    # Riello et al. 2021, A&A 649, A3, Table 3: (AB, Vega) zero points
    zp = {"G": (25.8010, 25.6874), "BP": (25.3540, 25.3385), "RP": (25.1040, 24.7479)}
    for band, (ab, vega) in zp.items():
        (b,) = load_bands([f"gaia_{band}"])
        assert b.system == "Vega"
        assert b.ab_offset == pytest.approx(ab - vega, abs=1e-9)


def test_sdss_and_other_offsets() -> None:
    offsets = {b.name: b.ab_offset for b in load_bands([f"sdss_{x}" for x in "ugriz"])}
    assert offsets == {"sdss_u": -0.04, "sdss_g": 0.0, "sdss_r": 0.0, "sdss_i": 0.0,
                       "sdss_z": 0.02}
    for name in [f"ps1_{x}" for x in "grizy"] + ["galex_FUV", "galex_NUV"] + CSST:
        assert KNOWN_BANDS[name].system == "AB" and KNOWN_BANDS[name].ab_offset == 0.0


def test_speclite_curves_are_valid_and_in_angstrom() -> None:
    bands = load_bands(SPECLITE)
    for b in bands:
        assert np.all(np.diff(b.wavelength) > 0) and np.all(b.response >= 0)
        assert b.response[0] == 0.0 and b.response[-1] == 0.0   # trimmed to one zero each side
        assert b.response[1] > 0 and b.response[-2] > 0
        assert not b.wavelength.flags.writeable
    centre = {b.name: np.sum(b.wavelength * b.response) / np.sum(b.response) for b in bands}
    # pivot-like centres in Å (PS1 ships in nm in the file; speclite converts)
    assert 4600 < centre["ps1_g"] < 5100 and 9400 < centre["ps1_y"] < 9900
    assert 3400 < centre["sdss_u"] < 3700 and 6100 < centre["gaia_G"] < 6700


def test_csst_band_without_folder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--csst-filters"):
        load_bands(["sdss_g", "csst_g"])


def _write_cess(path: Path, wave: np.ndarray, sens: np.ndarray) -> None:
    cols = [fits.Column("WAVELENGTH", "D", unit="Angstrom", array=wave),
            fits.Column("SENSITIVITY", "D", array=sens)]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)


def test_csst_curves_read_from_a_folder(tmp_path: Path) -> None:
    wave = np.arange(4000.0, 5600.0, 30.0)
    sens = 0.6 * np.exp(-(((wave - 4800.0) / 400.0) ** 2))   # non-zero at the red end, as CESS
    sens[:3] = 0.0
    _write_cess(tmp_path / "csst_phot.g.fits", wave, sens)
    (b,) = load_bands(["csst_g"], csst_dir=tmp_path)
    assert b.name == "csst_g" and b.system == "AB"
    assert b.wavelength[0] == wave[2] and b.response[0] == 0.0 and b.response[1] > 0
    np.testing.assert_array_equal(b.response[1:], sens[3:])


def test_real_csst_curves(shared_data: Path) -> None:
    d = shared_data / "csst" / "csst_phot_tp"
    if not d.is_dir():
        pytest.skip("no CSST imaging curves")
    bands = load_bands(CSST, csst_dir=d)
    edges = [(b.wavelength[0], b.wavelength[-1]) for b in bands]
    assert [round(lo, -2) for lo, _ in edges] == [2500, 3000, 3900, 5400, 6800, 8300, 9100]


def test_photband_validates() -> None:
    w = np.array([4000.0, 5000.0, 6000.0])
    with pytest.raises(ValueError, match="response"):
        PhotBand("x", w, np.array([0.0, -1.0, 0.0]), "AB", 0.0, "")
    with pytest.raises(ValueError, match="increasing"):
        PhotBand("x", w[::-1], np.array([0.0, 1.0, 0.0]), "AB", 0.0, "")
    with pytest.raises(ValueError, match="system"):
        PhotBand("x", w, np.array([0.0, 1.0, 0.0]), "ST", 0.0, "")


def test_air_to_vacuum_shift_is_below_the_documented_bound() -> None:
    """Module docstring: treating the ground-based curves as air and moving them to vacuum
    changes a 6000 K blackbody by ≤ 1.1 mmag (sdss_u), ≤ 0.65 mmag in g."""
    names = [f"sdss_{x}" for x in "ugriz"] + [f"ps1_{x}" for x in "grizy"]
    bands = load_bands(names)
    shifted = [PhotBand(b.name, air_to_vacuum(b.wavelength), b.response, b.system, b.ab_offset,
                        b.reference) for b in bands]
    sp, sv = SyntheticPhotometry.from_bands(bands), SyntheticPhotometry.from_bands(shifted)
    w = sp.wavelength[:sp.n_grid]
    sed = 1e20 / w**5 / np.expm1(1.438777e8 / (w * 6000.0))
    diff = np.abs(sv.ab_mags(sed) - sp.ab_mags(sed))
    assert np.all(diff < 1.2e-3)
    assert diff[names.index("sdss_u")] > 0.5e-3   # the shift is real, just small
    assert np.all(diff[[names.index("sdss_g"), names.index("ps1_g")]] < 0.65e-3)
