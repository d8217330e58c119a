"""Physical constants used across csstflux (SI-derived, astronomy units).

One source of truth: every module takes its constants from here.
"""

from __future__ import annotations

#: Speed of light in vacuum, km/s (exact, SI definition).
C_KMS: float = 299_792.458

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
FWHM_TO_SIGMA: float = 1.0 / 2.354_820_045_030_949

#: Wavelength below which the air/vacuum distinction is not applied (Å); the IAU convention
#: quotes wavelengths shorter than 2000 Å in vacuum.
AIR_VACUUM_MIN_WAVELENGTH: float = 2000.0
