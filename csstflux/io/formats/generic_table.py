"""Generic tabulated spectra: ECSV (astropy, with units) or CSV with a units-bearing header.

Columns are matched case-insensitively: wavelength (``wavelength``, ``wave``, ``lambda``,
``lam``, ``wl``), flux (``flux``, ``flam``, ``f_lambda``, ``fnu``...) and an optional 1σ error
(``error``, ``err``, ``sigma``, ``flux_err``, ``flux_error``, ``uncertainty``, ``unc``,
``e_flux``). Units: ECSV column units, or CSV headers such as ``wavelength[nm]`` or
``wavelength (um)``; wavelength units are converted to Å with :mod:`astropy.units` (no unit = Å).
The error is converted to the flux unit when both carry units. An optional mask column
(``mask``, ``quality``, ``flag``, ``flags``, ``dq``, ``badpix``): non-zero or True = bad pixel.
Exact zeros of flux running from either end, or in runs of at least
:data:`~csstflux.io.formats._common.ZERO_RUN`, are padding and masked.

Medium: ``medium=`` argument, else ECSV meta ``medium``/``wavelength_medium``/``airorvac``,
else a wavelength column named ``wavelength_air``/``wavelength_vacuum``, else **vacuum**
(``meta["wavelength_medium_source"] = "default"``).

Resolution: ``resolution=`` argument, else ECSV meta ``fwhm`` (Å) or ``spec_res``/``resolutn``/
``r`` (λ/FWHM), else FWHM = 2 pixels (``meta["resolution_source"] = "default"``). Stellar
parameters from ECSV meta ``teff``, ``logg``/``log_g``, ``feh``/``fe_h``/``mh``/``m_h``.

A directory is read as a library by :func:`csstflux.io.formats.generic_fits.read_library`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import Resolution, SpectralLibrary, Spectrum
from csstflux.errors import InputFormatError
from csstflux.io.formats._common import (
    check_medium,
    check_wavelength,
    finish_spectrum,
    params_from_keywords,
    resolution_from_keywords,
    sampling_resolution,
    zero_padding,
)

FORMAT = "generic-table"
WAVE_NAMES = ("wavelength", "wave", "lambda", "lam", "wl", "wavelength_vacuum",
              "wavelength_air")
FLUX_NAMES = ("flux", "flam", "f_lambda", "flambda", "flux_density", "fnu", "f_nu")
ERROR_NAMES = ("error", "err", "sigma", "flux_err", "flux_error", "uncertainty", "unc",
               "e_flux", "ferr")
MASK_NAMES = ("mask", "quality", "flag", "flags", "dq", "badpix")
MEDIUM_KEYS = ("medium", "wavelength_medium", "airorvac")
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
    """True for a ``.ecsv``/``.csv`` file whose header has wavelength and flux columns, or a
    directory holding such a file and no ``*.fits`` file."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*.fits")) or any(p.glob("*.fits.gz")):
            return False
        return any(identify(f) for f in sorted(p.iterdir()) if f.suffix.lower() in SUFFIXES)
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
         resolution: Resolution | None = None,
         params: str | os.PathLike[str] | None = None) -> Spectrum | SpectralLibrary:
    """Read a tabulated spectrum (or a directory of them, as a library).

    Parameters
    ----------
    path : path-like
        ``.ecsv`` or ``.csv`` file, or a directory
        (:func:`csstflux.io.formats.generic_fits.read_library`).
    medium : {"air", "vacuum"}, optional
        Medium of the tabulated wavelengths (default: see module docstring).
    resolution : Resolution, optional
        Line-spread function (default: table meta, else FWHM = 2 pixels).
    params : path-like, optional
        Directory only: CSV ``name, teff, logg, feh, ...`` matched to file stems.

    Returns
    -------
    Spectrum or SpectralLibrary
        Wavelength (n_pix,) vacuum Å; flux in the file's unit (``meta["flux_unit"]``);
        error (NaN when absent). Rows are not re-ordered: wavelengths must increase.
    """
    p = Path(path)
    if p.is_dir():
        from csstflux.io.formats.generic_fits import read_library

        return read_library(p, medium=medium, resolution=resolution, params=params, fmt=FORMAT)
    return read_file(p, medium=medium, resolution=resolution)


def read_file(path: str | os.PathLike[str], *, medium: str | None = None,
              resolution: Resolution | None = None) -> Spectrum:
    """Read one tabulated spectrum; parameters and result as in :func:`read`."""
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
    table_meta = {str(k).lower(): v for k, v in table.meta.items()}
    source = "argument"
    if medium is None:
        meta_medium = next((table_meta[k] for k in MEDIUM_KEYS if k in table_meta), None)
        column = _split_name(wcol)[0]
        if meta_medium:
            medium, source = meta_medium, "table meta"
        elif column in ("wavelength_air", "wavelength_vacuum"):
            medium, source = column.rsplit("_", 1)[1], "column name"
        else:
            medium, source = "vacuum", "default"
    res_source = "argument"
    if resolution is None:
        found = resolution_from_keywords(lambda k: table_meta.get(k.lower()))
        resolution, res_source = found if found else (
            sampling_resolution(check_wavelength(wave, p)), "default")
    mask = zero_padding(flux)
    mcol = _find(names, MASK_NAMES)
    if mcol is not None:
        mask |= values(mcol) != 0
    meta = {"flux_unit": str(unit(fcol) or "unknown"), "wavelength_medium_source": source,
            "resolution_source": res_source, "columns": (wcol, fcol, ecol, mcol),
            "name": p.stem, **params_from_keywords(lambda k: table_meta.get(k.lower()))}
    return finish_spectrum(wave, flux, path=p, fmt=FORMAT, medium=check_medium(str(medium)),
                           error=error, mask=mask, meta=meta, resolution=resolution)
