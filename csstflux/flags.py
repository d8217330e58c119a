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
    "OUTSIDE_DOMAIN": "parameters outside the training domain",
    "NONFINITE_OUTPUT": "model output not finite or not positive; do not use",
    "MASKED_PIXELS": "more than the tolerated fraction of input pixels masked",
    "RESOLUTION": "source resolution coarser than the target over part of the range",
    "NOT_STAR": "source not classified as a star",
}
