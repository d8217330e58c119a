"""Air ↔ vacuum wavelength conversion.

Uses the IAU standard refractive index of dry air at 15 °C, 101 325 Pa, 0.045 % CO2 in the form
given by Morton (2000, ApJS 130, 403, eq. 8), as adopted by the SDSS and VALD pipelines::

    n - 1 = 8.34254e-5 + 2.406147e-2 / (130 - s²) + 1.5998e-4 / (38.9 - s²),  s = 10⁴ / λ_vac [µm⁻¹]

``vacuum_to_air`` applies it directly; ``air_to_vacuum`` inverts it by fixed-point iteration to
machine precision, so a round trip agrees to better than 1e-8 Å. Following the IAU convention,
wavelengths below 2000 Å (vacuum) are vacuum wavelengths in both systems and are returned
unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.constants import AIR_VACUUM_MIN_WAVELENGTH


def refractive_index(wavelength_vacuum: ArrayLike) -> NDArray[np.float64]:
    """Refractive index of standard air at vacuum wavelength(s) in Å (any shape)."""
    lam = np.asarray(wavelength_vacuum, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


def vacuum_to_air(wavelength: ArrayLike) -> NDArray[np.float64]:
    """Convert vacuum wavelengths (Å, any shape) to air; values < 2000 Å are unchanged."""
    lam = np.asarray(wavelength, dtype=np.float64)
    out = lam / refractive_index(np.where(lam >= AIR_VACUUM_MIN_WAVELENGTH, lam, 5000.0))
    return np.where(lam >= AIR_VACUUM_MIN_WAVELENGTH, out, lam)


def air_to_vacuum(wavelength: ArrayLike, *, max_iter: int = 10) -> NDArray[np.float64]:
    """Convert air wavelengths (Å, any shape) to vacuum; values below the air equivalent of 2000 Å
    vacuum are unchanged.

    Solves ``λ_air = λ_vac / n(λ_vac)`` for ``λ_vac`` by fixed-point iteration; n varies slowly,
    so each step gains ~4 orders of magnitude and a few steps reach double precision.
    """
    lam_air = np.asarray(wavelength, dtype=np.float64)
    # the threshold is 2000 Å in vacuum; its air equivalent keeps round trips exact at the edge
    threshold_air = AIR_VACUUM_MIN_WAVELENGTH / refractive_index(AIR_VACUUM_MIN_WAVELENGTH)
    use = lam_air >= threshold_air
    safe = np.where(use, lam_air, 5000.0)
    vac = safe * refractive_index(safe)
    for _ in range(max_iter):
        new = safe * refractive_index(vac)
        done = np.max(np.abs(new - vac)) < 1e-10 if new.size else True
        vac = new
        if done:
            break
    return np.where(use, vac, lam_air)


def to_vacuum(wavelength: ArrayLike, medium: str) -> NDArray[np.float64]:
    """Return vacuum wavelengths given the medium (``"air"`` or ``"vacuum"``) they are in."""
    medium_l = medium.lower()
    if medium_l == "vacuum":
        return np.asarray(wavelength, dtype=np.float64)
    if medium_l == "air":
        return air_to_vacuum(wavelength)
    raise ValueError(f"unknown wavelength medium {medium!r}: expected 'air' or 'vacuum'")


