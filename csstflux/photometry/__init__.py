"""Synthetic photometry: passbands, band-mean fluxes of SEDs, and interstellar reddening.

Pure numpy on top of the grids in :mod:`csstflux.grids`. :mod:`~csstflux.photometry.bands`
holds the registry of survey passbands and their magnitude systems,
:mod:`~csstflux.photometry.synth` turns SEDs on the output grid into AB magnitudes, and
:mod:`~csstflux.photometry.extinction` gives k(λ) = A(λ)/E(B−V) and reddens SEDs.
"""

from csstflux.photometry.bands import KNOWN_BANDS, BandSpec, PhotBand, load_bands, parse_band_list
from csstflux.photometry.extinction import LAWS, extinction_k, redden
from csstflux.photometry.synth import EXTEND_FIT, MIN_COVERAGE, SyntheticPhotometry

__all__ = [
    "EXTEND_FIT",
    "KNOWN_BANDS",
    "LAWS",
    "MIN_COVERAGE",
    "BandSpec",
    "PhotBand",
    "SyntheticPhotometry",
    "extinction_k",
    "load_bands",
    "parse_band_list",
    "redden",
]
