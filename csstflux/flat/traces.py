"""The CSST slitless instrument model: first-order traces, wavelength solutions, apertures.

In a slitless exposure the light of a source at wavelength λ lands at ``(x(λ), y(λ))`` along
a dispersed trace, not at the source's position. This module describes where, in the style of
the aXe/grismconf configuration files of HST and JWST (Kümmel et al. 2009, PASP 121, 59): per
grating beam a trace origin offset from the source's *reference position* (where the
undispersed image would be), a trace direction, a wavelength solution ``λ(t)`` along the
trace and its inverse, the zeroth-order position and the extraction aperture::

    t(λ)        inverse of λ(t) = Σ_k dldp[k] t^k            (pixels along the trace; DLDP)
    x(λ) = x0 + offset_x + t(λ) cos θ                        (offset: XOFF, YOFF)
    y(λ) = y0 + offset_y + t(λ) sin θ                        (θ: the dispersion direction)

The model is data: :func:`load_instrument` reads it from a TOML file (the shipped
``csstflux/data/slitless_instrument.toml``, or the user's with the official numbers), one
``[[grating]]`` table per beam (the fields of :class:`GratingBeam`). The coefficients are
constant over a detector (aXe lets them vary with the reference position; not modelled).

What CSST publishes, and what the shipped defaults derive from it
-----------------------------------------------------------------
- 24 gratings: the survey camera's 12 slitless detectors (4 per band, 9216 × 9232 pixels,
  0.074″; :mod:`csstflux.flat.detectors`) each carry two gratings that disperse in opposite
  directions ("24-grating slitless spectroscopy, including bidirectional dispersion": Wei et
  al. 2025, arXiv:2511.06970, the CSST main-survey simulation overview; a grating above each
  detector: Zhan 2021, Chin. Sci. Bull. 66, 1290). The CSST slitless simulation (Zhang et
  al. 2025, arXiv:2511.06917) models the gratings with the grating equation
  ``mλ = d (sin θ_i ± sin θ_m)``, maps detector position along the trace to wavelength by
  polynomials, and finds that nearly every first-order spectrum has its zeroth-order image.
- Per band (the CESS emulator, Wen et al. 2024, MNRAS 528, 2770, ``emulator_parameters.json``
  of CESS v0.8.5, :data:`CESS_BANDS`): central wavelength 3375, 5250, 8100 Å; resolution
  element ``Δλ = λ_mid/R`` = 15, 21, 33 Å (``g*_dlambda``); PSF 80 % encircled-energy radius
  R_EE80 = 0.17, 0.19, 0.19″; plate scale 0.074″ per pixel. R itself is
  :data:`csstflux.grids.BAND_RESOLUTION` (GU 225, GV and GI 250), the one source of truth.

No published dispersion (Å per pixel), trace offset or aperture was found, so the shipped
defaults are *derived* (:func:`default_instrument`), and say so in the file:

- Dispersion ``D = (λ_mid / R) · p / R_EE80``: CESS samples each resolution element with
  ``R_EE80 / p`` pixels (its ``kernels_convolve``: "expanding the length to be
  round(REE80/arcsecperpix) times longer"), i.e. one resolution element spans R_EE80 on the
  detector. GU 6.53, GV 8.18, GI 12.62 Å px⁻¹, so the first-order traces are 253 (GU,
  2550–4200 Å), 306 (GV) and 301 (GI) pixels long (CESS v0.8.5 ``main.py`` keeps, commented
  out, ``gvpixlen = 342``: 3800–6600 Å at 8.18 Å px⁻¹ is 342 pixels).
- Wavelength solution ``λ(t) = D t`` with ``t`` counted from the zeroth order: at normal
  incidence the grating equation puts the first order at distance ∝ λ from the undeviated
  image. The zeroth order sits at the reference position (offsets 0).
- Which grating disperses a source, and in which direction, is not published in anything we
  found: the shipped model splits each detector at its centre column, the half ``x < 4607.5``
  dispersing towards +x (θ = 0°, beam ``…-A``) and the other towards −x (θ = 180°, ``…-B``),
  both towards the centre line. With the traces 390–800 pixels from the zeroth order, far less
  than half a detector (4608 pixels), every source whose zeroth order is on the detector then
  has its whole first order on it; only sources just beyond an outer edge put (partial)
  traces on it, and the two halves' traces meet in a band ±800 pixels about the centre.
- Cross-dispersion profile: a Gaussian of ``σ = R_EE80 / (p √(2 ln 5))`` (a Gaussian's 80 %
  encircled-energy radius is σ √(2 ln 5)): 1.28 px in GU, 1.43 px in GV and GI.
- Extraction aperture half-width ``2 R_EE80``: 4.59 px in GU, 5.14 px in GV and GI (3.6 σ,
  all but 3e-4 of the profile; the extraction is taken as aperture-corrected).

Replace the file with the official configuration when it is released: every number above is
one key of one ``[[grating]]`` table.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.config import load_config, to_dict
from csstflux.flat.detectors import PIXEL_SCALE_ARCSEC, SLITLESS_FOCAL_PLANE
from csstflux.grids import BAND_RESOLUTION, BANDS, OUTPUT_GRID

Array = NDArray[np.float64]

#: The shipped instrument model (package data), read by :func:`load_instrument`.
DEFAULT_INSTRUMENT_FILE = "slitless_instrument.toml"
#: Gaussian 80 % encircled-energy radius in units of σ: √(2 ln 5).
EE80_SIGMA = math.sqrt(2.0 * math.log(5.0))


@dataclass(frozen=True)
class CessBand:
    """The published per-band numbers of the CESS emulator (Wen et al. 2024)."""

    wave_mid: float
    """Central wavelength, Å (``g*_wave_mid``)."""
    dlambda: float
    """Resolution element as published, Å (``g*_dlambda``; λ_mid/R rounded)."""
    ree80_arcsec: float
    """PSF 80 % encircled-energy radius, arcsec (``g*_ree80``)."""


#: CESS v0.8.5 ``emulator_parameters.json`` (Wen et al. 2024, MNRAS 528, 2770).
CESS_BANDS: dict[str, CessBand] = {
    "GU": CessBand(3375.0, 15.0, 0.17),
    "GV": CessBand(5250.0, 21.0, 0.19),
    "GI": CessBand(8100.0, 33.0, 0.19),
}


@dataclass(frozen=True)
class GratingBeam:
    """The first-order beam of one grating on one detector (an aXe ``BEAM A``).

    Pixel coordinates are 0-based detector pixels (:mod:`csstflux.flat.detectors`); the
    reference position ``(x0, y0)`` of a source is where its undispersed image would fall.
    """

    name: str
    """Beam name, e.g. ``"GV-02-A"``."""
    detector: str
    """Detector it sits on (``"GV-02"``)."""
    x_range: tuple[float, float]
    """Reference positions ``x0`` in ``[lo, hi)`` are dispersed by this grating, pixels
    (``-inf``/``inf`` allowed)."""
    angle_deg: float
    """Direction of increasing ``t`` (and λ), degrees from +x towards +y (0: +x, 180: −x)."""
    dldp: tuple[float, ...]
    """Wavelength solution ``λ(t) = Σ_k dldp[k] t^k``, Å, Å px⁻¹, Å px⁻², …"""
    aperture_half_width: float
    """Extraction box half-width across the dispersion, pixels."""
    psf_sigma: float
    """σ of the Gaussian cross-dispersion profile of the trace, pixels."""
    offset: tuple[float, float] = (0.0, 0.0)
    """Trace origin (``t = 0``) relative to the reference position, pixels (XOFF, YOFF)."""
    zeroth_order_offset: tuple[float, float] = (0.0, 0.0)
    """Zeroth-order image relative to the reference position, pixels (``BEAM B``)."""

    def __post_init__(self) -> None:
        if self.detector not in {d.name for d in SLITLESS_FOCAL_PLANE.detectors}:
            raise ValueError(f"grating {self.name!r}: unknown detector {self.detector!r}")
        lo, hi = (float(v) for v in self.x_range)
        if not hi > lo:
            raise ValueError(f"grating {self.name!r}: x_range must be increasing, got "
                             f"{self.x_range}")
        c = tuple(float(v) for v in self.dldp)
        if len(c) < 2 or not all(math.isfinite(v) for v in c):
            raise ValueError(f"grating {self.name!r}: dldp needs at least 2 finite "
                             f"coefficients, got {self.dldp}")
        if not (self.aperture_half_width > 0 and self.psf_sigma > 0):
            raise ValueError(f"grating {self.name!r}: aperture_half_width and psf_sigma must "
                             "be > 0")
        for name, v in (("offset", self.offset), ("zeroth_order_offset",
                                                   self.zeroth_order_offset)):
            if len(v) != 2:
                raise ValueError(f"grating {self.name!r}: {name} must be (dx, dy)")
        object.__setattr__(self, "x_range", (lo, hi))
        object.__setattr__(self, "dldp", c)
        object.__setattr__(self, "offset", tuple(float(v) for v in self.offset))
        object.__setattr__(self, "zeroth_order_offset",
                           tuple(float(v) for v in self.zeroth_order_offset))
        object.__setattr__(self, "angle_deg", float(self.angle_deg))
        band = BANDS[self.band]
        t = self._invert(np.array([band.lo, band.hi]), None)
        grid = np.linspace(t[0], t[1], 257)
        if not (np.all(np.isfinite(t)) and t[1] > t[0]
                and np.all(self.dispersion(grid) > 0)):
            raise ValueError(f"grating {self.name!r}: λ(t) must increase with t across the "
                             f"{self.band} band {band.lo:.0f}–{band.hi:.0f} Å")
        # not a field: kept out of comparisons, asdict and the TOML schema
        object.__setattr__(self, "_t_band", (float(t[0]), float(t[1])))

    @property
    def band(self) -> str:
        """The detector's band (``"GU"``, ``"GV"``, ``"GI"``)."""
        return SLITLESS_FOCAL_PLANE[self.detector].band

    @property
    def direction(self) -> tuple[float, float]:
        """Unit vector of increasing ``t``."""
        a = math.radians(self.angle_deg)
        return (math.cos(a), math.sin(a))

    @property
    def t_band(self) -> tuple[float, float]:
        """``t`` at the band's edges (:data:`csstflux.grids.BANDS`), pixels."""
        return self._t_band  # type: ignore[attr-defined,no-any-return]

    def wavelength(self, t: ArrayLike) -> Array:
        """λ(t), Å."""
        return np.polynomial.polynomial.polyval(np.asarray(t, dtype=float), self.dldp)

    def dispersion(self, t: ArrayLike) -> Array:
        """dλ/dt, Å per pixel."""
        d = np.polynomial.polynomial.polyder(self.dldp)
        return np.polynomial.polynomial.polyval(np.asarray(t, dtype=float), d)

    def trace_parameter(self, wavelength: ArrayLike) -> Array:
        """t(λ), pixels: the inverse of :meth:`wavelength` (Newton's method, to 1e-9 px)."""
        return self._invert(np.asarray(wavelength, dtype=float), self.t_band)

    def _invert(self, lam: Array, chord: tuple[float, float] | None) -> Array:
        c = self.dldp
        t = (lam - c[0]) / c[1]  # exact for a linear solution
        if len(c) == 2:
            return t
        if chord is not None:  # start from the band's chord: robust for curved solutions
            lo, hi = chord
            t = lo + (lam - self.wavelength(lo)) * (hi - lo) / (self.wavelength(hi)
                                                                 - self.wavelength(lo))
        for _ in range(50):
            step = (self.wavelength(t) - lam) / self.dispersion(t)
            t = t - step
            if np.all(np.abs(step) < 1e-9):
                return t
        raise ValueError(f"grating {self.name!r}: t(λ) did not converge")

    def trace(self, x0: ArrayLike, y0: ArrayLike, wavelength: ArrayLike
              ) -> tuple[Array, Array]:
        """Trace positions of sources at reference positions ``(x0, y0)``.

        Parameters
        ----------
        x0, y0 : array_like, shape (n,)
            Reference positions, pixels.
        wavelength : array_like, shape (n_wave,)
            Å.

        Returns
        -------
        x, y : ndarray, shape (n, n_wave)
            Pixels; not cut at the detector's edges.
        """
        t = self.trace_parameter(wavelength)
        ux, uy = self.direction
        xa = np.asarray(x0, dtype=float).reshape(-1, 1)
        ya = np.asarray(y0, dtype=float).reshape(-1, 1)
        return (xa + self.offset[0] + ux * t[None, :], ya + self.offset[1] + uy * t[None, :])

    def covers(self, x0: ArrayLike) -> NDArray[np.bool_]:
        """Reference positions this grating disperses (``x_range``)."""
        xa = np.asarray(x0, dtype=float)
        return (xa >= self.x_range[0]) & (xa < self.x_range[1])

    @property
    def reach(self) -> float:
        """Largest distance from a reference position to its in-band trace, pixels."""
        return float(math.hypot(*self.offset) + max(abs(v) for v in self.t_band))


@dataclass(frozen=True)
class TraceGeometry:
    """First-order traces of a batch of sources on one detector (one row per source).

    Rows of sources that no grating disperses are NaN throughout (``beam`` −1).
    """

    x: Array
    """(n, n_wave) x of each wavelength's trace point, pixels (not cut; NaN: no beam)."""
    y: Array
    """(n, n_wave) y, likewise."""
    t_edges: Array
    """(n, n_wave + 1) ``t`` at the output pixels' wavelength edges, pixels (NaN: no beam)."""
    origin: Array
    """(n, 2) trace origin ``(x0, y0) + offset``, pixels."""
    direction: Array
    """(n, 2) unit vector of increasing ``t``."""
    psf_sigma: Array
    """(n,) cross-dispersion σ, pixels."""
    half_width: Array
    """(n,) extraction half-width, pixels."""
    beam: NDArray[np.int64]
    """(n,) index into :meth:`SlitlessInstrument.beams` of the detector; −1: none."""
    inside: NDArray[np.bool_]
    """(n, n_wave) trace point inside the detector's edges (all True when no shape was
    given)."""

    @property
    def on_detector(self) -> NDArray[np.bool_]:
        """(n, n_wave) trace point that exists (a beam) and lies on the detector."""
        return self.inside & np.isfinite(self.x) & np.isfinite(self.y)

    def cut(self) -> tuple[Array, Array]:
        """(x, y) with the points off the detector set to NaN, each (n, n_wave)."""
        on = self.on_detector
        return np.where(on, self.x, np.nan), np.where(on, self.y, np.nan)


@dataclass(frozen=True)
class SlitlessInstrument:
    """The slitless instrument: every grating beam, and the contamination threshold."""

    grating: tuple[GratingBeam, ...]
    """One entry per grating beam (``[[grating]]`` tables of the TOML file)."""
    contamination_limit: float = 1e-4
    """A pixel is CONTAMINATED when more than this fraction of its counts come from
    neighbours' traces (the flat fit leaves it out). Contamination only adds light, so what
    is kept biases the flat up: 1e-4 keeps that bias well below the paper's best precision
    (3e-4 in GV); at 1e-3, 400 stars per detector left flat errors of up to 7e-5."""
    provenance: str = ""
    """Where the numbers come from (free text, written into every exposure)."""

    def __post_init__(self) -> None:
        beams = tuple(self.grating)
        names = [b.name for b in beams]
        if len(set(names)) != len(names):
            raise ValueError(f"grating names must be unique, got {names}")
        if not 0 <= self.contamination_limit < 1:
            raise ValueError(f"contamination_limit must be in [0, 1), got "
                             f"{self.contamination_limit}")
        for det in {b.detector for b in beams}:
            mine = sorted((b for b in beams if b.detector == det), key=lambda b: b.x_range)
            for a, b in zip(mine, mine[1:], strict=False):
                if b.x_range[0] < a.x_range[1]:
                    raise ValueError(f"gratings {a.name!r} and {b.name!r} on {det} cover "
                                     "overlapping x ranges")
        object.__setattr__(self, "grating", beams)

    def beams(self, detector: str) -> tuple[GratingBeam, ...]:
        """The beams of ``detector``, by increasing ``x_range``."""
        return tuple(sorted((b for b in self.grating if b.detector == detector),
                            key=lambda b: b.x_range))

    def detectors(self) -> tuple[str, ...]:
        """Detectors with at least one beam, sorted."""
        return tuple(sorted({b.detector for b in self.grating}))

    def reach(self, detector: str) -> float:
        """Largest distance from a reference position to its trace on ``detector``, px."""
        return max((b.reach + b.aperture_half_width for b in self.beams(detector)),
                   default=0.0)

    def assign(self, detector: str, x0: ArrayLike) -> NDArray[np.int64]:
        """Index into :meth:`beams` of the grating dispersing each source; −1: none."""
        xa = np.asarray(x0, dtype=float)
        out = np.full(xa.shape, -1, dtype=np.int64)
        for i, b in enumerate(self.beams(detector)):
            out[b.covers(xa)] = i
        return out

    def geometry(self, detector: str, x0: ArrayLike, y0: ArrayLike, wavelength: ArrayLike,
                 edges: ArrayLike, shape: tuple[int, int] | None = None) -> TraceGeometry:
        """Traces of sources at reference positions ``(x0, y0)`` on ``detector``.

        Parameters
        ----------
        x0, y0 : array_like, shape (n,)
            Reference positions, pixels.
        wavelength : array_like, shape (n_wave,)
            Wavelengths at which to place the trace points, Å (e.g. a band's output pixels).
        edges : array_like, shape (n_wave + 1,)
            Their pixel edges, Å (for the extent of each pixel along the trace).
        shape : (n_y, n_x), optional
            Detector shape: trace points outside ``[-0.5, n - 0.5)`` are marked off the
            detector (``inside`` False; :meth:`TraceGeometry.cut`). None: all inside.

        Returns
        -------
        TraceGeometry
        """
        xa = np.asarray(x0, dtype=float).reshape(-1)
        ya = np.asarray(y0, dtype=float).reshape(-1)
        wave = np.asarray(wavelength, dtype=float).reshape(-1)
        edg = np.asarray(edges, dtype=float).reshape(-1)
        if edg.size != wave.size + 1:
            raise ValueError(f"edges must have {wave.size + 1} values, got {edg.size}")
        n = xa.size
        beam = self.assign(detector, xa)
        x = np.full((n, wave.size), np.nan)
        y = np.full((n, wave.size), np.nan)
        t_edges = np.full((n, edg.size), np.nan)
        origin = np.full((n, 2), np.nan)
        direction = np.full((n, 2), np.nan)
        sigma = np.full(n, np.nan)
        half = np.full(n, np.nan)
        for i, b in enumerate(self.beams(detector)):
            rows = np.flatnonzero(beam == i)
            if not rows.size:
                continue
            x[rows], y[rows] = b.trace(xa[rows], ya[rows], wave)
            t_edges[rows] = b.trace_parameter(edg)[None, :]
            origin[rows] = np.stack([xa[rows] + b.offset[0], ya[rows] + b.offset[1]], axis=1)
            direction[rows] = b.direction
            sigma[rows], half[rows] = b.psf_sigma, b.aperture_half_width
        inside = np.ones(x.shape, dtype=bool)
        if shape is not None:
            ny, nx = int(shape[0]), int(shape[1])
            with np.errstate(invalid="ignore"):
                inside = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        return TraceGeometry(x, y, t_edges, origin, direction, sigma, half, beam, inside)

    def on_output_grid(self, detector: str, x0: ArrayLike, y0: ArrayLike,
                       inband: ArrayLike, shape: tuple[int, int] | None = None
                       ) -> tuple[TraceGeometry, slice]:
        """:meth:`geometry` on the :data:`csstflux.grids.OUTPUT_GRID` pixels from the first
        to the last of ``inband`` (574,) bool, and that slice of the grid."""
        span = grid_span(inband)
        wave, edges = OUTPUT_GRID.wavelength, OUTPUT_GRID.edges
        return (self.geometry(detector, x0, y0, wave[span], edges[span.start:span.stop + 1],
                              shape), span)

    def to_attrs(self, detectors: tuple[str, ...] | None = None) -> dict[str, object]:
        """JSON-ready description (the beams of ``detectors``, default all) with a
        ``fingerprint`` of the whole model."""
        d = to_dict(self)
        if detectors is not None:
            d["grating"] = [g for g in d["grating"] if g["detector"] in detectors]
        for g in d["grating"]:
            g["x_range"] = [v if math.isfinite(v) else str(v) for v in g["x_range"]]
        return {**d, "fingerprint": self.fingerprint}

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the model's canonical JSON (first 16 hex digits)."""
        text = json.dumps(to_dict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def grid_span(inband: ArrayLike) -> slice:
    """The slice of the output grid from the first to the last True of ``inband``."""
    idx = np.flatnonzero(np.asarray(inband, dtype=bool))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def on_grid(values: ArrayLike, span: slice, inband: ArrayLike) -> Array:
    """(n, len(span)) values of :meth:`SlitlessInstrument.on_output_grid` as (n, 574) arrays,
    NaN outside ``inband``."""
    v = np.asarray(values, dtype=float)
    out = np.full((v.shape[0], OUTPUT_GRID.n), np.nan)
    out[:, span] = v
    out[:, ~np.asarray(inband, dtype=bool)] = np.nan
    return out


def default_dispersion(band: str) -> float:
    """Derived first-order dispersion of ``band``, Å per pixel: ``(λ_mid/R) · p / R_EE80``
    (module docstring; R from :data:`csstflux.grids.BAND_RESOLUTION`)."""
    c = CESS_BANDS[band]
    return c.wave_mid / BAND_RESOLUTION[band] * PIXEL_SCALE_ARCSEC / c.ree80_arcsec


def default_instrument() -> SlitlessInstrument:
    """The shipped model, derived from the published numbers (module docstring).

    ``csstflux/data/slitless_instrument.toml`` holds exactly this (a test checks it); edit
    the file, not this function, to use other numbers.
    """
    beams = []
    for det in SLITLESS_FOCAL_PLANE.detectors:
        c = CESS_BANDS[det.band]
        ree_px = c.ree80_arcsec / PIXEL_SCALE_ARCSEC
        mid = (det.n_x - 1) / 2.0
        common = dict(detector=det.name, dldp=(0.0, default_dispersion(det.band)),
                      aperture_half_width=2.0 * ree_px, psf_sigma=ree_px / EE80_SIGMA)
        beams.append(GratingBeam(name=f"{det.name}-A", x_range=(-math.inf, mid),
                                 angle_deg=0.0, **common))  # type: ignore[arg-type]
        beams.append(GratingBeam(name=f"{det.name}-B", x_range=(mid, math.inf),
                                 angle_deg=180.0, **common))  # type: ignore[arg-type]
    return SlitlessInstrument(tuple(beams), provenance=PROVENANCE)


#: Provenance line of the shipped model.
PROVENANCE = ("csstflux default CSST slitless model: dispersion (lambda_mid/R)*p/R_EE80 from "
              "CESS (Wen et al. 2024, MNRAS 528, 2770) parameters and "
              "csstflux.grids.BAND_RESOLUTION; two gratings per detector dispersing in "
              "opposite directions (Wei et al. 2025, arXiv:2511.06970), split at the centre "
              "column and dispersing towards it (assumed); zeroth order at the reference "
              "position; Gaussian profile sigma = R_EE80/sqrt(2 ln 5); aperture half-width "
              "2 R_EE80. Derived, not official: replace with the official configuration.")


def shipped_instrument_path() -> Path:
    """Path of the shipped ``slitless_instrument.toml``."""
    return Path(str(resources.files("csstflux") / "data" / DEFAULT_INSTRUMENT_FILE))


def load_instrument(path: str | Path | None = None) -> SlitlessInstrument:
    """Read an instrument model from TOML (module docstring); None: the shipped one.

    Raises :class:`csstflux.errors.ConfigError` for a missing file, bad TOML, an unknown key
    (naming the nearest valid one) or an invalid value.
    """
    return load_config(shipped_instrument_path() if path is None else path,
                       SlitlessInstrument)
