"""Library verification (§4.3) on a tiny generic-FITS library written here: exact statistics
with a fake predictor, and ``csstflux verify-library`` with a tiny model against a hand
computation of the per-star RMSAE."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_stars import write_generic_library

from csstflux.cli.main import cli
from csstflux.errors import ConfigError
from csstflux.grids import BANDS, OUTPUT_GRID, VERIFY_WAVELENGTHS
from csstflux.io.formats import generic_fits
from csstflux.library.prepare import library_inputs, library_targets
from csstflux.model.predictor import fill_masked
from csstflux.model.verify import verify_library

STARS = {"s5800": 5800.0, "s6500": 6500.0, "s7400": 7400.0, "s4000": 4000.0, "s9000": 9000.0}


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory):
    """Five blackbody-like stars with a few absorption lines, 3500–7500 Å, FWHM 2.5 Å."""
    d = write_generic_library(tmp_path_factory.mktemp("lib"), STARS)
    (d.parent / "params.csv").write_text("name,teff,logg,feh\n" + "".join(
        f"{n},{t},4.0,0.0\n" for n, t in STARS.items()))
    return d


class TargetsTimes:
    """Returns the stars' own targets × (1 + offset), with sed_err = rel_err · sed."""

    def __init__(self, targets, offset, rel_err):
        self.targets, self.offset, self.rel_err = targets, offset, rel_err
        self.inputs = None

    def __call__(self, x, e):
        self.inputs = (np.asarray(x), np.asarray(e))
        sed = np.where(np.isfinite(self.targets), self.targets, 1.0) * (1.0 + self.offset)
        return sed, self.rel_err * sed


def test_exact_statistics_with_a_fake_predictor(library_dir):
    lib = generic_fits.read(library_dir, params=library_dir.parent / "params.csv")
    sed, mask, _ = library_targets(lib)
    keep = (lib.teff >= 5000) & (lib.teff <= 9750)
    offset = np.array([0.01, -0.02, 0.03, 0.04])[:, None]
    fake = TargetsTimes(sed[keep], offset, 0.025)
    res = verify_library(fake, lib, snr=50.0, teff_range=(5000.0, 9750.0))
    assert res.n_stars == 4 and res.left_out["teff"] == ["s4000"]
    np.testing.assert_allclose(res.rmsae, np.abs(offset[:, 0]), rtol=1e-6)
    # |offset| < 0.025 for two of the four stars
    assert res.coverage == pytest.approx(0.5) and list(res.star_coverage) == [1, 1, 0, 0]
    # inputs: the stars' own normalised spectra, errors |flux| / SNR, no noise added
    flux, in_mask, _ = library_inputs(lib)
    x, e = fill_masked(flux[keep], np.abs(flux[keep]) / 50.0, in_mask[keep])
    np.testing.assert_array_equal(fake.inputs[0], x)
    np.testing.assert_array_equal(fake.inputs[1], e)
    s = res.summary()
    p16, p84 = np.percentile(offset[:, 0], [16, 84])
    for key in s["sigma_at"]:
        assert s["sigma_at"][key] == pytest.approx((p84 - p16) / 2, rel=1e-5)
        assert s["std_at"][key] == pytest.approx(np.std(offset), rel=1e-5)
        assert s["median_at"][key] == pytest.approx(np.median(offset), rel=1e-5)
    # 3600 Å: the nearest output pixel that the library covers, not outside it
    wl = OUTPUT_GRID.wavelength
    covered = wl[~mask[keep].any(axis=0)]
    assert res.at_pixel["3600"] == covered[np.argmin(np.abs(covered - 3600.0))]
    assert res.at_pixel["6000"] == wl[np.argmin(np.abs(wl - 6000.0))]
    assert s["median_rmsae"] == pytest.approx(0.025, rel=1e-5)
    # per band: r is each star's constant offset, so every band holds the same numbers
    assert list(s["bands"]) == list(BANDS) and s["domain"] is None
    wl = OUTPUT_GRID.wavelength
    for name, band in BANDS.items():
        b = s["bands"][name]
        assert b["median"] == pytest.approx(np.median(offset), rel=1e-5)
        assert b["sigma"] == pytest.approx((p84 - p16) / 2, rel=1e-5)
        assert b["std"] == pytest.approx(np.std(offset), rel=1e-5)
        assert b["coverage"] == pytest.approx(0.5)
        assert b["n_pixels"] == int((band.mask(wl) & ~mask[keep].all(axis=0)).sum())
    # every library star's input and Teff are kept, with which stars were verified
    np.testing.assert_array_equal(res.used, keep)
    np.testing.assert_array_equal(res.inputs, flux)
    np.testing.assert_array_equal(res.input_mask, in_mask)
    np.testing.assert_array_equal(res.input_teff, lib.teff)
    assert list(res.input_names[res.used]) == list(res.names)
    # a band without data is left out of the summary
    no_gi = dataclasses.replace(res, mask=res.mask | BANDS["GI"].mask(wl)[None, :])
    assert list(no_gi.bands) == ["GU", "GV"]


def test_vetting_needs_parameters(library_dir):
    lib = generic_fits.read(library_dir)
    fake = TargetsTimes(library_targets(lib)[0], 0.0, 0.01)
    with pytest.raises(ConfigError, match="cannot vet"):
        verify_library(fake, lib, vet_stars=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from csstflux.model.card import save_model
    from csstflux.model.network import build_uaranet

    d = tmp_path_factory.mktemp("vmodel")
    save_model(build_uaranet(seed=2), d / "m.keras")
    return d / "m.keras"


@pytest.mark.slow
def test_verify_library_command(library_dir, model_path, tmp_path):
    from csstflux.model.predictor import load_predictor

    params = library_dir.parent / "params.csv"
    runner = CliRunner()
    res = runner.invoke(cli, ["verify-library", "--model", str(model_path), "--library",
                              "generic", str(library_dir), "--out", str(tmp_path / "all"),
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_stars"] == len(STARS)                     # no --params: every readable star
    for key in ("sigma_at", "std_at"):
        assert list(out[key]) == [f"{w:g}" for w in VERIFY_WAVELENGTHS]
        assert all(isinstance(v, float) for v in out[key].values())
    assert isinstance(out["median_rmsae"], float) and 0 <= out["coverage"] <= 1
    res = runner.invoke(cli, ["verify-library", "--model", str(model_path), "--library",
                              "generic", str(library_dir), "--params", str(params), "--snr",
                              "40", "--out", str(tmp_path / "p"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_stars"] == 4 and out["n_left_out"]["teff"] == 1
    with (tmp_path / "p" / "stars.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["s5800", "s6500", "s7400", "s9000"]
    # hand computation of the RMSAE from the predictor's output
    lib = generic_fits.read(library_dir, params=params)
    keep = lib.teff >= 5000
    flux, in_mask, _ = library_inputs(lib)
    target, t_mask, _ = library_targets(lib)
    x, e = fill_masked(flux[keep], np.abs(flux[keep]) / 40.0, in_mask[keep])
    sed, _ = load_predictor(model_path)(x, e)
    for i, row in enumerate(rows):
        ok = ~t_mask[keep][i]
        r = sed[i][ok] / target[keep][i][ok] - 1.0
        assert float(row["rmsae"]) == pytest.approx(np.sqrt(np.mean(r**2)), rel=1e-5)
    assert out["median_rmsae"] == pytest.approx(
        np.median([float(r["rmsae"]) for r in rows]), rel=1e-5)
    assert (tmp_path / "p" / "residuals.png").stat().st_size > 0
    assert (tmp_path / "p" / "pixels.csv").exists()


def test_grid_ratio_is_the_library_against_ck04_at_the_stars_parameters():
    from csstflux.library.sed_grid import load_sed_grid
    from csstflux.library.sed_grid import median_ratio_to_grid as grid_ratio

    teff = np.array([5600.0, 6400.0, 7700.0, 60000.0])     # the last is outside the grid
    logg, feh = np.array([4.4, 4.0, 3.9, 4.0]), np.array([0.0, -0.4, -1.0, 0.0])
    g, inside = load_sed_grid()(teff, logg, feh)
    assert list(inside) == [True, True, True, False]
    wl = OUTPUT_GRID.wavelength
    tilt = np.array([0.02, 0.03, 0.05, 0.0])[:, None] * (wl / 5556.0 - 1.0)
    sed = np.where(np.isfinite(g), g, 1.0) * (1.0 + tilt) * 7.0       # any scale
    mask = np.zeros(sed.shape, bool)
    mask[:, wl < 3540] = True                                          # like MILES
    med, n = grid_ratio(sed / 7.0, mask, teff, logg, feh)
    assert n == 3
    assert np.all(np.isnan(med[wl < 3540]))
    np.testing.assert_allclose(med[wl >= 3540], np.median(tilt[:3], axis=0)[wl >= 3540],
                               atol=1e-12)
    assert grid_ratio(sed[3:], mask[3:], teff[3:], logg[3:], feh[3:]) == (None, 0)
