"""Pickles (1998, PASP 110, 863) stellar flux library, ASCII ``.sed`` layout (lephare-data).

Format: one ``<type>.sed`` per spectral type (``g2v``, ``k34ii``, ``m2p5v``, ``rk0iii``,
``wg5v``...), two whitespace-separated columns: wavelength (Å, 5 Å steps, 1145-25005 Å with
zero-flux end points) and flux (F_λ, normalised: ``meta["flux_unit"] = "relative"``);
``PICKLES_MOD.list`` lists the 131 files. Prefix ``r`` marks the metal-rich and ``w`` the
metal-weak variants of Pickles' Table 2.

Wavelength medium: Pickles (1998) does not state it. Above 3200 Å the library is built from
ground-based spectra (air wavelengths); the UV comes from IUE (vacuum), and
:func:`csstflux.airvac.air_to_vacuum` leaves λ < 2000 Å unchanged. The reader therefore takes
the file wavelengths as **air** by default (``medium=`` overrides). The nominal resolution is
R ≈ 500 (composite; 5 Å sampling).

Stellar parameters for a spectral type (:func:`pickles_parameters`), all approximate:

- Teff, classes V and IV: Mamajek's dwarf sequence ``EEM_dwarf_UBVIJHK_colors_Teff.txt``
  (Pecaut & Mamajek 2013, ApJS 208, 9; version 2022.04.16), linear in spectral subtype;
  subgiants take the dwarf value.
- Teff, class III: Schmidt-Kaler (1982, Landolt-Börnstein VI/2b) giant scale, B0-K5, as
  tabulated in the STScI CDBS ``ck04models/AA_README`` Table 2 (B0, B5, G0-K5) and in Allen's
  Astrophysical Quantities (Cox 2000, Table 15.7; A0-F5); Martins, Schaerer & Hillier (2005,
  A&A 436, 1049) for O giants; Fluks et al. (1994, A&AS 105, 311) for M0-M10 giants.
- Teff, class I: Schmidt-Kaler (1982) supergiant scale B0-K0 and Levesque et al. (2006) K5-M2 I,
  as tabulated in the same CDBS Table 2; Levesque et al. (2005, ApJ 628, 973) for M3-M5 I.
  Class II: mean of the class III and I values. Linear in spectral subtype between anchors.
- log g by luminosity class: V 4.4, IV 3.8, III 2.5, II 1.8, I 1.0 (typical values).
- [Fe/H]: 0 for the solar-abundance spectra; ``w`` (metal-weak) −0.5 and ``r`` (metal-rich)
  +0.3, representative of the field-star samples Pickles averaged (not stated in his README).

Users with better values pass a CSV (``name, teff, logg, feh``) instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import Resolution, SpectralLibrary, Spectrum
from csstflux.errors import InputFormatError
from csstflux.io.formats._common import finish_spectrum, params_for, read_params_csv, stack

FORMAT = "pickles"
#: Nominal resolving power of the library (composite, 5 Å sampling).
PICKLES_R = 500.0
_NAME_RE = re.compile(r"^([rw]?)([obafgkm])(\d+(?:p\d)?)(i{1,3}|iv|v)$")
_CLASS_OFFSET = {"o": 0, "b": 10, "a": 20, "f": 30, "g": 40, "k": 50, "m": 60}
LOGG_BY_CLASS = {"v": 4.4, "iv": 3.8, "iii": 2.5, "ii": 1.8, "i": 1.0}
FEH_BY_PREFIX = {"": 0.0, "w": -0.5, "r": 0.3}
#: Giant (III) Teff anchors, numeric type → K (see module docstring for sources).
GIANT_TEFF = {8.0: 33900.0, 10.0: 29000.0, 15.0: 15000.0, 20.0: 10100.0, 25.0: 8100.0,
              30.0: 7150.0, 35.0: 6400.0, 40.0: 5850.0, 45.0: 5150.0,
              50.0: 4750.0, 55.0: 3950.0, 60.0: 3895.0, 61.0: 3810.0, 62.0: 3730.0,
              63.0: 3640.0, 64.0: 3560.0, 65.0: 3420.0, 66.0: 3250.0, 67.0: 3120.0,
              68.0: 2980.0, 69.0: 2860.0, 70.0: 2800.0}
#: Supergiant (I) Teff anchors, numeric type → K.
SUPERGIANT_TEFF = {10.0: 26000.0, 15.0: 13600.0, 20.0: 9730.0, 25.0: 8510.0, 30.0: 7700.0,
                   35.0: 6900.0, 40.0: 5550.0, 45.0: 4850.0, 50.0: 4420.0, 55.0: 3850.0,
                   60.0: 3650.0, 62.0: 3600.0, 63.0: 3605.0, 64.0: 3535.0, 65.0: 3450.0}


def parse_type(name: str) -> tuple[str, float, str]:
    """(prefix, numeric type, luminosity class) of a Pickles name.

    Numeric type: O0 = 0, B0 = 10, ... M0 = 60 plus subtype; ``b57v`` (B5-7) → 16,
    ``m2p5v`` → 62.5, ``m10iii`` → 70. Raises ValueError for other names.
    """
    m = _NAME_RE.match(name.lower())
    if m is None:
        raise ValueError(f"not a Pickles spectral-type name: {name!r}")
    prefix, letter, sub, lum = m.groups()
    if "p" in sub:
        value = float(sub.replace("p", "."))
    elif len(sub) == 2 and int(sub[0]) < int(sub[1]):
        value = (int(sub[0]) + int(sub[1])) / 2.0       # a range such as B5-7
    else:
        value = float(sub)
    return prefix, _CLASS_OFFSET[letter] + value, lum


def _code_of_mamajek(spt: str) -> float | None:
    m = re.match(r"^([OBAFGKM])(\d+(?:\.\d+)?)V$", spt)
    return None if m is None else _CLASS_OFFSET[m.group(1).lower()] + float(m.group(2))


def read_mamajek(table_path: str | os.PathLike[str]) -> tuple[NDArray[np.float64],
                                                                NDArray[np.float64]]:
    """(numeric type, Teff K) of the O-M dwarfs in Mamajek's table, sorted by type."""
    p = Path(table_path)
    try:
        lines = p.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise InputFormatError(f"cannot read dwarf Teff table ({exc})", path=p) from exc
    codes, teffs = [], []
    in_table = False
    for ln in lines:
        if ln.startswith("SpT"):
            in_table = True
            continue
        if not in_table:
            continue
        if ln.startswith("#"):
            break
        tok = ln.split()
        if len(tok) < 2:
            continue
        code = _code_of_mamajek(tok[0])
        try:
            teff = float(tok[1])
        except ValueError:
            continue
        if code is not None:
            codes.append(code)
            teffs.append(teff)
    if len(codes) < 10:
        raise InputFormatError("no Mamajek dwarf sequence found", path=p,
                               expected="a 'SpT Teff ...' table", found=f"{len(codes)} rows")
    order = np.argsort(codes)
    return np.asarray(codes)[order], np.asarray(teffs)[order]


def _interp(code: float, table: dict[float, float]) -> float:
    x = np.array(sorted(table))
    y = np.array([table[k] for k in x])
    if code < x[0] or code > x[-1]:
        return np.nan
    return float(np.interp(code, x, y))


def pickles_parameters(names: Sequence[str], table_path: str | os.PathLike[str] | None = None,
                       *, params_csv: str | os.PathLike[str] | None = None
                       ) -> dict[str, NDArray[Any]]:
    """Teff (K), log g (dex) and [Fe/H] (dex) for Pickles spectral-type names.

    Parameters
    ----------
    names : sequence of str, (n,)
        Pickles names (``g2v``, ``rk0iii``...).
    table_path : path-like, optional
        Mamajek's ``EEM_dwarf_UBVIJHK_colors_Teff.txt``; without it dwarfs and subgiants get
        NaN Teff.
    params_csv : path-like, optional
        A CSV (``name, teff, logg, feh``) that replaces the calibration entirely.

    Returns
    -------
    dict
        ``teff``, ``logg``, ``feh``: (n,) float64, NaN where unknown; ``lum_class``: (n,) str.
        Calibration sources are in the module docstring; values are approximate.
    """
    matches = [_NAME_RE.match(n.lower()) for n in names]
    lum = np.array([m.group(4) if m else "" for m in matches])
    if params_csv is not None:
        teff, logg, feh, _ = params_for(names, read_params_csv(params_csv), params_csv)
        return {"teff": teff, "logg": logg, "feh": feh, "lum_class": lum}
    dwarf = read_mamajek(table_path) if table_path is not None else None
    out = {k: np.full(len(names), np.nan) for k in ("teff", "logg", "feh")}
    for i, name in enumerate(names):
        try:
            prefix, code, lclass = parse_type(name)
        except ValueError:
            continue
        if lclass in ("v", "iv"):
            if dwarf is not None and dwarf[0][0] <= code <= dwarf[0][-1]:
                out["teff"][i] = float(np.interp(code, dwarf[0], dwarf[1]))
        elif lclass == "iii":
            out["teff"][i] = _interp(code, GIANT_TEFF)
        elif lclass == "i":
            out["teff"][i] = _interp(code, SUPERGIANT_TEFF)
        else:
            out["teff"][i] = 0.5 * (_interp(code, GIANT_TEFF) + _interp(code, SUPERGIANT_TEFF))
        out["logg"][i] = LOGG_BY_CLASS[lclass]
        out["feh"][i] = FEH_BY_PREFIX[prefix]
    out["lum_class"] = lum
    return out


def _is_sed(path: Path) -> bool:
    if path.suffix.lower() != ".sed" or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
        tok = head.decode("ascii").split()
        return len(tok) >= 2 and all(float(t) == float(t) for t in tok[:2])
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a Pickles ``.sed`` file (two numeric columns) or a directory with
    ``PICKLES_MOD.list`` or Pickles-named ``.sed`` files."""
    p = Path(path)
    try:
        if p.is_dir():
            return (p / "PICKLES_MOD.list").is_file() or any(
                _NAME_RE.match(q.stem.lower()) and q.suffix == ".sed" for q in p.iterdir())
        return _is_sed(p) and bool(_NAME_RE.match(p.stem.lower()))
    except OSError:
        return False


def _read_sed(path: Path, medium: str) -> Spectrum:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"cannot read SED file ({exc})", path=path) from exc
    if not text.strip():
        raise InputFormatError("file is empty", path=path, expected="two columns", found="0 rows")
    try:
        data = np.loadtxt(text.splitlines(), ndmin=2)
    except ValueError as exc:
        raise InputFormatError(f"not a two-column numeric table ({exc})", path=path) from exc
    if data.shape[1] < 2:
        raise InputFormatError("expected wavelength and flux columns", path=path,
                               expected="2 columns", found=f"{data.shape[1]}")
    wave, flux = data[:, 0], data[:, 1]
    meta = {"flux_unit": "relative", "library": "Pickles 1998", "name": path.stem.lower()}
    return finish_spectrum(wave, flux, path=path, fmt=FORMAT, medium=medium, meta=meta,
                           resolution=Resolution(resolving_power=PICKLES_R))


def read(path: str | os.PathLike[str], *, medium: str = "air",
         table_path: str | os.PathLike[str] | None = None,
         params: str | os.PathLike[str] | None = None) -> Spectrum | SpectralLibrary:
    """Read a Pickles ``.sed`` file (→ :class:`Spectrum`) or the library directory.

    Parameters
    ----------
    path : path-like
        A ``.sed`` file or a directory holding them (``PICKLES_MOD.list`` fixes the order
        when present, otherwise alphabetical).
    medium : {"air", "vacuum"}
        Medium of the file wavelengths (see module docstring).
    table_path, params : path-like, optional
        Passed to :func:`pickles_parameters` (Mamajek table, or a CSV that overrides it).

    Returns
    -------
    Spectrum or SpectralLibrary
        Library: ``names`` the spectral types (``g2v``), wavelength (4773,) vacuum Å from the
        5 Å file grid, flux relative, error NaN, ``extra["lum_class"]``.
    """
    p = Path(path)
    if not p.is_dir():
        return _read_sed(p, medium)
    listing = p / "PICKLES_MOD.list"
    if listing.is_file():
        files = [p / Path(ln.split()[0]).name for ln in listing.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
    else:
        files = sorted(q for q in p.glob("*.sed"))
    if not files:
        raise InputFormatError("no .sed files in directory", path=p)
    spectra = [_read_sed(f, medium) for f in files]
    names = [f.stem.lower() for f in files]
    par = pickles_parameters(names, table_path, params_csv=params)
    return stack(spectra, names=names, path=p, fmt=FORMAT, teff=par["teff"],
                 logg=par["logg"], feh=par["feh"], extra={"lum_class": par["lum_class"]},
                 meta={"flux_unit": "relative", "library": "Pickles 1998",
                       "wavelength_medium_original": medium})
