"""Photometric passbands: a registry of the surveys whose magnitudes calibrate the SEDs.

Every band is a :class:`PhotBand`: a photon-counting response R(λ) (the probability that a
photon of wavelength λ reaching the top of the telescope, or of the atmosphere for ground-based
surveys, is counted) with the magnitude system of the survey's catalogue and the offset that
turns a catalogue magnitude into an AB magnitude, ``m_AB = m_catalogue + ab_offset``.

Sources (:data:`KNOWN_BANDS`):

* ``sdss_{u,g,r,i,z}``: speclite ``sdss2010-*``, the reference responses of Doi et al. (2010,
  AJ 139, 1628, Table 4) times the APO atmosphere at airmass 1.3. SDSS magnitudes are close to
  but not exactly AB: u_AB = u_SDSS − 0.04 and z_AB = z_SDSS + 0.02, g r i unchanged (SDSS DR7
  "Photometric flux calibration" page, https://classic.sdss.org/dr7/algorithms/fluxcal.html;
  Abazajian et al. 2009, ApJS 182, 543).
* ``ps1_{g,r,i,z,y}``: speclite ``panstarrs-*``, the PS1 capture cross-sections of Tonry et al.
  (2012, ApJ 750, 99), AB. The published y curve stops at 11000 Å with R ≈ 0.002 (speclite
  forces it to zero 10 Å later); the missing tail is negligible.
* ``gaia_{G,BP,RP}``: speclite ``gaiadr3-*``, the (E)DR3 passbands of Riello et al. (2021, A&A
  649, A3). Gaia magnitudes are Vega magnitudes; ``ab_offset`` = ZP_AB − ZP_Vega from their
  Table 3 (G 25.8010 − 25.6874, BP 25.3540 − 25.3385, RP 25.1040 − 24.7479).
* ``galex_{FUV,NUV}``: speclite ``galex-*`` (Morrissey et al. 2007, ApJS 173, 682), AB. Both lie
  (mostly) below the 2500 Å start of the SED grid: see :mod:`csstflux.photometry.synth`.
* ``csst_{nuv,u,g,r,i,z,y}``: the CSST imaging curves ``csst_phot.{band}.fits`` of the CESS
  emulator (Wen et al. 2024, MNRAS 528, 2770), AB. They are read from a folder the user gives
  (``--csst-filters``) with :func:`csstflux.io.formats.csst_throughput.read_throughput`. The files
  hold a
  dimensionless total system throughput (mirror, filter, detector QE); a QE counts photons, so
  they are used, like every other curve here, as photon-counting responses.

**Air or vacuum.** The curves are used as published, on their own wavelength scale, and the SED
grid is in vacuum. Gaia, GALEX and CSST are space missions (vacuum by construction). The
speclite files of the ground-based curves (SDSS, PS1) do not say whether their wavelengths are
in air or in vacuum; if in air, the vacuum curve lies 0.00028 λ (1.0 Å at 3500 Å, 2.5 Å at
9000 Å) redder. Shifting every registry curve from air to
vacuum (:func:`csstflux.airvac.air_to_vacuum`) changes the AB magnitude of a 6000 K blackbody
by −1.1 mmag in sdss_u, −0.6 mmag in sdss_g and ps1_g, −0.3 mmag in sdss_r and ps1_r and
under 0.1 mmag in i, z and y (measured with :mod:`csstflux.photometry.synth`), below the
calibration accuracy of the catalogues used here, so no conversion is applied.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import speclite.filters
from numpy.typing import NDArray

from csstflux.errors import ConfigError
from csstflux.io.formats.csst_throughput import read_throughput

__all__ = ["KNOWN_BANDS", "BandSpec", "PhotBand", "load_bands", "parse_band_list"]

SYSTEMS: tuple[str, ...] = ("AB", "Vega")


@dataclass(frozen=True, eq=False)
class PhotBand:
    """One photometric passband and the magnitude system of its catalogue."""

    name: str
    """Registry name, e.g. ``"sdss_u"``."""
    wavelength: NDArray[np.float64]
    """(m,) float64, Å, strictly increasing; R is linear between samples and 0 outside."""
    response: NDArray[np.float64]
    """(m,) float64, photon-counting response, ≥ 0, dimensionless."""
    system: str
    """``"AB"`` or ``"Vega"``: the system the survey's catalogue magnitudes are in."""
    ab_offset: float
    """Magnitudes: ``m_AB = m_catalogue + ab_offset``."""
    reference: str
    """Where the curve and the offset come from."""

    def __post_init__(self) -> None:
        w = np.array(self.wavelength, dtype=np.float64)
        r = np.array(self.response, dtype=np.float64)
        if w.ndim != 1 or w.shape != r.shape or w.size < 2:
            raise ValueError(f"band {self.name!r}: wavelength {w.shape} and response {r.shape} "
                             "must be 1-D of the same length >= 2")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(r))):
            raise ValueError(f"band {self.name!r}: non-finite wavelength or response")
        if not (w[0] > 0 and np.all(np.diff(w) > 0)):
            raise ValueError(f"band {self.name!r}: wavelength must be positive and increasing")
        if np.any(r < 0) or not np.any(r > 0):
            raise ValueError(f"band {self.name!r}: response must be >= 0 and not all zero")
        if self.system not in SYSTEMS:
            raise ValueError(f"band {self.name!r}: system must be one of {SYSTEMS}, "
                             f"got {self.system!r}")
        w.setflags(write=False)
        r.setflags(write=False)
        object.__setattr__(self, "wavelength", w)
        object.__setattr__(self, "response", r)
        object.__setattr__(self, "ab_offset", float(self.ab_offset))


@dataclass(frozen=True)
class BandSpec:
    """Registry entry: where a band's curve comes from and its magnitude system."""

    source: str
    """``"speclite"`` (the curve ships with speclite) or ``"csst"`` (a CESS file)."""
    key: str
    """speclite filter name (``"sdss2010-u"``) or CESS band (``"u"`` for csst_phot.u.fits)."""
    system: str
    """``"AB"`` or ``"Vega"``."""
    ab_offset: float
    """``m_AB = m_catalogue + ab_offset``."""
    reference: str
    """Citation of the curve and the offset."""


_SDSS_REF = ("Doi et al. 2010, AJ 139, 1628 (Table 4, airmass 1.3); AB offsets: SDSS DR7 "
             "photometric flux calibration, Abazajian et al. 2009, ApJS 182, 543")
_PS1_REF = "Tonry et al. 2012, ApJ 750, 99"
_GAIA_REF = "Riello et al. 2021, A&A 649, A3 (EDR3 passbands; Table 3 zero points)"
_GALEX_REF = "Morrissey et al. 2007, ApJS 173, 682"
_CSST_REF = "CESS emulator csst_phot_tp, Wen et al. 2024, MNRAS 528, 2770"

#: Gaia (E)DR3 zero points (Riello et al. 2021, Table 3), mag: band → (AB, Vega).
GAIA_ZERO_POINTS: dict[str, tuple[float, float]] = {
    "G": (25.8010, 25.6874),
    "BP": (25.3540, 25.3385),
    "RP": (25.1040, 24.7479),
}
_SDSS_OFFSETS = {"u": -0.04, "g": 0.0, "r": 0.0, "i": 0.0, "z": 0.02}

#: Every band :func:`load_bands` knows, by registry name.
KNOWN_BANDS: dict[str, BandSpec] = {
    **{f"sdss_{b}": BandSpec("speclite", f"sdss2010-{b}", "AB", off, _SDSS_REF)
       for b, off in _SDSS_OFFSETS.items()},
    **{f"ps1_{b}": BandSpec("speclite", f"panstarrs-{b}", "AB", 0.0, _PS1_REF) for b in "grizy"},
    **{f"gaia_{b}": BandSpec("speclite", f"gaiadr3-{b}", "Vega", round(ab - vega, 6), _GAIA_REF)
       for b, (ab, vega) in GAIA_ZERO_POINTS.items()},
    "galex_FUV": BandSpec("speclite", "galex-fuv", "AB", 0.0, _GALEX_REF),
    "galex_NUV": BandSpec("speclite", "galex-nuv", "AB", 0.0, _GALEX_REF),
    **{f"csst_{b}": BandSpec("csst", b, "AB", 0.0, _CSST_REF)
       for b in ("nuv", "u", "g", "r", "i", "z", "y")},
}


def _canonical(name: str) -> str:
    """The registry spelling of ``name`` (case-insensitive); ConfigError when unknown."""
    if name in KNOWN_BANDS:
        return name
    by_lower = {k.lower(): k for k in KNOWN_BANDS}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    near = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.0)
    hint = f"; did you mean {by_lower[near[0]]!r}?" if near else ""
    raise ConfigError(f"unknown photometric band {name!r}{hint}",
                      expected=f"one of {', '.join(KNOWN_BANDS)}", found=name)


def parse_band_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated band list into registry names.

    Parameters
    ----------
    text : str
        e.g. ``"sdss_u, sdss_g,gaia_G"``. Names match case-insensitively; blanks around commas
        are ignored and repeated names are kept once, in first-seen order.

    Returns
    -------
    tuple of str
        Registry names (keys of :data:`KNOWN_BANDS`).

    Raises
    ------
    ConfigError
        An unknown name (the message suggests the nearest valid one), or an empty list.
    """
    names = [_canonical(p.strip()) for p in text.split(",") if p.strip()]
    if not names:
        raise ConfigError("empty photometric band list", expected="e.g. 'sdss_g,sdss_r'",
                          found=repr(text))
    return tuple(dict.fromkeys(names))


def _trim(wave: NDArray[np.float64],
          resp: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Drop runs of zero response at both ends, keeping one zero sample on each side."""
    nz = np.flatnonzero(resp > 0)
    lo, hi = max(nz[0] - 1, 0), min(nz[-1] + 2, resp.size)
    return wave[lo:hi], resp[lo:hi]


def load_bands(names: Sequence[str],
               csst_dir: str | os.PathLike[str] | None = None) -> tuple[PhotBand, ...]:
    """Load the response curves of the named bands.

    Parameters
    ----------
    names : sequence of str
        Registry names (see :data:`KNOWN_BANDS`), matched case-insensitively.
    csst_dir : path-like, optional
        Folder holding ``csst_phot.{nuv,u,g,r,i,z,y}.fits``; needed only for ``csst_*`` bands.

    Returns
    -------
    tuple of PhotBand
        In the order given, curves trimmed to one zero sample either side of the response.

    Raises
    ------
    ConfigError
        Unknown name, or a ``csst_*`` band without ``csst_dir``.
    InputFormatError
        A CSST file missing or unreadable.
    """
    out = []
    for raw in names:
        name = _canonical(raw)
        spec = KNOWN_BANDS[name]
        if spec.source == "speclite":
            f = speclite.filters.load_filter(spec.key)
            wave, resp = np.asarray(f.wavelength, float), np.asarray(f.response, float)
        else:
            if csst_dir is None:
                raise ConfigError(f"band {name!r} needs the CSST imaging throughput curves, "
                                  "which are read from a folder you give (--csst-filters) "
                                  "holding csst_phot.{nuv,u,g,r,i,z,y}.fits")
            wave, resp = read_throughput(Path(csst_dir) / f"csst_phot.{spec.key}.fits")
        wave, resp = _trim(wave, resp)
        out.append(PhotBand(name=name, wavelength=wave, response=resp, system=spec.system,
                            ab_offset=spec.ab_offset, reference=spec.reference))
    return tuple(out)
