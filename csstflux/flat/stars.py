"""The light of simulated stars: reddening, the photon conversion and catalogue photometry.

Each simulated star (:mod:`csstflux.flat.observe`) has a relative SED, a ``scale`` (e⁻ s⁻¹ per
output pixel in the scaling window for unit throughput, before reddening) and an E(B−V). In
physical units its observed SED is ``f_λ = s · sed · 10^(−0.4 E k(λ))`` with ``s = scale / c̄``
its intrinsic f_λ in the window (c̄: :func:`csstflux.flat.simulate.counts_per_flux` averaged
there; 10–1000 e⁻ s⁻¹ is 8.2e-17–8.2e-15 erg s⁻¹ cm⁻² Å⁻¹, AB ≈ 19.1–14.1 at 5556 Å) and k of
:data:`EXTINCTION_LAW`, R_V :data:`EXTINCTION_RV`; its expected counts are
``f_λ · counts_per_flux · throughput · flat · t``, that is ``scale`` times
:func:`shape_factor` times the relative SED, throughput, flat and time. :func:`known_rate`
rebuilds that rate from what an exposure recorded (``star_scale="known"``).

:class:`SimulatedPhotometry` draws the field's catalogue photometry, the synthetic sdss_u..z
magnitudes in the catalogue system with Gaussian errors (stated σ 0.03, 0.02, 0.02, 0.02,
0.03 mag, plus an unstated 0.02 mag: the anchor's floor), and fits it as ``csstflux anchor``
does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import ConfigError
from csstflux.flags import Flag
from csstflux.flat.simulate import window_mean
from csstflux.grids import OUTPUT_GRID
from csstflux.io.stores.exposures import Exposure
from csstflux.photometry import SyntheticPhotometry, extinction_k, load_bands, redden
from csstflux.photometry.anchor import Anchor, AnchorConfig, fit_anchor

Array = NDArray[np.float64]
#: Reddening of simulated stars: extinction law and R_V (csstflux.photometry.extinction).
EXTINCTION_LAW, EXTINCTION_RV = "F99", 3.1
#: Default E(B−V) distribution of simulated stars: exponential mean and truncation, mag.
EBV_MEAN, EBV_MAX = 0.0, 0.5
#: Photometry of simulated fields: bands and their stated 1σ, mag (SDSS-like at r ≈ 17).
PHOT_BANDS: tuple[str, ...] = ("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z")
PHOT_SIGMA: tuple[float, ...] = (0.03, 0.02, 0.02, 0.02, 0.03)
#: Unstated per-band scatter of simulated photometry, mag: the anchor's error floor.
PHOT_FLOOR: float = AnchorConfig().floor_mag


@dataclass(frozen=True, eq=False)
class SimulatedPhotometry:
    """Catalogue photometry of simulated stars, and ``csstflux anchor``'s fit of it.

    Magnitudes are the synthetic AB magnitudes of the true observed (reddened, absolute)
    SED (:class:`csstflux.photometry.SyntheticPhotometry`), minus each band's ``ab_offset``
    (the catalogue system), plus Gaussian noise of ``sigma`` (stated, the ``_err`` columns)
    and ``floor`` (not stated) in quadrature.
    """

    bands: tuple[str, ...] = PHOT_BANDS
    sigma: tuple[float, ...] = PHOT_SIGMA
    """1σ per band, mag (one value: every band)."""
    floor: float = PHOT_FLOOR
    """Unstated scatter, mag (the anchor's error floor)."""

    def __post_init__(self) -> None:
        sig = np.atleast_1d(np.asarray(self.sigma, dtype=float))
        if sig.size == 1:
            sig = np.full(len(self.bands), sig[0])
        if sig.shape != (len(self.bands),) or not np.all(sig >= 0) or not self.floor >= 0:
            raise ConfigError(f"photometric sigma must be one value or one per band "
                              f"({len(self.bands)}), each >= 0, and the floor >= 0; got "
                              f"{self.sigma!r}, {self.floor!r}")
        object.__setattr__(self, "sigma", tuple(float(v) for v in sig))
        object.__setattr__(self, "bands", tuple(b.name for b in self._loaded))

    @cached_property
    def _loaded(self) -> tuple[Any, ...]:
        return load_bands(list(self.bands))  # ConfigError for an unknown name

    @cached_property
    def anchor(self) -> Anchor:
        """The fit of ``csstflux anchor`` (default settings, F99 R_V 3.1) on these bands."""
        synth = SyntheticPhotometry.from_bands(self._loaded)
        return Anchor(synth=synth, k=extinction_k(synth.wavelength, EXTINCTION_LAW,
                                                  EXTINCTION_RV))

    @cached_property
    def k(self) -> Array:
        """(574,) A(λ)/E(B−V) on OUTPUT_GRID, the law the simulation reddens with."""
        return np.asarray(self.anchor.k[:OUTPUT_GRID.n])

    def catalogue(self, flux: Array, rng: np.random.Generator, *, ideal: bool = False
                  ) -> Array:
        """(n, nb) catalogue magnitudes of observed SEDs ``flux`` (n, 574), erg s⁻¹ cm⁻² Å⁻¹;
        noise-free with ``ideal`` (and then nothing is drawn)."""
        ab = self.anchor.synth.ab_mags(flux)
        cat = ab - np.array([b.ab_offset for b in self._loaded])
        if ideal:
            return cat
        return cat + rng.normal(size=ab.shape) * np.hypot(np.asarray(self.sigma), self.floor)

    def __call__(self, flux: Array, sed: Array, sed_err: Array, rng: np.random.Generator
                 ) -> tuple[Array, Array]:
        """Anchored SED and 1σ (n, 574), erg s⁻¹ cm⁻² Å⁻¹, of stars with true observed SEDs
        ``flux``, from their relative ``sed`` and ``sed_err`` and simulated photometry (the
        :class:`csstflux.flat.montecarlo.Anchorer` of ``flat-precision --star-scale anchored``)."""
        mag = self.catalogue(flux, rng) + np.array([b.ab_offset for b in self._loaded])
        err = np.broadcast_to(np.asarray(self.sigma), mag.shape)
        res = fit_anchor(self.anchor, sed, sed_err, mag, err)
        out, out_err = self.anchor.sed_abs(sed, sed_err, res)
        bad = (res.flags & np.uint32(Flag.NO_PHOTOMETRY | Flag.PHOT_INCONSISTENT)) > 0
        return (np.where(bad[:, None], np.nan, out.astype(float)),
                np.where(bad[:, None], np.nan, out_err.astype(float)))


def shape_factor(ebv: Array, law: str, rv: float, cpf: Array | None) -> Array:
    """(n, 574) ``10^(−0.4 ebv k(λ)) · c(λ)/c̄``: from a relative SED to an e⁻ rate per unit
    ``scale`` (``c/c̄`` = 1 without ``cpf``; no k evaluated when every ebv is 0)."""
    e = np.asarray(ebv, dtype=float)
    fac = np.ones((e.size, OUTPUT_GRID.n))
    if np.any(e != 0):
        fac = redden(fac, e, extinction_k(OUTPUT_GRID.wavelength, law, rv))
    if cpf is not None:
        fac = fac * (cpf / window_mean(cpf))[None, :]
    return fac


def known_rate(exp: Exposure, rows: NDArray[np.int64], sed: Array, sed_err: Array
               ) -> tuple[Array, Array]:
    """Expected e⁻ s⁻¹ per pixel (unit throughput and flat) of sources ``rows`` of ``exp``
    from their relative SEDs and errors (n, 574), with the recorded ``scale`` and ``ebv``
    (:mod:`csstflux.io.stores.exposures`: the recorded law and photon conversion)."""
    fac = exp.scale[rows][:, None] * shape_factor(
        exp.ebv[rows], str(exp.attrs.get("extinction_law", EXTINCTION_LAW)),
        float(exp.attrs.get("rv", EXTINCTION_RV)), exp.counts_per_flux)
    return sed * fac, sed_err * fac
