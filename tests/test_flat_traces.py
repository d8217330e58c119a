"""The slitless instrument model: wavelength solutions, traces, the shipped configuration,
contamination, and the flat fit on traced observations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from csstflux.errors import ConfigError
from csstflux.flat import fit as ff
from csstflux.flat.contamination import contamination
from csstflux.flat.detectors import PIXEL_SCALE_ARCSEC, SLITLESS_FOCAL_PLANE
from csstflux.flat.simulate import TrueFlat, simulate_observations, uniform_positions
from csstflux.flat.traces import (
    CESS_BANDS,
    GratingBeam,
    SlitlessInstrument,
    default_dispersion,
    default_instrument,
    load_instrument,
    on_grid,
    shipped_instrument_path,
)
from csstflux.grids import BAND_RESOLUTION, BANDS, OUTPUT_GRID

WAVE = OUTPUT_GRID.wavelength


@pytest.fixture(scope="module")
def inst() -> SlitlessInstrument:
    return load_instrument()


def _beam(**kw) -> GratingBeam:
    args = dict(name="b", detector="GV-02", x_range=(-math.inf, math.inf), angle_deg=0.0,
                dldp=(0.0, 8.0), aperture_half_width=5.0, psf_sigma=1.4)
    return GratingBeam(**{**args, **kw})  # type: ignore[arg-type]


def test_shipped_model_is_the_documented_derivation(inst) -> None:
    """24 gratings, two per slitless detector, dispersing in opposite directions; the file
    holds exactly :func:`default_instrument`, whose dispersion is (λ_mid/R)·p/R_EE80."""
    assert inst == default_instrument() and len(inst.grating) == 24
    assert inst.detectors() == tuple(sorted(d.name for d in SLITLESS_FOCAL_PLANE.detectors))
    for det in SLITLESS_FOCAL_PLANE.detectors:
        a, b = inst.beams(det.name)
        assert {a.angle_deg, b.angle_deg} == {0.0, 180.0}
        assert a.x_range[1] == b.x_range[0] == (det.n_x - 1) / 2
        c = CESS_BANDS[det.band]
        d = c.wave_mid / BAND_RESOLUTION[det.band] * PIXEL_SCALE_ARCSEC / c.ree80_arcsec
        assert a.dldp == (0.0, pytest.approx(d, rel=1e-12))
        assert a.psf_sigma == pytest.approx(c.ree80_arcsec / PIXEL_SCALE_ARCSEC / 1.794, 1e-3)
    assert {b: round(default_dispersion(b), 2) for b in CESS_BANDS} == {
        "GU": 6.53, "GV": 8.18, "GI": 12.62}
    # traces hundreds of pixels long: 253, 306, 301 px over the bands of csstflux.grids
    lengths = {b: np.ptp(inst.beams(SLITLESS_FOCAL_PLANE.band(b)[0].name)[0].t_band)
               for b in BANDS}
    assert {b: round(v) for b, v in lengths.items()} == {"GU": 253, "GV": 306, "GI": 301}
    assert "arXiv:2511.06970" in shipped_instrument_path().read_text()


def test_cess_numbers_are_the_published_ones(shared_data) -> None:
    """The per-band numbers are those of the CESS parameter file (Wen et al. 2024), and its
    resolution element is λ_mid/R for csstflux.grids.BAND_RESOLUTION (GI: 32.4 published
    rounded to 33)."""
    par = json.loads((shared_data / "csst" / "emulator_parameters.json").read_text())
    assert par["arcsecperpix"] == PIXEL_SCALE_ARCSEC
    for band, c in CESS_BANDS.items():
        k = band.lower()
        assert (c.wave_mid, c.dlambda, c.ree80_arcsec) == (
            par[f"{k}_wave_mid"], par[f"{k}_dlambda"], par[f"{k}_ree80"])
        assert par[f"{k}_Res"] == BAND_RESOLUTION[band]
        assert abs(c.wave_mid / BAND_RESOLUTION[band] - c.dlambda) < 0.61


@settings(max_examples=40, deadline=None)
@given(st.floats(-3000.0, 3000.0), st.floats(4.0, 15.0), st.floats(-2e-3, 2e-3),
       st.floats(-1e-6, 1e-6))
def test_wavelength_solution_round_trips(c0, c1, c2, c3) -> None:
    """λ(t) and its inverse t(λ) round-trip, linear or curved, over the band."""
    try:
        b = _beam(dldp=(c0 + 4000.0, c1, c2, c3))
    except ValueError:  # λ(t) not increasing across the band: refused, nothing to invert
        return
    lam = np.linspace(BANDS["GV"].lo, BANDS["GV"].hi, 101)
    t = b.trace_parameter(lam)
    np.testing.assert_allclose(b.wavelength(t), lam, rtol=0, atol=1e-7)
    tt = np.linspace(*b.t_band, 57)
    np.testing.assert_allclose(b.trace_parameter(b.wavelength(tt)), tt, rtol=0, atol=1e-7)


def test_traces_point_towards_the_centre_and_stay_on_the_detector(inst) -> None:
    det = SLITLESS_FOCAL_PLANE["GV-02"]
    d = default_dispersion("GV")
    lam = np.array([4000.0, 5000.0, 6500.0])
    x0, y0 = np.array([1000.0, 8000.0]), np.array([2000.0, 3000.0])
    geo = inst.geometry(det.name, x0, y0, lam, np.linspace(3990, 6510, 4), shape=det.shape)
    np.testing.assert_allclose(geo.x, [1000 + lam / d, 8000 - lam / d])
    np.testing.assert_allclose(geo.y, [[2000.0] * 3, [3000.0] * 3])
    np.testing.assert_array_equal(geo.beam, [0, 1])
    # any zeroth order on the detector keeps its whole first order on it
    x, y = uniform_positions(2000, det.shape, np.random.default_rng(1))
    inband = BANDS["GV"].mask(WAVE)
    g, span = inst.on_output_grid(det.name, x, y, inband, det.shape)
    assert g.on_detector.all()
    # a source beyond the left edge puts the red end of its trace on the detector
    g = inst.geometry(det.name, [-600.0], [100.0], lam, np.linspace(3990, 6510, 4),
                      shape=det.shape)
    np.testing.assert_array_equal(g.on_detector, [[False, True, True]])
    xc, _ = g.cut()
    assert np.isnan(xc[0, 0]) and xc[0, 2] == pytest.approx(-600 + 6500 / d)
    full = on_grid(g.x[:, :1].repeat(0, 1), slice(0, 0), np.zeros(WAVE.size, bool))
    assert full.shape == (1, WAVE.size) and np.isnan(full).all()


def test_config_errors_name_the_key(tmp_path) -> None:
    text = shipped_instrument_path().read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("dldp = ", "dldpp = ", 1))
    with pytest.raises(ConfigError, match="grating\\[0\\].dldpp.*did you mean 'dldp'"):
        load_instrument(bad)
    bad.write_text(text.replace("x_range = [4607.5, inf]", "x_range = [4000.0, inf]", 1))
    with pytest.raises(ConfigError, match="overlapping x ranges"):
        load_instrument(bad)
    with pytest.raises(ValueError, match="must increase"):
        _beam(dldp=(9000.0, -8.0))
    with pytest.raises(ValueError, match="unknown detector"):
        _beam(detector="GV-07")


def _pair(dy: float, dx: float = 0.0, angle_b: float = 180.0, counts_b: float = 100.0,
          x_first: float = 2000.0):
    """Two sources on GV-02, source 1 at (dx, dy) from source 0 (at ``x_first``); counts 1
    and ``counts_b``; the half x ≥ 4607.5 disperses along ``angle_b``."""
    det = SLITLESS_FOCAL_PLANE["GV-02"]
    beams = (_beam(name="a", x_range=(-math.inf, 4607.5)),
             _beam(name="b", x_range=(4607.5, math.inf), angle_deg=angle_b))
    ins = SlitlessInstrument(beams)
    inband = BANDS["GV"].mask(WAVE)
    x0 = np.array([x_first, x_first + dx])
    y0 = np.array([3000.0, 3000.0 + dy])
    geo, span = ins.on_output_grid(det.name, x0, y0, inband, det.shape)
    counts = np.array([np.ones(span.stop - span.start), np.full(span.stop - span.start,
                                                                counts_b)])
    return geo, contamination(geo, counts), counts


def test_contamination_of_parallel_traces_is_the_profile_in_the_aperture() -> None:
    h, sig = 5.0, 1.4
    for dy in (0.0, 3.0, 6.0):
        _, c, _ = _pair(dy)
        want = 100.0 * (ndtr((h - dy) / sig) - ndtr((-h - dy) / sig))
        np.testing.assert_allclose(c[0], want, rtol=1e-12)          # every pixel, same t
        np.testing.assert_allclose(c[1], want / 100.0, rtol=1e-12)  # and back
    _, far, _ = _pair(30.0)
    assert not far.any()
    # shifted along the trace by half an output pixel's length: half of two pixels each
    geo, _, _ = _pair(0.0)
    half = 0.5 * float(geo.t_edges[0, 1] - geo.t_edges[0, 0])
    _, c, _ = _pair(0.0, dx=half)
    inner = c[0, 5:-5]
    np.testing.assert_allclose(inner, 100.0 * (ndtr(h / sig) - ndtr(-h / sig)), rtol=2e-3)


def test_contamination_from_an_opposite_trace_and_off_the_detector() -> None:
    """A source of the other half dispersing back along the same row contaminates where the
    traces cross; light off the detector neither gives nor receives."""
    geo, c, _ = _pair(1.0, dx=1200.0, x_first=4000.0)  # second in the right half: −x
    assert geo.beam.tolist() == [0, 1]
    hit = c[0] > 0
    assert 0 < hit.sum() < hit.size  # only where the traces overlap
    xs0, xs1 = geo.x[0][hit], geo.x[1]
    assert xs0.min() >= np.nanmin(xs1) - 20 and xs0.max() <= np.nanmax(xs1) + 20
    geo2 = type(geo)(**{**geo.__dict__, "inside": np.zeros_like(geo.inside)})
    c2 = contamination(geo2, np.ones(geo.x.shape))
    assert np.isnan(c2).all()


def test_traced_flat_is_recovered_exactly_and_ignoring_traces_is_not() -> None:
    """Noise-free traced observations of an exact order-2 flat: the fit at the trace
    positions recovers it to 1e-6; the same counts fitted at the reference positions (the
    traces ignored) are off by far more."""
    rng = np.random.default_rng(5)
    inst = default_instrument()
    det = SLITLESS_FOCAL_PLANE["GI-01"]
    band = BANDS["GI"]
    flat = TrueFlat.random(rng, shape=det.shape, wavelength_range=(band.lo, band.hi),
                           amplitude=0.05)
    tp = np.where(band.mask(WAVE), 0.3, 0.0)
    inband = ff.band_pixels(tp)
    x, y = uniform_positions(200, det.shape, rng)
    geo, span = inst.on_output_grid(det.name, x, y, inband, det.shape)
    xt, yt = (on_grid(v, span, inband) for v in geo.cut())
    sed = np.ones((x.size, WAVE.size))
    counts, err = simulate_observations(sed, xt, yt, flat, tp, 150.0, 100.0, 0.0, 0.0, rng,
                                        ideal=True)
    gx = np.linspace(0, det.n_x - 1, 9)
    gy = np.linspace(0, det.n_y - 1, 9)
    truth = flat.cube(gx, gy, WAVE[inband])

    def fit(px, py):
        neq = ff.exposure_normal_equations(px, py, counts, err, sed * 100.0, 0.0 * sed, tp,
                                           shape=det.shape, exposure_time=150.0)
        return ff.solve_flat(neq, gx, gy).flat

    assert np.abs(fit(xt, yt) - truth).max() < 1e-6
    assert np.abs(fit(x, y) - truth).max() > 1e-3


def test_observations_off_the_detector_are_not_recorded() -> None:
    """A NaN trace position (cut at the detector's edge) gives NaN counts and error there."""
    band = BANDS["GV"]
    tp = np.where(band.mask(WAVE), 0.3, 0.0)
    det = SLITLESS_FOCAL_PLANE["GV-02"]
    flat = TrueFlat.random(np.random.default_rng(0), shape=det.shape,
                           wavelength_range=(band.lo, band.hi))
    xt = np.full((3, WAVE.size), 100.0)
    yt = xt.copy()
    xt[1, 300:320] = np.nan
    args = (np.ones((3, WAVE.size)), xt, yt, flat, tp, 150.0, 50.0, 2.0, 5.0)
    c, e = simulate_observations(*args, np.random.default_rng(3))
    assert np.isnan(c[1, 300:320]).all() and np.isnan(e[1, 300:320]).all()
    assert np.isfinite(c[:, band.mask(WAVE)][[0, 2]]).all()
