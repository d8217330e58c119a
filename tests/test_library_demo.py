"""The embedded demo release: real layout, readable files, truthful spectra, listed problems."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from csstflux.errors import InputFormatError
from csstflux.grids import INPUT_GRID, TEFF_DOMAIN
from csstflux.io import lamost, lamost_catalog, quality
from csstflux.library import demo
from csstflux.library.emulator import load_emulator
from csstflux.spectra import ResolutionWarning, prepare_input

N = 60
MIN_SNR = 20.0   # the pipeline's LOW_SNR threshold
SYSTEMATIC = 0.02


@pytest.fixture(scope="module")
def emulator():  # type: ignore[no-untyped-def]
    return load_emulator()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, emulator) -> demo.DemoRelease:  # type: ignore[no-untyped-def]
    return demo.build_demo_release(tmp_path_factory.mktemp("demo"), n_stars=N, seed=5,
                                   emulator=emulator)


def test_layout_and_catalogue(release: demo.DemoRelease) -> None:
    cat = lamost_catalog.read(release.catalog, root=release.root)
    assert len(cat) == N and len(set(cat.obsid.tolist())) == N
    files = sorted(str(p) for p in release.root.rglob("spec-*.fits.gz"))
    assert sorted(cat.path.tolist()) == files
    for p in files:  # {root}/{lmjd}/{planid}/spec-{lmjd}-{planid}_spNN-FFF.fits.gz
        lmjd, planid, name = Path(p).parts[-3:]
        assert name.startswith(f"spec-{lmjd}-{planid}_sp")
    assert len({Path(p).parts[-2] for p in files}) == len(demo.PLATES)
    broken = {p.path for p in release.broken}
    layouts = set()
    for i, path in enumerate(cat.path):
        if path in broken:
            continue
        spec = lamost.read(path)
        layouts.add(spec.meta["release_format"])
        assert spec.meta["obsid"] == cat.obsid[i]
        assert spec.meta["ra"] == cat.ra[i] and spec.meta["dec"] == cat.dec[i]
        assert spec.meta["snrg"] == cat.snrg[i] and spec.meta["class"] == cat.class_[i]
        assert spec.wavelength.size == demo.N_PIX and spec.meta["vacuum"] is True
        assert spec.mask[0] and spec.mask[-1] and spec.mask.mean() < 0.02
        np.testing.assert_allclose(spec.meta["z"] * 299_792.458, cat.rv[i], atol=1e-4)
    assert layouts == {"image", "coadd"}
    # fields straddle RA = 0 and reach high declination
    assert (cat.ra < 5).any() and (cat.ra > 355).any() and cat.dec.max() > 80


def test_spectra_reproduce_the_emulator(release: demo.DemoRelease, emulator) -> None:  # type: ignore[no-untyped-def]
    cat = lamost_catalog.read(release.catalog, root=release.root)
    problems = {p.path for p in release.problems}
    interior = INPUT_GRID.window(4150.0, 6850.0)
    checked = 0
    for path in cat.path[:25]:
        if path in problems:
            continue
        spec = lamost.read(path)
        with warnings.catch_warnings():  # LAMOST R=1800 is already below the input's 2000
            warnings.simplefilter("ignore", ResolutionWarning)
            f, e, m = prepare_input(spec.wavelength, spec.flux, spec.error, spec.mask,
                                    spec.resolution, z=spec.meta["z"])
        truth = emulator(*np.array(release.model_params[spec.meta["obsid"]])[:, None])[0][0]
        good = interior & ~m
        # noise, plus a 2 % floor: resampling deep lines between the LAMOST and input grids
        # leaves 0.5-1.1 % rms on noise-free spectra (up to 0.1 in single pixels)
        chi = (f - truth)[good] / np.hypot(e[good], SYSTEMATIC)
        assert abs(np.mean(chi)) < 0.2, path
        assert np.std(chi) < 1.3, (path, np.std(chi))
        checked += 1
    assert checked >= 15


def test_problems_are_listed_and_behave(release: demo.DemoRelease) -> None:
    kinds = {p.kind for p in release.broken}
    assert kinds == set(demo.BROKEN_KINDS)
    cat = lamost_catalog.read(release.catalog, root=release.root)
    row = {o: i for i, o in enumerate(cat.obsid.tolist())}
    wave_in = INPUT_GRID.wavelength
    for p in release.problems:
        assert Path(p.path).is_file()
        i = row[p.obsid]
        if p.error is not None:
            with pytest.raises(InputFormatError) as info:
                lamost.read(p.path)
            assert type(info.value).__name__ == p.error
            continue
        spec = lamost.read(p.path)
        good = ~spec.mask
        if p.kind in ("all_nan", "coverage"):
            w = spec.wavelength[good]
            assert w.size == 0 or w.max() < wave_in[-1]
        elif p.kind == "not_star":
            assert cat.class_[i] == "GALAXY" and spec.meta["class"] == "GALAXY"
        elif p.kind == "low_snr":   # the header's and the catalogue's S/N measure the data
            assert cat.snrg[i] == spec.meta["snrg"]
            assert abs(cat.snrg[i] - demo.LOW_SNR) < 1.0
        elif p.kind == "low_snr_arm":  # red arm at S/N 8, blue arm at 80, nothing else wrong
            arms = quality.arm_snr(spec)    # SNRR's band 5500-6900 A starts in the blue arm
            assert arms.red < 12 and arms.blue > 60, arms
            data = quality.arm_snr_from_data(spec.wavelength, spec.flux, spec.error, spec.mask)
            assert abs(data["red"] - demo.LOW_ARM_SNR) < 1.0, data
            assert arms.low(MIN_SNR) == [f"red arm S/N {arms.red:.1f} (header SNRR) below 20"]
            assert quality.bad_input_problems(spec) == []
        elif p.kind == "broken_arm":   # the red arm at a fifth: BAD_INPUT, ratio named
            (problem,) = quality.bad_input_problems(spec)
            assert "broken arm" in problem and "allowed 0.333-3" in problem, problem
            blue, red = quality.junction_fluxes(spec.wavelength, spec.flux, spec.mask)
            assert red / blue == pytest.approx(demo.BROKEN_ARM_SCALE, rel=0.15)
        elif p.kind == "wcs_mismatch":  # log10(1.05) / 1e-4 = 211.9 pixels
            assert spec.meta["wcs_mismatch_pixels"] == pytest.approx(
                np.log10(demo.WCS_SHIFT) / demo.LOG10_STEP, abs=0.01)
            (problem,) = quality.bad_input_problems(spec)
            assert "header WCS (COEFF0/COEFF1) by up to 212 pixels" in problem, problem
        elif p.kind == "outside_domain":
            assert not TEFF_DOMAIN[0] <= cat.teff[i] <= TEFF_DOMAIN[1]
    # the regular stars: WCS and arms sound, both arms at least at the release's lowest S/N
    broken = {p.path for p in release.broken}
    for path in cat.path:
        if path in broken:
            continue
        spec = lamost.read(path)
        assert spec.meta["wcs"] == "COEFF0/COEFF1" and spec.meta["wcs_mismatch_pixels"] < 0.001
        assert quality.bad_input_problems(spec) == [], path
        arms = quality.arm_snr(spec)
        assert min(arms.blue, arms.red) >= 0.95 * demo.SNR_RANGE[0], (path, arms)
        # the header S/N is what the data show (LAMOST's bands vs the arms: within 25 %)
        data = quality.arm_snr_from_data(spec.wavelength, spec.flux, spec.error, spec.mask)
        np.testing.assert_allclose([arms.blue, arms.red], [data["blue"], data["red"]],
                                   rtol=0.25)
    outside = {p.obsid for p in release.problems if p.kind == "outside_domain"}
    inside = [i for i, o in enumerate(cat.obsid.tolist()) if o not in outside]
    assert np.all((cat.teff[inside] >= TEFF_DOMAIN[0]) & (cat.teff[inside] <= TEFF_DOMAIN[1]))


def test_deterministic(tmp_path: Path, release: demo.DemoRelease, emulator) -> None:  # type: ignore[no-untyped-def]
    again = demo.build_demo_release(tmp_path / "again", n_stars=N, seed=5, emulator=emulator)
    assert again.problems == tuple(
        demo.Problem(**{**p.__dict__, "path": p.path.replace(str(release.root),
                                                              str(again.root))})
        for p in release.problems)
    for p in sorted(release.root.rglob("*.fits.gz"))[:10]:
        assert (again.root / p.relative_to(release.root)).read_bytes() == p.read_bytes()
    clean = demo.build_demo_release(tmp_path / "clean", n_stars=10, seed=1, broken=False,
                                    emulator=emulator)
    assert clean.broken == ()


def test_cache_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSSTFLUX_CACHE", str(tmp_path))
    first = demo.demo_release(n_stars=12, seed=2)
    assert first.root.parent == tmp_path and (first.root / demo.MARKER).is_file()
    stamp = (first.root / demo.MARKER).stat().st_mtime_ns
    calls: list[int] = []
    monkeypatch.setattr(demo, "build_demo_release", lambda *a, **k: calls.append(1))
    second = demo.demo_release(n_stars=12, seed=2)
    assert calls == [] and second == first
    assert (second.root / demo.MARKER).stat().st_mtime_ns == stamp
    # an incomplete cache (no marker) is rebuilt
    monkeypatch.undo()
    (first.root / demo.MARKER).unlink()
    third = demo.demo_release(tmp_path, n_stars=12, seed=2)
    assert (third.root / demo.MARKER).is_file() and third == first


def test_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_stars"):
        demo.build_demo_release(tmp_path, n_stars=3, broken=True)
