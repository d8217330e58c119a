"""Generic tabulated spectra: ECSV (astropy, with units) or CSV with a units-bearing header.

Columns are matched case-insensitively: wavelength (``wavelength``, ``wave``, ``lambda``,
``lam``, ``wl``), flux (``flux``, ``flam``, ``f_lambda``, ``fnu``...) and an optional 1σ error
(``error``, ``err``, ``sigma``, ``flux_err``, ``flux_error``, ``uncertainty``, ``unc``,
``e_flux``). Units: ECSV column units, or CSV headers such as ``wavelength[nm]`` or
``wavelength (um)``; wavelength units are converted to Å with :mod:`astropy.units` (no unit = Å).
The error is converted to the flux unit when both carry units.

Medium: ``medium=`` argument, else ECSV meta ``medium``/``wavelength_medium``/``airorvac``,
else **vacuum**.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import InputFormatError
from csstflux.io._library import check_medium, finish_spectrum
from csstflux.spectrum import Resolution, Spectrum

FORMAT = "generic-table"
WAVE_NAMES = ("wavelength", "wave", "lambda", "lam", "wl", "wavelength_vacuum",
              "wavelength_air")
FLUX_NAMES = ("flux", "flam", "f_lambda", "flambda", "flux_density", "fnu", "f_nu")
ERROR_NAMES = ("error", "err", "sigma", "flux_err", "flux_error", "uncertainty", "unc",
               "e_flux", "ferr")
_HEAD_RE = re.compile(r"^\s*([^\[\(]+?)\s*(?:[\[\(]\s*([^\]\)]*?)\s*[\]\)])?\s*$")
SUFFIXES = (".ecsv", ".csv")


def _split_name(colname: str) -> tuple[str, str]:
    """('wavelength', 'nm') from 'Wavelength [nm]' / 'wavelength (nm)' / 'wavelength'."""
    m = _HEAD_RE.match(colname)
    if m is None:
        return colname.strip().lower(), ""
    return m.group(1).strip().lower(), (m.group(2) or "").strip()


def _find(names: dict[str, str], wanted: tuple[str, ...]) -> str | None:
    return next((names[w] for w in wanted if w in names), None)


def _header_names(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    lines = head.splitlines()
    if not lines:
        return None
    if lines[0].startswith("# %ECSV"):
        return re.findall(r"name:\s*([^,}]+)", head)
    for ln in lines:
        if ln.strip() and not ln.lstrip().startswith("#"):
            return [c.strip() for c in ln.split(",")]
    return None


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a ``.ecsv``/``.csv`` file whose header has wavelength and flux columns."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in SUFFIXES:
        return False
    cols = _header_names(p)
    if not cols:
        return False
    names = {_split_name(c)[0]: c for c in cols}
    return _find(names, WAVE_NAMES) is not None and _find(names, FLUX_NAMES) is not None


def _to_angstrom(values: NDArray[np.float64], unit: Any, path: Path) -> NDArray[np.float64]:
    import astropy.units as u

    if unit is None or str(unit) == "":
        return values
    try:
        q = u.Unit(str(unit).replace("Angstroms", "Angstrom"))
        return np.asarray((values * q).to_value(u.AA), dtype=np.float64)
    except (ValueError, u.UnitsError) as exc:
        raise InputFormatError("wavelength unit is not a length", path=path,
                               expected="Angstrom, nm, um...", found=str(unit)) from exc


def read(path: str | os.PathLike[str], *, medium: str | None = None,
         resolution: Resolution | None = None) -> Spectrum:
    """Read a tabulated spectrum.

    Parameters
    ----------
    path : path-like
        ``.ecsv`` or ``.csv`` file.
    medium : {"air", "vacuum"}, optional
        Medium of the tabulated wavelengths (default: ECSV meta, else vacuum).
    resolution : Resolution, optional
        Line-spread function to record (default ``Resolution()``).

    Returns
    -------
    Spectrum
        Wavelength (n_pix,) vacuum Å; flux in the file's unit (``meta["flux_unit"]``);
        error (NaN when absent). Rows are not re-ordered: wavelengths must increase.
    """
    from astropy.io import ascii as ap_ascii
    from astropy.table import Table

    p = Path(path)
    if not p.is_file():
        raise InputFormatError("no such file", path=p)
    if p.stat().st_size == 0:
        raise InputFormatError("file is empty", path=p, expected="a table", found="0 bytes")
    is_ecsv = p.read_bytes()[:7] == b"# %ECSV"
    try:
        table = (Table.read(p, format="ascii.ecsv") if is_ecsv
                 else Table.read(p, format="ascii.csv", comment="#"))
    except (ValueError, ap_ascii.InconsistentTableError, OSError, KeyError) as exc:
        raise InputFormatError(f"cannot parse table ({exc})", path=p,
                               expected="ECSV or CSV with a header row") from exc
    names = {_split_name(c)[0]: c for c in table.colnames}
    wcol, fcol, ecol = (_find(names, WAVE_NAMES), _find(names, FLUX_NAMES),
                        _find(names, ERROR_NAMES))
    if wcol is None or fcol is None:
        raise InputFormatError("no wavelength/flux columns", path=p,
                               expected="wavelength, flux[, error]",
                               found=", ".join(table.colnames))
    if len(table) == 0:
        raise InputFormatError("table has no rows", path=p, expected=">= 2 rows", found="0")

    def unit(col: str) -> Any:
        return table[col].unit if table[col].unit is not None else (_split_name(col)[1] or None)

    def values(col: str) -> NDArray[np.float64]:
        try:
            return np.ma.filled(np.ma.asarray(table[col], dtype=np.float64), np.nan)
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"column {col!r} is not numeric", path=p) from exc

    wave = _to_angstrom(values(wcol), unit(wcol), p)
    flux = values(fcol)
    error = None
    if ecol is not None:
        error = values(ecol)
        fu, eu = unit(fcol), unit(ecol)
        if fu is not None and eu is not None and str(fu) != str(eu):
            import astropy.units as u

            try:
                error = (error * u.Unit(str(eu))).to_value(u.Unit(str(fu)))
            except (ValueError, u.UnitsError) as exc:
                raise InputFormatError("error unit differs from the flux unit", path=p,
                                       expected=str(fu), found=str(eu)) from exc
    source = "argument"
    if medium is None:
        meta_medium = next((table.meta[k] for k in ("medium", "wavelength_medium", "airorvac")
                            if k in table.meta), None)
        medium, source = (meta_medium, "table meta") if meta_medium else ("vacuum", "default")
    meta = {"flux_unit": str(unit(fcol) or "unknown"), "wavelength_medium_source": source,
            "columns": (wcol, fcol, ecol), "name": p.stem}
    return finish_spectrum(wave, flux, path=p, fmt=FORMAT, medium=check_medium(str(medium)),
                           error=error, meta=meta, resolution=resolution)
