"""Quality flags: one bitmask shared by readers, the predictor and every output store.

A flag never replaces a clear error where processing cannot go on; it marks a star whose
result exists but must be read with care, or whose file could not be used, so that survey-scale
jobs continue and record what happened. The meanings below are written into every store.
"""

from __future__ import annotations

import enum


class Flag(enum.IntFlag):
    """Per-star quality bitmask (uint32 in stores)."""

    UNREADABLE = 1 << 0
    TRUNCATED = 1 << 1
    BAD_FORMAT = 1 << 2
    COVERAGE = 1 << 3
    LOW_SNR = 1 << 4
    OUTSIDE_DOMAIN = 1 << 5
    NONFINITE_OUTPUT = 1 << 6
    MASKED_PIXELS = 1 << 7
    RESOLUTION = 1 << 8
    NOT_STAR = 1 << 9
    OUT_OF_DISTRIBUTION = 1 << 10
    LOW_SNR_ARM = 1 << 11
    BAD_INPUT = 1 << 12
    BAD_COORDS = 1 << 13
    DUPLICATE = 1 << 14
    NEGATIVE_SED = 1 << 15
    NO_PHOTOMETRY = 1 << 16
    PHOT_INCONSISTENT = 1 << 17

    @classmethod
    def describe(cls) -> dict[str, str]:
        """``{name: meaning}`` in bit order, for store attributes and documentation."""
        out: dict[str, str] = {}
        for member in cls:
            doc = _DOCS.get(member.name or "", "")
            out[f"{member.name} ({int(member)})"] = doc
        return out


#: Meanings, kept beside the enum so they can be written into store attributes.
_DOCS: dict[str, str] = {
    "UNREADABLE": "the file could not be opened or parsed",
    "TRUNCATED": "the file is shorter than its header promises",
    "BAD_FORMAT": "readable but not an accepted format (e.g. LAMOST medium resolution)",
    "COVERAGE": "good pixels do not cover the model input range 4000-7000 A",
    "LOW_SNR": "signal-to-noise ratio below the configured minimum",
    "OUTSIDE_DOMAIN": "Teff outside the training domain 5000-9750 K (catalogue value, else the "
                      "estimate from the spectrum itself, unless inside by its margin "
                      "times its error: attrs['domain_model']['teff_margin'])",
    "NONFINITE_OUTPUT": "model output not finite; do not use",
    "MASKED_PIXELS": "more than the tolerated fraction of input pixels masked",
    "RESOLUTION": "source resolution coarser than the target over part of the range",
    "NOT_STAR": "source not classified as a star",
    "OUT_OF_DISTRIBUTION": "input spectrum unlike the training inputs (novelty score above the "
                           "threshold stored with the domain model)",
    "LOW_SNR_ARM": "S/N of the blue or red arm inside 4000-7000 A below the configured minimum",
    "BAD_INPUT": "input spectrum inconsistent with itself (broken arm, wavelength row against "
                 "the header WCS); the failures table says what",
    "BAD_COORDS": "catalogue RA/Dec missing, not finite or out of range (no sky position)",
    "DUPLICATE": "obsid repeated in the catalogue; only its first row is predicted",
    "NEGATIVE_SED": "non-positive SED pixels inside GU, GV or GI (set to NaN; see n_masked_sed)",
    "NO_PHOTOMETRY": "csstflux anchor: too few usable photometric bands (2, or 1 with an E(B-V) "
                     "prior) to fit scale and E(B-V); no absolute SED",
    "PHOT_INCONSISTENT": "csstflux anchor: the photometry disagrees with the reddened SED after "
                         "band rejection (chi2 p-value below attrs['anchor']['p_inconsistent'])",
}
