"""The whole chain: simulated reddened exposures and photometry → ``csstflux anchor`` →
``build-flat --star-scale anchored``, against the truth (and the ``known`` build beside it)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from test_pipeline_flats import DEC, RA, _z

from csstflux.errors import ConfigError
from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE, pixel_to_sky
from csstflux.flat.observe import simulate
from csstflux.flat.settings import FlatSettings
from csstflux.flat.simulate import counts_per_flux, window_mean
from csstflux.flat.stars import PHOT_BANDS
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
from csstflux.io.formats.photometry_table import read_photometry_table
from csstflux.io.stores import predictions as predstore
from csstflux.io.stores.exposures import list_exposures, read_exposure, read_truth, read_truth_stars
from csstflux.photometry import SyntheticPhotometry, extinction_k, load_bands, redden
from csstflux.pipeline.anchor import AnchorOptions, run_anchor
from csstflux.pipeline.flats import build_flat

#: Every slitless detector: 12 independent flats. The anchored flat's errors come mostly from
#: each star's anchor (scale and E(B−V)), the same at every wavelength, so one detector's
#: z-scores are nearly one pattern over λ; it is the number of detectors that makes the std
#: of the z-scores a precise number.
DETECTORS = tuple(d.name for b in ("GU", "GV", "GI") for d in SLITLESS_FOCAL_PLANE.band(b))
N_PER_DET = 40
#: SED errors: 0.5 %, correlated along λ as the anchor assumes (exp(−|Δlnλ|/0.2) is an AR(1)
#: of 80 output pixels, :func:`csstflux.flat.simulate.draw_true_seds`).
REL_ERR, CORRELATION = 0.005, 80.0
#: Stars left out of the photometry table (NO_PHOTOMETRY after anchoring).
N_NO_PHOT = 3


def _planck_store(path, rng, n_per_det=N_PER_DET, detectors=DETECTORS, rel_err=REL_ERR):
    """A finished store of Planck 'predictions' (5000–9000 K) on the detectors' footprints
    (300 px inside the edges: a 20″ dither keeps every star on its detector)."""
    ra, dec = [], []
    for name in detectors:
        det = SLITLESS_FOCAL_PLANE[name]
        r, d = pixel_to_sky(det, rng.uniform(300, det.n_x - 300, n_per_det),
                            rng.uniform(300, det.n_y - 300, n_per_det), RA, DEC, 0.0)
        ra.append(r)
        dec.append(d)
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    n = ra.size
    table, perm = predstore.StarTable.build(
        obsid=np.arange(n) + 5000, ra=ra, dec=dec, snr_g=np.full(n, 50.0),
        teff=np.full(n, 6000.0), logg=np.full(n, 4.0), feh=np.zeros(n), rv=np.zeros(n),
        class_=np.full(n, "STAR"), source_file=np.full(n, "x.fits"))
    teff = rng.uniform(5000.0, 9000.0, n)[perm]
    w = OUTPUT_GRID.wavelength
    f = w[None, :] ** -5 / np.expm1(1.438777e8 / (w[None, :] * teff[:, None]))
    sed = f / f[:, OUTPUT_GRID.window(*SCALING_WINDOW)].mean(axis=1, keepdims=True)
    predstore.create_store(path, table, chunk_stars=256, attrs={"completed": None})
    predstore.write_block(path, 0, n, sed, rel_err * sed, np.zeros(n, np.uint32))
    predstore.finalize(path, {"completed": "yes"})


def _simulate(store, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # top-hat throughput
        return simulate(store, out, ra=RA, dec=DEC, radius_deg=1.0, **kw)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Store, 3 dithered noisy exposures of reddened stars (E(B−V) exponential, mean 0.1,
    up to 0.5) on all 12 detectors, the photometry table less N_NO_PHOT stars, the anchor
    run on it; an untouched copy of the store (never anchored)."""
    d = tmp_path_factory.mktemp("anchored")
    _planck_store(d / "pred.zarr", np.random.default_rng(2))
    sim = _simulate(d / "pred.zarr", d / "exp", n_pointings=3, seed=2, detectors=DETECTORS,
                    dither_arcsec=20.0, amplitude=0.03, correlation_length=CORRELATION,
                    ebv_mean=0.1, ebv_max=0.5)
    shutil.copytree(d / "pred.zarr", d / "plain.zarr")
    lines = sim.photometry.read_text().splitlines()
    dropped = [int(v.split(",")[0]) for v in lines[1:1 + N_NO_PHOT]]
    table = d / "phot_less.csv"
    table.write_text("\n".join([lines[0], *lines[1 + N_NO_PHOT:]]) + "\n")
    run = run_anchor(AnchorOptions(store=str(d / "pred.zarr"), photometry=str(table)), None)
    assert run.summary["flag_counts"]["NO_PHOTOMETRY"] == N_NO_PHOT
    return dict(dir=d, sim=sim, dropped=dropped)


def _stats(res, flats):
    """z mean, z std, and per band the rms of (fit/truth − 1) over its detectors."""
    z = np.concatenate([v.ravel() for v in _z(res.solutions, flats).values()])
    rms = {b: float(np.sqrt(np.mean(np.concatenate(
        [(res.solutions[k].flat / flats[k] - 1).ravel() for k in flats if k[:2] == b]) ** 2)))
        for b in ("GU", "GV", "GI")}
    return float(z.mean()), float(z.std()), rms


@pytest.mark.slow
def test_anchored_flat_is_calibrated(chain, dask_scheduler_address):
    """z = (fit − truth)/σ of the anchored flat has std in 0.9–1.15, like the known one.

    The anchored errors are the store's ``sed_abs_err`` (relative SED error, scale and E(B−V)
    errors), the same in every exposure of a star (the repeated-star weights).

    Measured with traces (seeds 1–8 of this set-up, all stars photometered): anchored z std
    0.875–1.050 (mean 0.957), known 0.953–1.031 (mean 0.996); rms(fit/truth − 1) anchored GU
    2.2–3.2e-2, GV 1.1–1.4e-2, GI 1.0–1.5e-2 against known 0.9–1.2e-2, 5.6–7.1e-3,
    4.7–6.1e-3 (this seed: anchored 1.021, known 1.024; before traces: anchored 0.888–1.022,
    known 0.971–1.034). The sd of
    the std over seeds (0.04) is large for 5600 z's because one detector's anchored errors
    are a few patterns over λ (12 detectors ≈ 150 independent values). Before ``sed_abs_err``
    kept the cross term between the SED's error and the anchor's (they are anticorrelated
    near the fitted bands) the anchored std was 0.867–0.995.
    """
    from distributed import Client

    d = chain["dir"]
    flats, *_ = read_truth(d / "exp")
    with Client(dask_scheduler_address) as client:
        anch = build_flat(d / "exp", d / "pred.zarr", client,
                          FlatSettings(star_scale="anchored", max_iter=10))
        known = build_flat(d / "exp", d / "pred.zarr", client,
                           FlatSettings(star_scale="known", max_iter=10))
    # the stars without photometry are left out and counted, 3 exposures each
    assert anch.provenance["unanchored"] == {"no_photometry": 3 * N_NO_PHOT,
                                             "no_sed_abs": 0, "phot_inconsistent": 0}
    assert anch.provenance["anchor"]["fingerprint"] and anch.summary()["unanchored"]
    assert anch.equations.n_used == known.equations.n_used - 3 * N_NO_PHOT
    za_mean, za_std, rms_a = _stats(anch, flats)
    zk_mean, zk_std, rms_k = _stats(known, flats)
    print(f"\nanchored: z mean {za_mean:+.3f} std {za_std:.3f}; rms(fit/truth - 1) "
          + ", ".join(f"{b} {v:.2e}" for b, v in rms_a.items()))
    print(f"known:    z mean {zk_mean:+.3f} std {zk_std:.3f}; rms(fit/truth - 1) "
          + ", ".join(f"{b} {v:.2e}" for b, v in rms_k.items()))
    # both flats have detector mean 1, which pins the grid mean of z near 0: |mean| < 0.05
    # catches an offset or a sign error
    assert abs(za_mean) < 0.05 and abs(zk_mean) < 0.05
    assert 0.9 < za_std < 1.15
    assert 0.9 < zk_std < 1.15
    for b in rms_a:  # the anchors' errors cost precision; they cannot buy any
        assert rms_k[b] < rms_a[b] < 4 * rms_k[b], b


def test_unanchored_store_and_relative_exposures_refused(chain, tmp_path):
    """Checked before any task (no client is needed to fail)."""
    d = chain["dir"]
    with pytest.raises(ConfigError, match="never anchored.*csstflux anchor") as exc:
        build_flat(d / "exp", d / "plain.zarr", None,
                   FlatSettings(star_scale="anchored"))  # type: ignore[arg-type]
    assert "plain.zarr" in str(exc.value)
    _simulate(d / "pred.zarr", tmp_path / "rel", n_pointings=1, seed=4, ideal=True,
              detectors=DETECTORS[:1], units="relative")
    with pytest.raises(ConfigError, match="physical units"):
        build_flat(tmp_path / "rel", d / "pred.zarr", None,
                   FlatSettings(star_scale="anchored"))  # type: ignore[arg-type]
    res = CliRunner().invoke(_cli(), [
        "build-flat", "--exposures", str(d / "exp"), "--predictions", str(d / "plain.zarr"),
        "--out", str(tmp_path / "cube"), "--star-scale", "anchored", "--scheduler",
        "tcp://127.0.0.1:1"])
    assert res.exit_code == 2 and "csstflux anchor" in res.output


def _cli():
    from csstflux.cli.main import cli

    return cli


def test_photometry_is_the_truth_in_the_catalogue_system(chain, tmp_path):
    """Noise-free (ideal) photometry: the synthetic AB magnitudes of the true reddened
    absolute SED minus each band's AB offset; the table reads back in the anchor's reader."""
    d = chain["dir"]
    sim = _simulate(d / "pred.zarr", tmp_path / "ideal", n_pointings=1, seed=5, ideal=True,
                    detectors=DETECTORS[:3], ebv_mean=0.2)
    truth = read_truth_stars(tmp_path / "ideal")
    ds = predstore.open_predictions(d / "pred.zarr", cone=(RA, DEC, 1.0))
    np.testing.assert_array_equal(np.asarray(ds["obsid"].values), truth["obsid"])
    bands = load_bands(PHOT_BANDS)
    flux = redden(np.asarray(ds["sed"].values, float) * truth["flux"][:, None], truth["ebv"],
                  extinction_k(OUTPUT_GRID.wavelength))
    want = (SyntheticPhotometry.from_bands(bands).ab_mags(flux)
            - np.array([b.ab_offset for b in bands]))
    cols = read_photometry_table(sim.photometry, PHOT_BANDS, truth["obsid"])
    assert cols.n_matched == truth["obsid"].size
    np.testing.assert_allclose(cols.mag, want, atol=1e-5)  # written with 5 decimals
    np.testing.assert_allclose(cols.mag_err, np.broadcast_to([0.03, 0.02, 0.02, 0.02, 0.03],
                                                             want.shape))
    assert 0.1 < truth["ebv"].mean() < 0.3 and truth["ebv"].max() <= 0.5
    cpf = counts_per_flux()
    np.testing.assert_allclose(truth["flux"] * window_mean(cpf), truth["scale"], rtol=1e-12)


def test_physical_units_and_reddening_only_rescale_the_counts(chain, tmp_path):
    """Same seed, noise-free: physical units multiply the relative-unit counts by the photon
    conversion over its window mean; reddening then by 10^(−0.4 E k), E as recorded. The
    reddening and the photometry draw from their own stream, so the counts' draws do not
    move (relative units and E = 0 are the simulation before both)."""
    d = chain["dir"]
    # without traces: with them the band-resolution spectrum is a deconvolution, which mixes
    # neighbouring pixels' photon conversions, and neighbours' light is added
    kw = dict(n_pointings=2, seed=6, ideal=True, detectors=DETECTORS[::4], traces=False)
    _simulate(d / "pred.zarr", tmp_path / "rel", units="relative", **kw)
    _simulate(d / "pred.zarr", tmp_path / "phys", **kw)
    _simulate(d / "pred.zarr", tmp_path / "red", ebv_mean=0.1, **kw)
    cpf = counts_per_flux()
    k = extinction_k(OUTPUT_GRID.wavelength)
    for p_rel, p_phys, p_red in zip(*(list_exposures(tmp_path / f)
                                      for f in ("rel", "phys", "red")), strict=True):
        rel, phys, red = (read_exposure(p) for p in (p_rel, p_phys, p_red))
        assert rel.counts_per_flux is None and rel.attrs["units"] == "relative"
        np.testing.assert_array_equal(phys.counts_per_flux, cpf)
        np.testing.assert_array_equal(rel.scale, red.scale)
        assert not rel.ebv.any() and not phys.ebv.any() and red.ebv.all()
        np.testing.assert_allclose(phys.counts, rel.counts * (cpf / window_mean(cpf)),
                                   rtol=1e-6)
        np.testing.assert_allclose(red.counts, redden(phys.counts.astype(float), red.ebv, k),
                                   rtol=1e-6)


def test_flat_settings_accept_anchored():
    assert FlatSettings(star_scale="anchored").star_scale == "anchored"
    with pytest.raises(ValueError, match="median, known, anchored"):
        FlatSettings(star_scale="truth")  # type: ignore[arg-type]
