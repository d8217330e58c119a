"""The input catalogue's photometry in LAMOST LRS primary headers.

Every LAMOST spectrum file repeats, in its primary header, the magnitudes its target had in
the input catalogue it was selected from. The LAMOST data-release documentation lists them
among the primary-header keywords (section 2.2, "primary header", of
https://dr3.lamost.org/doc/data-production-description; the same description in later releases,
e.g. http://dr7.lamost.org/doc/lr-data-production-description): ``MAGTYPE``, the magnitude type of
the object, and ``MAG1``…``MAG7``, its magnitudes in the order ``MAGTYPE`` names them (the
LRS general catalogue has the same ``magtype``, ``mag1``…``mag7`` columns). Values seen in
the real files (``../shared/data/lamost``)::

    DR7 image   MAGTYPE 'ugriz'     MAG1..MAG7 = 18.78 17.12 16.42 16.15 15.97 99 99  (SDSS)
    DR7 image   MAGTYPE 'fibermagr' five fibre magnitudes, bands not stated, then 99 99
    DR6 image   MAGTYPE 'Kp'        MAG1 = 12.82 (Kepler magnitude), then 99 ...
    DR7 MRS     MAGTYPE 'g'         MAG1 = 11.4, then 99 ...
    DR9 coadd   no MAGTYPE; MAG_PS_G, MAG_PS_R, MAG_PS_I, MAG_PS_Z, MAG_PS_Y  (Pan-STARRS1)

Rules of :func:`header_photometry` (bands :data:`HEADER_BANDS`, each in its own
catalogue's system: SDSS ``ugriz`` asinh magnitudes, near AB, or PS1 AB; nothing here
converts them):

- ``MAGTYPE`` made only of distinct letters of ``ugriz`` in that order (``'ugriz'``,
  ``'gri'``, ``'g'``; lower case: an upper-case ``'G'`` may be Gaia's) gives the SDSS bands
  ``MAG1``, ``MAG2``… in that order; the ``MAG`` keys after the last letter are ignored.
- Any other ``MAGTYPE`` (``'fibermagr'``, ``'Kp'``, an unknown one) gives no magnitude: its
  bands are unknown or have no filter curve here; the note names it.
- ``MAG_PS_G``, ``MAG_PS_R``, ``MAG_PS_I``, ``MAG_PS_Z``, ``MAG_PS_Y`` give the PS1 bands
  (also when ``MAGTYPE`` is present: each is read on its own).
- A value that is blank, unparsable, not finite, ≥ :data:`MISSING_AT_OR_ABOVE` (LAMOST's 99
  and 99.99) or ≤ :data:`MISSING_AT_OR_BELOW` (-9999) means "no magnitude": NaN, silently.
- Any other value outside :data:`MAG_RANGE` (5–30 mag, inclusive) is no magnitude of a star
  LAMOST can observe: NaN, and the note says which key and value.
- A value inside the range is kept however odd it looks for the star (24.58 in ``u`` for a
  16th-magnitude star): deciding that is the job of whatever fits the photometry.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

#: Bands of :func:`header_photometry`'s array, in order (names of
#: ``csstflux.photometry.bands.KNOWN_BANDS``).
HEADER_BANDS: tuple[str, ...] = ("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z",
                                 "ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y")
#: ``MAGTYPE`` letters that name SDSS bands, in their order.
SDSS_LETTERS = "ugriz"
#: PS1 keys of the DR8+ primary header → band.
PS1_KEYS: dict[str, str] = {f"MAG_PS_{b.upper()}": f"ps1_{b}" for b in "grizy"}
#: Values at or above this are LAMOST's "no magnitude" (99, 99.99).
MISSING_AT_OR_ABOVE = 90.0
#: Values at or below this are "no magnitude" too (-9999).
MISSING_AT_OR_BELOW = -5.0
#: Magnitudes outside this range (mag, inclusive) are dropped with a note.
MAG_RANGE = (5.0, 30.0)

_INDEX = {b: i for i, b in enumerate(HEADER_BANDS)}


def _is_sdss(magtype: str) -> bool:
    """Distinct letters of ``ugriz``, in that order, and nothing else."""
    return magtype == "".join(c for c in SDSS_LETTERS if c in magtype)


def _magnitude(key: str, value: float | None) -> tuple[float, str | None]:
    """The value of keyword ``key`` (None: blank or unparsable) as a magnitude: (value or NaN,
    note or None)."""
    if (value is None or not np.isfinite(value) or value >= MISSING_AT_OR_ABOVE
            or value <= MISSING_AT_OR_BELOW):
        return float("nan"), None
    if not MAG_RANGE[0] <= value <= MAG_RANGE[1]:
        return float("nan"), (f"{key} = {value:g} outside {MAG_RANGE[0]:g}-{MAG_RANGE[1]:g} "
                              "mag, dropped")
    return value, None


def header_photometry(cards: Mapping[str, str]) -> tuple[NDArray[np.float32], str]:
    """The input catalogue's magnitudes stated by a LAMOST primary header.

    Parameters
    ----------
    cards
        Raw value strings of the primary header's keywords
        (:func:`csstflux.io.fits.decode.head_cards`,
        :attr:`~csstflux.io.fits.decode.HduInfo.cards`).

    Returns
    -------
    mag : (len(HEADER_BANDS),) float32
        Magnitudes in :data:`HEADER_BANDS` order, each in its catalogue's own system; NaN
        where the header has none (rules in the module docstring).
    note : str
        Where they came from and what was dropped, ``"; "``-joined: ``"MAGTYPE 'ugriz'"``,
        ``"MAG_PS_*"``, ``"MAGTYPE 'Kp': no known filter"``, ``"MAG2 = 3.1 outside 5-30 mag,
        dropped"``; ``"no photometry"`` when the header states none.
    """
    # imported here, not at the top: this module's constants (HEADER_BANDS) must be
    # importable without the FITS stack
    from csstflux.io.fits.decode import card_value

    mag = np.full(len(HEADER_BANDS), np.nan, np.float32)
    notes: list[str] = []
    keys: list[tuple[str, str]] = []
    magtype = card_value(cards, "MAGTYPE", str)
    if magtype is not None:
        if _is_sdss(magtype):
            notes.append(f"MAGTYPE {magtype!r}")
            keys += [(f"MAG{i + 1}", f"sdss_{c}") for i, c in enumerate(magtype)]
        else:
            notes.append(f"MAGTYPE {magtype!r}: no known filter")
    ps1 = [(k, b) for k, b in PS1_KEYS.items() if k in cards]
    if ps1:
        notes.append("MAG_PS_*")
    for key, band in keys + ps1:
        value, problem = _magnitude(key, card_value(cards, key, float))
        mag[_INDEX[band]] = value
        if problem is not None:
            notes.append(problem)
    return mag, "; ".join(notes) or "no photometry"
