"""``csstflux vet-library`` and ``build-emulator`` on a subset of the real MILES library."""

import csv
import json

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from csstflux.cli.main import cli
from csstflux.io import read
from csstflux.library.emulator import load_emulator


@pytest.fixture(scope="module")
def miles_subset(shared_data, tmp_path_factory):
    """120 MILES stars inside 5000-9750 K, one of them given a 40 % colour tilt."""
    src = shared_data / "miles"
    lib = read(src)
    ok = np.isfinite(lib.feh) & (lib.teff >= 5000) & (lib.teff <= 9750)
    names = lib.names[ok][:120]
    out = tmp_path_factory.mktemp("miles")
    (out / "paramsMILES_v9.1.txt").symlink_to(src / "paramsMILES_v9.1.txt")
    for n in names:
        (out / f"MILES_res2.50_star_{n}V.fits").symlink_to(src / f"MILES_res2.50_star_{n}V.fits")
    victim = names[10]
    target = out / f"MILES_res2.50_star_{victim}V.fits"
    with fits.open(src / target.name) as hdul:
        hdr = hdul[0].header.copy()
        flux = hdul[0].data.astype(np.float64)
    lam = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(flux.size)
    target.unlink()
    fits.PrimaryHDU((flux * (lam / 5500.0) ** 1.5).astype(np.float32), hdr).writeto(target)
    return out, names, victim


def test_vet_library_rejects_tilted_star(miles_subset, tmp_path):
    directory, names, victim = miles_subset
    res = CliRunner().invoke(cli, ["vet-library", "--library", "miles", str(directory),
                                   "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_input"] == len(names)
    assert summary["n_kept"] + summary["n_rejected"] == len(names)
    assert set(summary["hyperparameters"]) == {"sigma_f", "sigma_n", "length_scale"}
    kept = (tmp_path / "kept.txt").read_text().split()
    with (tmp_path / "rejected.csv").open() as fh:
        rejected = {row["name"]: row for row in csv.DictReader(fh)}
    assert len(kept) == summary["n_kept"] and len(rejected) == summary["n_rejected"]
    assert victim in rejected and victim not in kept
    assert rejected[victim]["reason"] == "GP RMSAE above 0.05"
    assert float(rejected[victim]["rmsae"]) > 0.05


def test_vet_library_generic_matches_miles(miles_subset, tmp_path):
    """The same stars vetted through ``--library generic`` (air, FWHM from the header,
    parameters from a CSV) keep and reject exactly the stars ``--library miles`` does."""
    from csstflux.io.formats import miles

    directory, names, victim = miles_subset
    table = miles.read_params(directory / "paramsMILES_v9.1.txt")
    params = tmp_path / "params.csv"
    params.write_text("name,teff,logg,feh\n" + "".join(
        f"MILES_res2.50_star_{n}V,{table[int(n[1:])]['teff']},{table[int(n[1:])]['logg']},"
        f"{table[int(n[1:])]['feh']}\n" for n in names))
    runner = CliRunner()
    ref = runner.invoke(cli, ["vet-library", "--library", "miles", str(directory),
                              "--out", str(tmp_path / "m"), "--json"])
    gen = runner.invoke(cli, ["vet-library", "--library", "generic", str(directory),
                              "--medium", "air", "--params", str(params),
                              "--out", str(tmp_path / "g"), "--json"])
    assert ref.exit_code == 0 and gen.exit_code == 0, gen.output
    assert json.loads(gen.stdout) == json.loads(ref.stdout)
    kept = (tmp_path / "g" / "kept.txt").read_text().split()
    assert [k.split("_star_")[1][:-1] for k in kept] == \
        (tmp_path / "m" / "kept.txt").read_text().split()
    assert victim not in " ".join(kept)
    # the generic options belong to --library generic
    res = runner.invoke(cli, ["vet-library", "--library", "miles", str(directory),
                              "--medium", "air", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--library generic only" in res.output


@pytest.mark.slow
def test_build_emulator_reports_holdout(miles_subset, tmp_path):
    directory, _, _ = miles_subset
    out = tmp_path / "emu.npz"
    res = CliRunner().invoke(cli, ["build-emulator", str(directory), "--out", str(out),
                                   "--n-components", "20", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["holdout"]["rms_at"]) == {"4000", "5000", "6000", "7000"}
    assert all(0 < v < 0.05 for v in report["holdout"]["rms_at"].values())
    emu = load_emulator(out)
    assert emu.components.shape[0] == 20
    x = emu.gp.x_train[:3] * emu.gp.x_scale + emu.gp.x_mean  # training stars' parameters
    flux, ok, _ = emu(x[:, 0], x[:, 1], x[:, 2])
    assert ok.all() and np.all((np.median(flux, axis=1) > 0.5) & (np.median(flux, axis=1) < 1.1))
    outside, ok_out, _ = emu(np.array([20000.0]), np.array([4.0]), np.array([0.0]))
    assert not ok_out[0]
