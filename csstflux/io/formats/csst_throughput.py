"""Reader for the CSST slitless-spectroscopy throughput curves.

The curves distributed with the CSST slitless emulator CESS (Wen et al. 2024, MNRAS 528,
2770; ``CESS_v0.8.5/csst_sls_tp/``) are files ``{GU,GV,GI}.Throughput.{0st,1st}.fits`` (the
zeroth and first grating orders; ``0st`` is the files' own spelling). Each holds an empty
primary HDU and one binary table with two double columns:

- ``WAVELENGTH``: Å, strictly increasing (2000–18000 Å in 10 Å steps);
- ``SENSITIVITY``: total system throughput, dimensionless, ≥ 0 (zero outside the band).

The CSST imaging filter curves (``csst_phot_tp/csst_phot.{nuv,u,g,r,i,z,y}.fits``) share this
layout and read the same way. Files are validated with
:func:`csstflux.io.fits.decode.load_fits_bytes` (truncation, checksums) and the two columns are
decoded straight from those bytes (:func:`csstflux.io.fits.decode.read_column`). Paths are
always passed in: the package never looks for the curves itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import InputFormatError
from csstflux.grids import OUTPUT_GRID, LogGrid
from csstflux.io.fits.decode import (
    column_unit,
    head_cards,
    load_fits_bytes,
    read_column,
    table_columns,
)

Array = NDArray[np.float64]

FORMAT = "csst-throughput"
#: Slitless bands with a throughput file, in wavelength order.
SLITLESS_BANDS: tuple[str, ...] = ("GU", "GV", "GI")
#: Grating orders as spelt in the file names, with accepted aliases.
ORDERS: dict[str, str] = {"0st": "0st", "0th": "0st", "0": "0st", "1st": "1st", "1": "1st"}
_COLUMNS = ("WAVELENGTH", "SENSITIVITY")
_ANGSTROM = {"", "angstrom", "angstroms", "a", "aa", "0.1 nm"}


def identify(path: str | os.PathLike[str]) -> bool:
    """True when the first extension is a binary table with WAVELENGTH and SENSITIVITY."""
    heads = head_cards(path, max_hdus=2)
    if len(heads) < 2 or heads[1].get("XTENSION", "").strip("' ") != "BINTABLE":
        return False
    names = {v.strip("' ").upper() for k, v in heads[1].items() if k.startswith("TTYPE")}
    return set(_COLUMNS) <= names


def read_throughput(path: str | os.PathLike[str], *,
                    verify_checksum: bool = True) -> tuple[Array, Array]:
    """Read one throughput curve.

    Parameters
    ----------
    path : path-like
        A ``*.Throughput.*.fits`` file.
    verify_checksum : bool
        Check CHECKSUM/DATASUM where present.

    Returns
    -------
    wavelength : ndarray, shape (n,), float64
        Å, strictly increasing.
    sensitivity : ndarray, shape (n,), float64
        Dimensionless throughput, ≥ 0.

    Raises
    ------
    InputFormatError
        Not FITS, truncated, no table with both columns, a non-Å wavelength unit, non-finite
        or negative values, or wavelengths that do not increase.
    """
    p = Path(path)
    raw, hdus = load_fits_bytes(p, verify_checksum=verify_checksum)
    table = next((h for h in hdus[1:] if h.get_str("XTENSION") == "BINTABLE"
                  and set(_COLUMNS) <= {c.upper() for c in table_columns(h)}), None)
    if table is None:
        raise InputFormatError("no binary table with WAVELENGTH and SENSITIVITY columns",
                               path=p, expected="BINTABLE with WAVELENGTH, SENSITIVITY")
    wave, sens = (read_column(raw, table, name, p, codes="DE") for name in _COLUMNS)
    unit = column_unit(table, "WAVELENGTH").lower()
    if unit not in _ANGSTROM:
        raise InputFormatError("WAVELENGTH is not in Angstrom", path=p, hdu=table.index,
                               expected="Angstrom", found=unit)
    if wave.size < 2:
        raise InputFormatError("throughput curve has fewer than 2 rows", path=p,
                               hdu=table.index, expected=">= 2 rows", found=wave.size)
    if not (np.isfinite(wave).all() and np.isfinite(sens).all()):
        raise InputFormatError("non-finite wavelength or sensitivity", path=p, hdu=table.index)
    if not np.all(np.diff(wave) > 0):
        raise InputFormatError("WAVELENGTH is not strictly increasing", path=p,
                               hdu=table.index)
    if np.any(sens < 0):
        raise InputFormatError("negative SENSITIVITY", path=p, hdu=table.index,
                               expected=">= 0", found=float(sens.min()))
    return wave, sens


def load_band_throughputs(directory: str | os.PathLike[str],
                          order: str = "1st") -> dict[str, tuple[Array, Array]]:
    """Read the GU, GV and GI curves of one grating order from a directory.

    Parameters
    ----------
    directory : path-like
        Directory holding ``{band}.Throughput.{order}.fits``.
    order : str
        ``"1st"`` (first order, the science spectra) or ``"0st"``/``"0th"`` (zeroth order).

    Returns
    -------
    dict
        Band name → (wavelength Å (n,), sensitivity (n,)), in :data:`SLITLESS_BANDS` order.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown grating order {order!r}; expected one of {sorted(ORDERS)}")
    d = Path(directory)
    out = {}
    for band in SLITLESS_BANDS:
        path = d / f"{band}.Throughput.{ORDERS[order]}.fits"
        if not path.is_file():
            raise InputFormatError("throughput file not found", path=path)
        out[band] = read_throughput(path)
    return out


def throughput_on_grid(wavelength: ArrayLike, sensitivity: ArrayLike,
                       grid: LogGrid = OUTPUT_GRID) -> Array:
    """Average a throughput curve over the pixels of a wavelength grid.

    The curve is taken as piecewise linear between its samples and zero outside
    ``[wavelength[0], wavelength[-1]]``; each output pixel is the exact integral of that
    function over the pixel (``grid.edges``) divided by the pixel width. The integral over the
    grid, Σ T_k Δλ_k, therefore equals the integral of the curve over the grid's span.

    Parameters
    ----------
    wavelength : array_like, shape (n,)
        Å, strictly increasing.
    sensitivity : array_like, shape (n,)
        Throughput at those wavelengths.
    grid : LogGrid
        Target grid (default :data:`csstflux.grids.OUTPUT_GRID`, 574 pixels).

    Returns
    -------
    ndarray, shape (grid.n,)
        Pixel-averaged throughput.
    """
    w = np.asarray(wavelength, dtype=float)
    s = np.asarray(sensitivity, dtype=float)
    if w.ndim != 1 or w.shape != s.shape or w.size < 2:
        raise ValueError(f"need matching 1D arrays of >= 2 samples, got {w.shape}, {s.shape}")
    if not np.all(np.diff(w) > 0):
        raise ValueError("wavelength must be strictly increasing")
    edges = grid.edges
    cum = _cumulative_integral(w, s, edges)
    return np.diff(cum) / np.diff(edges)


def _cumulative_integral(w: Array, s: Array, at: Array) -> Array:
    """∫_{w[0]}^{at} of the piecewise-linear curve (zero outside its span), exact."""
    seg = np.concatenate([[0.0], np.cumsum(0.5 * (s[1:] + s[:-1]) * np.diff(w))])
    x = np.clip(at, w[0], w[-1])
    k = np.clip(np.searchsorted(w, x, side="right") - 1, 0, w.size - 2)
    dx = x - w[k]
    slope = (s[k + 1] - s[k]) / (w[k + 1] - w[k])
    return seg[k] + s[k] * dx + 0.5 * slope * dx * dx
