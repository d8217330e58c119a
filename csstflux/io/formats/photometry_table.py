"""A photometry catalogue for ``csstflux anchor --photometry FILE``.

Any table astropy reads (FITS binary table, CSV, ECSV; the format is guessed from the name)
with one row per star and these columns, matched case-insensitively:

- ``obsid``: the LAMOST observation id of the predictions store's stars (rows for other ids
  are ignored; a repeated obsid is an error);
- one column per band, named as the band registry names it (``sdss_u``, ``ps1_g``,
  ``gaia_G``...; :mod:`csstflux.photometry.bands`), in the band's own catalogue system;
- optionally ``<band>_err`` (1σ, mag); missing or non-positive errors mean "use the floor";
- optionally an E(B−V) prior column (``--ebv-prior COLUMN``) and ``<COLUMN>_err``.

Magnitudes that are blank, NaN, ≥ 90 (99 and 99.99 placeholders) or ≤ −5 are missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import InputFormatError

if TYPE_CHECKING:
    from astropy.table import Table

Array = NDArray[np.float64]
#: Magnitudes outside (MISSING_LOW, MISSING_HIGH) are placeholders for "no measurement".
MISSING_LOW, MISSING_HIGH = -5.0, 90.0


@dataclass(frozen=True)
class PhotometryColumns:
    """Photometry aligned to a list of obsids."""

    mag: Array
    """(n, nb) catalogue-system magnitudes (NaN: missing)."""
    mag_err: Array
    """(n, nb) 1σ (NaN: not given)."""
    ebv_prior: Array
    """(n,) prior E(B−V) (NaN: none)."""
    ebv_prior_err: Array
    n_matched: int
    """Stars of the list found in the table."""


def clean_magnitudes(mag: ArrayLike) -> Array:
    """Magnitudes with placeholders (≥ 90, ≤ −5, non-finite) set to NaN."""
    m = np.asarray(mag, dtype=float)
    return np.where(np.isfinite(m) & (m > MISSING_LOW) & (m < MISSING_HIGH), m, np.nan)


def _column(table: object, names: dict[str, str], want: str) -> Array | None:
    key = names.get(want.lower())
    if key is None:
        return None
    col = table[key]  # type: ignore[index]
    values: Array = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
    return np.asarray(values, dtype=float)


def read_table(path: str | os.PathLike[str]) -> Table:
    """The table at ``path`` (any format astropy reads); :class:`InputFormatError` when it
    cannot be read."""
    from astropy.table import Table

    try:
        return Table.read(Path(path))
    except Exception as exc:  # astropy raises many types for an unreadable table
        raise InputFormatError(f"cannot read the photometry table ({exc})",
                               path=Path(path)) from exc


def read_photometry_table(source: str | os.PathLike[str] | Table, bands: Sequence[str],
                          obsid: ArrayLike, ebv_prior: str | None = None, *,
                          path: str | os.PathLike[str] | None = None) -> PhotometryColumns:
    """Align a photometry table (a path, or a table :func:`read_table` read from ``path``)
    to ``obsid`` (n,); see the module docstring.

    Raises
    ------
    InputFormatError
        The file cannot be read, lacks ``obsid``, none of ``bands``, the prior column, or
        repeats an obsid.
    """
    if isinstance(source, str | os.PathLike):
        table, p = read_table(source), Path(source)
    else:
        table, p = source, Path(path if path is not None else "photometry table")
    names = {c.lower(): c for c in table.colnames}
    ids = _column(table, names, "obsid")
    if ids is None:
        raise InputFormatError("photometry table has no obsid column", path=p,
                               expected="obsid", found=", ".join(table.colnames[:12]))
    present = [b for b in bands if b.lower() in names]
    if not present:
        raise InputFormatError("photometry table has none of the requested bands", path=p,
                               expected=", ".join(bands), found=", ".join(table.colnames[:12]))
    if ebv_prior is not None and ebv_prior.lower() not in names:
        raise InputFormatError(f"photometry table has no E(B-V) prior column {ebv_prior!r}",
                               path=p, found=", ".join(table.colnames[:12]))
    tid = ids.astype(np.int64)
    order = np.argsort(tid, kind="stable")
    sorted_ids = tid[order]
    repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if repeated.size:
        raise InputFormatError(f"obsid {int(repeated[0])} appears more than once "
                               f"({repeated.size} repeats)", path=p)
    want = np.asarray(obsid, np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, want), 0, max(sorted_ids.size - 1, 0))
    found = sorted_ids.size > 0
    hit = (sorted_ids[pos] == want) if found else np.zeros(want.size, bool)
    rows = order[pos]

    def take(col: Array | None) -> Array:
        out = np.full(want.size, np.nan)
        if col is not None:
            out[hit] = col[rows[hit]]
        return out

    mag = np.stack([clean_magnitudes(take(_column(table, names, b))) for b in bands], axis=1)
    err = np.stack([take(_column(table, names, f"{b}_err")) for b in bands], axis=1)
    err = np.where(err > 0, err, np.nan)
    prior = take(_column(table, names, ebv_prior)) if ebv_prior else np.full(want.size, np.nan)
    prior_err = (take(_column(table, names, f"{ebv_prior}_err")) if ebv_prior
                 else np.full(want.size, np.nan))
    return PhotometryColumns(mag=mag, mag_err=err, ebv_prior=prior, ebv_prior_err=prior_err,
                             n_matched=int(hit.sum()))
