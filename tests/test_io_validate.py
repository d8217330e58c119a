"""Input checks on LAMOST files written in the real formats, and on the real files.

Per-arm S/N (header SNRG/SNRR, else the data), a broken arm (the junction at 5800 Å), the
wavelength row against the header WCS (COEFF0/COEFF1, CRVAL1/CD1_1/CDELT1, DC-FLAG), rows'
sky positions and non-positive SED pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lamost_files import COEFF0, COEFF1, N_PIX, WAVE, write

from csstflux.containers import Spectrum
from csstflux.grids import BANDS, OUTPUT_GRID
from csstflux.io import validate as quality
from csstflux.io.fits.lamost_writer import write_lrs
from csstflux.io.formats import lamost

REAL = ("spec-55859-F5902_sp01-001_dr7.fits.gz", "spec-55859-F5902_sp01-013_dr8.fits.gz",
        "spec-57287-KP193637N444141V03_sp10-161.fits.gz",
        "spec-58397-EG014118N254444M01_sp03-031.fits")
MIN_SNR = 20.0


@pytest.fixture(params=["image", "coadd"])
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the real files pass -------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_real_files_pass_every_input_check(shared_data: Path, name: str) -> None:
    s = lamost.read(shared_data / "lamost" / name)
    assert s.meta["wcs"] == "COEFF0/COEFF1"
    assert s.meta["wcs_mismatch_pixels"] < 0.002   # measured: 0.0014 on all four (float32 row)
    assert quality.bad_input_problems(s) == []
    blue, red = quality.junction_fluxes(s.wavelength, s.flux, s.mask)
    assert 0.8 < red / blue < 1.0                    # measured: 0.81-0.99
    arms = quality.arm_snr(s)
    assert (arms.blue, arms.red) == (s.meta["snrg"], s.meta["snrr"])
    assert arms.blue_source == "header SNRG" and arms.red_source == "header SNRR"
    # the data agree with the header's S/N to 20 % (the arms are not LAMOST's g and r bands)
    data = quality.arm_snr_from_data(s.wavelength, s.flux, s.error, s.mask)
    np.testing.assert_allclose([data["blue"], data["red"]], [arms.blue, arms.red], rtol=0.2)


def test_real_low_snr_files_are_named(shared_data: Path) -> None:
    """DR7 sp01-001: SNRG 12.22 (blue low); DR8 sp01-013: SNRG 5.56, SNRR 8.79 (both)."""
    dr7 = quality.arm_snr(lamost.read(shared_data / "lamost" / REAL[0]))
    assert dr7.low(MIN_SNR) == ["blue arm S/N 12.2 (header SNRG) below 20"]
    dr8 = quality.arm_snr(lamost.read(shared_data / "lamost" / REAL[1]))
    assert dr8.low(MIN_SNR) == ["blue arm S/N 5.6 (header SNRG) below 20",
                                "red arm S/N 8.8 (header SNRR) below 20"]


def test_real_file_crval_keys_give_the_same_mismatch(shared_data: Path, tmp_path: Path) -> None:
    """Without COEFF0/COEFF1 the reader uses CRVAL1/CD1_1/CRPIX1/DC-FLAG (also in the file)."""
    import fitsio

    src = shared_data / "lamost" / REAL[0]
    rows = fitsio.read(src, ext=0)
    header = {r["name"]: (r["value"], r.get("comment")) for r in fitsio.read_header(src).records()
              if r["name"] not in (None, "COMMENT", "HISTORY", "")}
    header.update(COEFF0=None, COEFF1=None)   # None: left out, not filled in
    out = write_lrs(tmp_path / "spec.fits", rows[2], rows[0], rows[1], rows[3].astype(np.int32),
                    rows[4].astype(np.int32), header)
    s = lamost.read(out)
    assert s.meta["wcs"] == "CRVAL1/CD1_1"
    assert s.meta["wcs_mismatch_pixels"] == pytest.approx(0.0014, abs=2e-4)


# --- the wavelength row against the header WCS -----------------------------------------------

@pytest.mark.parametrize(("scale", "pixels"), [(1.05, 211.89), (1.0, 0.0)])
def test_wcs_mismatch_both_layouts(tmp_path: Path, layout: str, scale: float,
                                   pixels: float) -> None:
    """A row 5 % off its header grid is log10(1.05) / 1e-4 = 211.9 pixels off."""
    path = write(tmp_path / "spec.fits.gz", layout=layout, wave=WAVE * scale,
                 header={"COEFF0": COEFF0, "COEFF1": COEFF1})
    s = lamost.read(path)
    assert s.meta["wcs"] == "COEFF0/COEFF1"
    assert s.meta["wcs_mismatch_pixels"] == pytest.approx(pixels, abs=0.01)
    problems = quality.wcs_problems(s)
    if pixels:
        assert problems == ["wavelength row disagrees with the header WCS (COEFF0/COEFF1) by "
                            "up to 212 pixels (allowed 0.1)"]
        assert quality.bad_input_problems(s) == problems
    else:
        assert problems == [] and quality.bad_input_problems(s) == []


@pytest.mark.parametrize(("shift", "flagged"), [(0.05, False), (0.09, False), (0.11, True),
                                                 (0.5, True)])
def test_sub_pixel_shifts(tmp_path: Path, shift: float, flagged: bool) -> None:
    """A row shifted by ``shift`` pixels: fine up to 0.1 pixel, reported beyond."""
    path = write(tmp_path / "spec.fits", wave=10 ** (COEFF0 + COEFF1 * (np.arange(N_PIX) + shift)),
                 header={"COEFF0": COEFF0, "COEFF1": COEFF1})
    s = lamost.read(path)
    assert s.meta["wcs_mismatch_pixels"] == pytest.approx(shift, abs=0.002)
    assert bool(quality.wcs_problems(s)) is flagged


def test_crval_cdelt_linear_and_log(tmp_path: Path) -> None:
    """CRVAL1 with CDELT1, log10 by DC-FLAG = 1 or, without DC-FLAG, by its value; linear with
    DC-FLAG = 0 and CRPIX1 honoured. (None: the writer leaves COEFF0/COEFF1 out.)"""
    no_coeff = {"COEFF0": None, "COEFF1": None}
    for dc in ({"DC-FLAG": 1}, {}):
        s = lamost.read(write(tmp_path / "a.fits", header={
            **no_coeff, "CRVAL1": COEFF0 - 2 * COEFF1, "CDELT1": COEFF1, "CRPIX1": -1, **dc}))
        assert s.meta["wcs"] == "CRVAL1/CDELT1" and s.meta["wcs_mismatch_pixels"] < 0.002
    lin_wave = np.linspace(3700.0, 9100.0, N_PIX)
    step = lin_wave[1] - lin_wave[0]
    lin = write(tmp_path / "b.fits", wave=lin_wave,
                header={"CRVAL1": 3700.0 + 10 * step, "CD1_1": step, "CRPIX1": 11, "DC-FLAG": 0})
    s = lamost.read(lin)
    assert s.meta["wcs"] == "CRVAL1/CD1_1" and s.meta["wcs_mismatch_pixels"] < 1e-3
    off = write(tmp_path / "c.fits", wave=lin_wave,
                header={"CRVAL1": 3700.0 + 3 * step, "CD1_1": step, "DC-FLAG": 0})
    assert lamost.read(off).meta["wcs_mismatch_pixels"] == pytest.approx(3.0, abs=1e-3)


def test_no_wcs_keys_is_accepted(tmp_path: Path) -> None:
    """A row that is not log-linear gets no solution from the writer; the reader notes it."""
    path = write(tmp_path / "spec.fits", wave=np.linspace(3700.0, 9100.0, N_PIX))
    s = lamost.read(path)
    assert s.meta["wcs"] is None and s.meta["wcs_mismatch_pixels"] is None
    assert quality.wcs_problems(s) == [] and quality.bad_input_problems(s) == []


# --- arms -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scale", "broken"), [(1.0, False), (0.5, False), (2.5, False),
                                                (0.2, True), (4.0, True), (-1.0, True)])
def test_broken_arm(tmp_path: Path, layout: str, scale: float, broken: bool) -> None:
    s = lamost.read(write(tmp_path / "spec.fits", layout=layout, red_scale=scale))
    blue, red = quality.junction_fluxes(s.wavelength, s.flux, s.mask)
    assert red / blue == pytest.approx(scale, rel=0.03)   # the continuum is smooth at 5800 Å
    problems = quality.broken_arm_problems(s)
    assert bool(problems) is broken
    if scale < 0:
        assert problems == [f"red arm continuum not positive (median flux "
                            f"{quality.window_median(s.wavelength, s.flux, s.mask, 5800, 7000):.4g}"
                            " in 5800-7000 A)"]
    elif broken:
        assert f"red/blue {red / blue:.3g}, allowed 0.333-3" in problems[0]
        assert problems == quality.bad_input_problems(s)


def test_junction_without_pixels_is_not_judged(tmp_path: Path) -> None:
    s = lamost.read(write(tmp_path / "spec.fits", red_scale=0.1))
    hole = (s.wavelength > 5795) & (s.wavelength < 5905)
    masked = Spectrum(s.wavelength, s.flux, s.error, s.mask | hole, s.meta)
    assert np.isnan(quality.junction_fluxes(masked.wavelength, masked.flux, masked.mask)[1])
    assert quality.broken_arm_problems(masked) == []


@pytest.mark.parametrize(("snr", "low"), [((50, 50), []), ((50, 8.8), ["red"]),
                                           ((12, 40), ["blue"]), ((5, 5), ["blue", "red"])])
def test_arm_snr_from_header_and_data(tmp_path: Path, layout: str, snr: tuple[float, float],
                                      low: list[str]) -> None:
    with_keys = lamost.read(write(tmp_path / "a.fits", layout=layout, snr=snr))
    arms = quality.arm_snr(with_keys)
    assert (arms.blue, arms.red) == snr
    assert [m.split()[0] for m in arms.low(MIN_SNR)] == low
    without = lamost.read(write(tmp_path / "b.fits", layout=layout, snr=snr, snr_keys=False))
    arms = quality.arm_snr(without)
    assert arms.blue_source == arms.red_source == "data"
    # median flux/σ of noisy pixels: within 3 % of the S/N made (1.7 % for noise alone)
    assert arms.blue == pytest.approx(snr[0], rel=0.03)
    assert arms.red == pytest.approx(snr[1], rel=0.03)
    assert [m.split()[0] for m in arms.low(MIN_SNR)] == low


def test_window_median_batch_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(2)
    flux = rng.normal(100, 10, (5, N_PIX))
    mask = rng.uniform(size=(5, N_PIX)) < 0.3
    mask[3, (WAVE >= 5000) & (WAVE < 5100)] = True   # a window with no good pixel
    batch = quality.window_median(WAVE, flux, mask, 5000, 5100)
    one = [float(quality.window_median(WAVE, flux[i], mask[i], 5000, 5100)) for i in range(5)]
    np.testing.assert_array_equal(batch, one)
    assert np.isnan(batch[3]) and np.isfinite(np.delete(batch, 3)).all()
    sel = (WAVE >= 5000) & (WAVE < 5100) & ~mask[0]
    assert batch[0] == np.median(flux[0, sel])



def test_batch_checks_equal_one_at_a_time(tmp_path: Path) -> None:
    """Coverage, broken arms and window medians of a batch, each row with its own (shifted)
    wavelength row or one row for all, are what each spectrum gets alone."""
    specs = [lamost.read(write(tmp_path / f"s{k}.fits", red_scale=scale, snr=snr, seed=k))
             for k, (scale, snr) in enumerate([(1.0, (50, 50)), (5.0, (50, 50)),
                                               (0.2, (30, 8)), (1.0, (5, 5)), (-1.0, (50, 50))])]
    rng = np.random.default_rng(3)
    for k, s in enumerate(specs):
        s.mask[rng.uniform(size=s.mask.size) < 0.1 * k] = True
    specs[3].mask[(specs[3].wavelength > 4500) & (specs[3].wavelength < 6000)] = True
    shifted = np.stack([s.wavelength * (1 + 2e-3 * k) for k, s in enumerate(specs)])
    flux = np.stack([s.flux for s in specs])
    mask = np.stack([s.mask for s in specs])
    for wave in (shifted, specs[0].wavelength):
        batch_cov = quality.coverage_problems_batch(wave, mask, 4000.0, 7000.0)
        batch_arm = quality.broken_arm_problems_batch(wave, flux, mask)
        batch_med = quality.window_median(wave, flux, mask, 5000.0, 5100.0)
        for k, s in enumerate(specs):
            w = wave[k] if wave.ndim == 2 else wave
            one = Spectrum(wavelength=w, flux=s.flux, error=s.error, mask=s.mask, meta={})
            assert batch_cov[k] == quality.coverage_problems(one, 4000.0, 7000.0)
            assert batch_arm[k] == quality.broken_arm_problems(one)
            np.testing.assert_array_equal(batch_med[k],
                                          quality.window_median(w, s.flux, s.mask, 5000, 5100))
    assert any(batch_cov) and any(batch_arm) and not all(batch_arm)

# --- sky positions and predicted SEDs ------------------------------------------------------

def test_has_sky_position() -> None:
    ra = np.array([0.0, 359.999, 360.0, 400.0, -0.1, np.nan, 10.0, 10.0, 10.0, 10.0])
    dec = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 90.0, -90.0, -95.0, np.nan])
    np.testing.assert_array_equal(quality.has_sky_position(ra, dec),
                                  [1, 1, 0, 0, 0, 0, 1, 1, 0, 0])


def test_mask_nonpositive_sed_inside_and_outside_bands() -> None:
    w = OUTPUT_GRID.wavelength
    sed = np.ones((4, OUTPUT_GRID.n), np.float32)
    err = np.full_like(sed, 0.01)
    outside = np.flatnonzero(w < BANDS["GU"].lo)       # 2500-2545 Å: outside every band
    assert outside.size == 8 and w[outside].max() < 2550
    sed[1, outside[:3]] = -0.01
    sed[2, np.flatnonzero(BANDS["GI"].mask(w))[5]] = 0.0
    sed[3, 0] = np.nan                                  # non-finite: not this check's business
    s, e, n, in_band = quality.mask_nonpositive_sed(sed, err, w)
    np.testing.assert_array_equal(n, [0, 3, 1, 0])
    np.testing.assert_array_equal(in_band, [False, False, True, False])
    assert np.isnan(s[1, outside[:3]]).all() and np.isnan(e[1, outside[:3]]).all()
    assert np.isnan(s).sum() == 5 and s.dtype == np.float32
    assert (sed[1, outside[:3]] < 0).all()              # the input is left alone


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, OUTPUT_GRID.n - 1), max_size=20))
def test_masked_count_and_band_flag(pixels: list[int]) -> None:
    sed = np.ones((1, OUTPUT_GRID.n))
    sed[0, pixels] = -1.0
    _, _, n, in_band = quality.mask_nonpositive_sed(sed, sed * 0.1)
    assert n[0] == len(set(pixels))
    assert in_band[0] == any(quality.in_bands(OUTPUT_GRID.wavelength[p]) for p in pixels)


def test_missing_header_snr_falls_back_to_the_data(tmp_path: Path) -> None:
    """LASP's -9999 in SNRR is no S/N: the red arm's comes from the data."""
    s = lamost.read(write(tmp_path / "a.fits", snr=(50.0, 8.0),
                          header={"SNRG": 50.0, "SNRR": -9999.0}))
    arms = quality.arm_snr(s)
    assert arms.blue_source == "header SNRG" and arms.red_source == "data"
    assert arms.red == pytest.approx(8.0, rel=0.03)
    assert arms.low(MIN_SNR) == [f"red arm S/N {arms.red:.1f} (data) below 20"]
