"""The embedded demo release: real layout, readable files, truthful spectra, listed problems."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from csstflux.demo import photometry as dp
from csstflux.demo import release as demo
from csstflux.errors import InputFormatError
from csstflux.grids import INPUT_GRID, TEFF_DOMAIN
from csstflux.io import validate as quality
from csstflux.io.formats import lamost, lamost_catalog
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


# --- input-catalogue photometry in the headers --------------------------------------------

HEADER_KEYS = {"image": ("MAG1", "MAG2", "MAG3", "MAG4", "MAG5"),
               "coadd": ("MAG_PS_G", "MAG_PS_R", "MAG_PS_I", "MAG_PS_Z", "MAG_PS_Y")}


def _primary_headers(release: demo.DemoRelease):  # type: ignore[no-untyped-def]
    """obsid → (layout, primary header) of every file astropy can open."""
    from astropy.io import fits

    unreadable = {p.path for p in release.broken if p.error is not None}
    cat = lamost_catalog.read(release.catalog, root=release.root)
    out = {}
    for obsid, path in zip(cat.obsid.tolist(), cat.path, strict=True):
        if path in unreadable:
            continue
        with fits.open(path) as hdul:
            head = hdul[0].header
            out[obsid] = ("coadd" if head["DATA_V"] == "LAMOST DR9" else "image", head.copy())
    return out


def _synth():  # type: ignore[no-untyped-def]
    from csstflux.photometry.bands import load_bands
    from csstflux.photometry.synth import SyntheticPhotometry

    bands = load_bands(dp.PHOT_BANDS)
    return SyntheticPhotometry.from_bands(bands), np.array([b.ab_offset for b in bands])


def _independent_true_ab(release: demo.DemoRelease, obsids: list[int]) -> np.ndarray:
    """AB magnitudes of the true SED made here from the manifest's truth, step by step."""
    from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
    from csstflux.library.sed_grid import load_sed_grid
    from csstflux.photometry.extinction import extinction_k

    sp, _ = _synth()
    par = np.array([release.sed_params[o] for o in obsids])
    sed, inside = load_sed_grid()(par[:, 0], par[:, 1], par[:, 2])
    assert inside.all()
    win = OUTPUT_GRID.window(*SCALING_WINDOW)
    np.testing.assert_allclose(sed[:, win].mean(axis=1), 1.0, rtol=1e-12)
    a_lambda = np.array([release.true_ebv[o] for o in obsids])[:, None] * extinction_k(
        OUTPUT_GRID.wavelength, "F99", 3.1)[None, :]
    flam = sed * np.array([release.true_scale[o] for o in obsids])[:, None] * 10 ** (
        -0.4 * a_lambda)
    np.testing.assert_allclose(release.true_flux(obsids), flam, rtol=1e-12)
    return sp.ab_mags(flam)


def test_headers_carry_the_catalogue_photometry(release: demo.DemoRelease) -> None:
    heads = _primary_headers(release)
    assert len(heads) >= N - 3 and {lay for lay, _ in heads.values()} == {"image", "coadd"}
    _, offset = _synth()
    problems = {(p.obsid, p.band): p for p in release.phot_problems}
    kinds = [p.kind for p in release.phot_problems]
    assert kinds.count("missing") == round(0.03 * N) and kinds.count("absurd") == 1
    assert len({p.obsid for p in release.phot_problems}) == len(kinds)   # one band per star
    n_missing_seen = 0
    for obsid, (layout, head) in heads.items():
        if layout == "image":
            assert head["MAGTYPE"] == "ugriz" and head["MAG6"] == head["MAG7"] == 99.0
            assert not any(k in head for k in HEADER_KEYS["coadd"])
        else:
            assert "MAGTYPE" not in head and "MAG1" not in head
        true = np.array(release.true_mag_ab[obsid])
        for key, band in zip(HEADER_KEYS[layout], dp.LAYOUT_BANDS[layout], strict=True):
            col = dp.PHOT_BANDS.index(band)
            value, sigma = head[key], release.phot_sigma[band]
            assert value == round(value, 2)
            p = problems.get((obsid, band))
            if p is not None and p.kind == "missing":
                assert value == 99.0
                n_missing_seen += 1
                continue
            assert value < 90
            shift = p.offset if p is not None else 0.0
            # catalogue system: m_cat = m_AB - ab_offset (+ noise, rounded)
            assert abs(value + offset[col] - true[col] - shift) < 5 * sigma + 0.005, (
                obsid, band, value, true[col])
    assert n_missing_seen >= 1
    # the reader takes them as LAMOST's photometry (99 = none)
    spec = lamost.read(next(p for p in lamost_catalog.read(release.catalog,
                                                           root=release.root).path
                            if p not in {q.path for q in release.broken}))
    assert np.isfinite(spec.meta["header_mag"]).sum() >= 4


def test_noise_free_magnitudes_reproduce_the_true_sed(tmp_path: Path, emulator) -> None:  # type: ignore[no-untyped-def]
    rel = demo.build_demo_release(tmp_path / "exact", n_stars=24, seed=9, emulator=emulator,
                                  phot_noise=False)
    assert set(rel.phot_sigma.values()) == {0.0}
    obsids = sorted(rel.true_ebv)
    true = _independent_true_ab(rel, obsids)
    np.testing.assert_allclose(np.array([rel.true_mag_ab[o] for o in obsids]), true,
                               atol=1e-3, rtol=0)
    _, offset = _synth()
    bad = {(p.obsid, p.band) for p in rel.phot_problems}
    r_col = dp.PHOT_BANDS.index("sdss_r")
    assert np.all((true[:, r_col] >= 12.0 - 1e-6) & (true[:, r_col] <= 17.5 + 1e-6))
    for obsid, (layout, head) in _primary_headers(rel).items():
        i = obsids.index(obsid)
        for key, band in zip(HEADER_KEYS[layout], dp.LAYOUT_BANDS[layout], strict=True):
            if (obsid, band) in bad:
                continue
            col = dp.PHOT_BANDS.index(band)   # rounded to 0.01 like LAMOST headers
            assert abs(head[key] + offset[col] - true[i, col]) <= 0.005 + 1e-6


def test_true_sed_parameters(release: demo.DemoRelease) -> None:
    # the model's parameters, or the catalogue Teff for an outside-domain star; moved only
    # where the grid cannot evaluate them
    from csstflux.library.sed_grid import load_sed_grid

    outside = {p.obsid for p in release.problems if p.kind == "outside_domain"}
    assert len(outside) >= 2
    cat = lamost_catalog.read(release.catalog, root=release.root)
    for obsid, teff in zip(cat.obsid.tolist(), cat.teff.tolist(), strict=True):
        model = release.model_params[obsid]
        want = (teff, *model[1:]) if obsid in outside else model
        if load_sed_grid()(*np.array(want)[:, None])[1][0]:
            np.testing.assert_allclose(release.sed_params[obsid], want)
        else:
            assert release.sed_params[obsid] != want
        assert load_sed_grid()(*np.array(release.sed_params[obsid])[:, None])[1][0]


def test_spectra_do_not_depend_on_the_photometry(tmp_path: Path, release: demo.DemoRelease,
                                                 emulator) -> None:  # type: ignore[no-untyped-def]
    plain = demo.build_demo_release(tmp_path / "plain", n_stars=N, seed=5, emulator=emulator,
                                    photometry=False)
    assert plain.true_ebv == {} and plain.phot_problems == ()
    assert plain.problems == tuple(
        demo.Problem(**{**p.__dict__, "path": p.path.replace(str(release.root),
                                                              str(plain.root))})
        for p in release.problems)
    assert plain.catalog.read_bytes() == release.catalog.read_bytes()
    damaged = {p.path for p in release.broken if p.kind in ("truncated", "bitflip", "empty")}
    compared = 0
    for p in sorted(release.root.rglob("*.fits.gz")):
        if str(p) in damaged:   # damaged at positions relative to the (longer) file
            continue
        a, b = lamost.read(p), lamost.read(plain.root / p.relative_to(release.root))
        for name in ("flux", "error", "wavelength", "mask"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.meta["andmask"], b.meta["andmask"])
        assert np.isnan(b.meta["header_mag"]).all()
        compared += 1
    assert compared >= N - 3


def test_manifest_round_trip(release: demo.DemoRelease, tmp_path: Path) -> None:
    assert demo.load_demo_release(release.root) == release
    assert set(release.true_ebv) == set(release.model_params) == set(release.true_scale)
    assert all(v > 0 for v in release.true_scale.values())
    # a manifest from before the photometry still loads
    import json
    doc = json.loads((release.root / demo.MANIFEST).read_text())
    for key in ("photometry", "sed_params", "true_ebv", "true_scale", "true_mag_ab"):
        doc.pop(key)
    old = tmp_path / "old"
    old.mkdir()
    (old / demo.MANIFEST).write_text(json.dumps(doc))
    loaded = demo.load_demo_release(old)
    assert loaded.true_ebv == {} and loaded.phot_problems == () and loaded.model_params


def test_photometry_draws_follow_the_stated_distributions() -> None:
    n = 20000
    params = np.tile([5777.0, 4.44, 0.0], (n, 1))
    layouts = ["image", "coadd"] * (n // 2)
    phot = dp.draw_photometry(11, params, layouts, noise=True)
    mean = dp.EBV_MEAN * (1 - np.exp(-dp.EBV_CAP / dp.EBV_MEAN))   # capped exponential
    assert abs(phot.ebv.mean() - mean) < 4 * dp.EBV_MEAN / np.sqrt(n)
    assert phot.ebv.min() >= 0 and phot.ebv.max() == dp.EBV_CAP
    assert np.mean(phot.ebv == dp.EBV_CAP) == pytest.approx(np.exp(-5), abs=0.003)
    _, offset = _synth()
    resid = phot.catalog - (phot.true_ab - offset)
    bad = np.zeros(resid.shape, bool)
    for i, band, _, _ in phot.problems:
        bad[i, dp.PHOT_BANDS.index(band)] = True
    for col, band in enumerate(dp.PHOT_BANDS):
        r = resid[~bad[:, col], col]
        assert np.std(r) == pytest.approx(np.hypot(dp.PHOT_SIGMA[band], 0.01 / np.sqrt(12)),
                                          rel=0.05)
    kinds = [k for _, _, k, _ in phot.problems]
    assert kinds.count("missing") == round(0.03 * n) and kinds.count("absurd") == n // 200
