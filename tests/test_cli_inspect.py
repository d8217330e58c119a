"""``csstflux inspect`` on real files, a library directory and broken files."""

import gzip
import json

import pytest
from click.testing import CliRunner
from lamost_files import COEFF0, COEFF1, WAVE, write

from csstflux.cli.main import cli


@pytest.fixture(scope="module")
def lamost_dir(shared_data):
    return shared_data / "lamost"


def run(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def test_inspect_real_lamost_json(lamost_dir):
    paths = sorted(lamost_dir.glob("spec-*"))
    res = run(*paths, "--json")
    assert res.exit_code == 0, res.output
    reports = json.loads(res.stdout)
    assert [r["format"] for r in reports] == ["lamost-lrs"] * 4
    dr7 = next(r for r in reports if r["path"].endswith("sp01-001_dr7.fits.gz"))
    assert dr7["metadata"]["obsid"] == 101001
    assert dr7["n_pix"] == 3908
    lo, hi = dr7["wavelength_range"]
    assert lo == pytest.approx(10**3.5682, rel=1e-5) and hi > 9000
    assert dr7["problems"] == []


def test_inspect_library_dir(shared_data):
    res = run(shared_data / "miles", "--json")
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout)
    assert r["format"] == "miles" and r["kind"] == "library"
    assert r["metadata"]["n_star"] == 787


def test_inspect_refuses_mrs_and_bad_files(lamost_dir, tmp_path):
    good = next(lamost_dir.glob("spec-55859-F5902_sp01-001_dr7.fits.gz"))
    mrs = next(lamost_dir.glob("med-*.fits"))
    empty = tmp_path / "spec-1-x_sp01-001.fits"
    empty.write_bytes(b"")
    trunc = tmp_path / "spec-2-x_sp01-002.fits.gz"
    raw = gzip.decompress(good.read_bytes())
    trunc.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    res = run(good, mrs, empty, trunc, text)
    assert res.exit_code == 1
    assert "medium-resolution" in res.output
    assert "empty" in res.output
    assert "shorter than its header promises" in res.output
    assert "no reader recognises" in res.output
    assert "4 of 5 file(s) unreadable" in res.output


def test_inspect_reports_coverage_problem(lamost_dir, tmp_path):
    import numpy as np
    from astropy.io import fits

    good = next(lamost_dir.glob("spec-57287-*.fits.gz"))
    with fits.open(good) as hdul:
        data = hdul[0].data.copy()
        header = hdul[0].header.copy()
    data[1, data[2] > 5000] = 0.0  # ivar 0 above 5000 Å: those pixels are masked
    out = tmp_path / good.name.replace(".gz", "")
    fits.PrimaryHDU(data.astype(np.float32), header).writeto(out)
    res = run(out, "--json")
    assert res.exit_code == 0
    (r,) = json.loads(res.stdout)
    assert any("4000" in p and "7000" in p for p in r["problems"]), r["problems"]


def test_inspect_no_good_pixels_is_unusable(tmp_path):
    """Every pixel masked (ivar 0): exit 1, the problem printed, never "[ok]"."""
    import numpy as np
    from astropy.io import fits

    path = write(tmp_path / "spec-1-x_sp01-001.fits")
    with fits.open(path) as hdul:
        data = hdul[0].data.copy()
        header = hdul[0].header.copy()
    data[1] = 0.0
    fits.PrimaryHDU(data.astype(np.float32), header).writeto(path, overwrite=True)
    res = run(path)
    assert res.exit_code == 1
    assert "[UNUSABLE]" in res.output and "[ok]" not in res.output
    assert "problem: no good pixels" in res.output and "no good pixels" in res.output
    assert "1 of 1 file(s) unreadable, unsupported or without a good pixel" in res.output
    (r,) = json.loads(run(path, "--json").stdout)
    assert r["ok"] is False and r["problems"] == ["no good pixels"]


def test_inspect_lists_input_problems(lamost_dir, tmp_path):
    """A wavelength row 5 % off its WCS and a broken arm: readable, listed, exit 0; the real
    files have none (their mismatch and per-arm S/N are shown)."""
    wcs = write(tmp_path / "spec-1-x_sp01-001.fits", wave=WAVE * 1.05,
                header={"COEFF0": COEFF0, "COEFF1": COEFF1})
    arm = write(tmp_path / "spec-1-x_sp01-002.fits", red_scale=0.2)
    res = run(wcs, arm)
    assert res.exit_code == 0, res.output
    assert res.output.count("[problems]") == 2
    assert "by up to 212 pixels (allowed 0.1)" in res.output and "red/blue 0.19" in res.output
    res = run(*sorted(lamost_dir.glob("spec-*")))
    assert res.exit_code == 0 and res.output.count("[ok]") == 4, res.output
    (r,) = json.loads(run(lamost_dir / "spec-57287-KP193637N444141V03_sp10-161.fits.gz",
                          "--json").stdout)
    assert r["metadata"]["wcs"] == "COEFF0/COEFF1"
    assert r["metadata"]["wcs_mismatch_pixels"] < 0.002
    assert (r["metadata"]["snr_blue_arm"], r["metadata"]["snr_red_arm"]) == (87.63, 128.48)
