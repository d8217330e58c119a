"""MILES v9.1 stellar library (Sánchez-Blázquez et al. 2006; Falcón-Barroso et al. 2011).

Format (as distributed in ``sdss/mangadap`` ``data/spectral_templates/miles/``):

- one star per file, ``MILES_res2.50_star_m0001V.fits``: a primary 1-D image (BITPIX -64,
  4300 pixels) with a linear wavelength solution ``λ = CRVAL1 + (p - CRPIX1) · CDELT1``
  (3540.5 Å, 0.9 Å/px), **air** wavelengths, header ``TPLLIB = 'MILES'`` and
  ``FWHM = 2.5`` (Å, constant instrumental FWHM; Falcón-Barroso et al. 2011);
- fluxes are shape-calibrated (each star normalised), so ``meta["flux_unit"] = "relative"``;
  a few files are padded with exact zeros (m0742's last three pixels), which are masked
  (:func:`~csstflux.io.formats._common.zero_padding`);
- ``paramsMILES_v9.1.txt``: fixed-width text (Name, MILES number, CaT number, SpT, Teff,
  log g, [Fe/H], Refs, Libraries); missing values are ``--``. The pared-down
  ``MILES_params.db`` (MILES number, Teff, log g, [Fe/H]; 99999/9999 = none) is also read.

Wavelengths are converted to vacuum with :func:`csstflux.airvac.air_to_vacuum`.
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
from csstflux.io.fits import decode as fd
from csstflux.io.formats._common import finish_spectrum, stack, zero_padding

FORMAT = "miles"
#: Constant instrumental FWHM of MILES v9.1, Å (Falcón-Barroso et al. 2011).
MILES_FWHM = 2.5
PARAMS_FILES = ("paramsMILES_v9.1.txt", "MILES_params.db")
_NAME_RE = re.compile(r"^MILES_.*star_m(\d{4})[A-Za-z]?\.fits(\.gz)?$", re.IGNORECASE)
# fixed-width columns of paramsMILES_v9.1.txt: name, MILES, CaT, SpT, Teff, log g, [Fe/H]
_COLS = {"name": (0, 22), "miles": (22, 30), "cat": (30, 36), "spt": (36, 48),
         "teff": (48, 56), "logg": (56, 64), "feh": (64, 72)}
_HEADER_TOKENS = {"MILES": 22, "CaT": 30, "SpT": 36, "Teff": 51, "[Fe/H]": 66}


def _star_files(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a MILES star file (``TPLLIB = 'MILES'`` or a MILES file name on a 1-D linear
    image) or a directory holding ``MILES_*star_m####*.fits`` files."""
    p = Path(path)
    try:
        if p.is_dir():
            return bool(_star_files(p))
        hdus = fd.first_header(p)
    except OSError:
        return False
    if not hdus:
        return False
    h = hdus[0]
    linear = h.get_int("NAXIS") == 1 and h.get("CRVAL1") is not None
    return linear and (h.get_str("TPLLIB").upper() == "MILES" or bool(_NAME_RE.match(p.name)))


def _read_star(path: Path) -> Spectrum:
    raw, hdus = fd.load_fits_bytes(path)
    h = hdus[0]
    if h.get_int("NAXIS") != 1:
        raise InputFormatError("MILES file is not a 1-D image", path=path, hdu=0,
                               expected="NAXIS = 1", found=h.get_int("NAXIS"))
    crval = fd.header_float(h, "CRVAL1")
    cdelt = fd.header_float(h, "CDELT1", fd.header_float(h, "CD1_1"))
    if crval is None or cdelt is None:
        raise InputFormatError("MILES file lacks a wavelength solution", path=path, hdu=0,
                               expected="CRVAL1 and CDELT1", found="missing")
    crpix = fd.header_float(h, "CRPIX1", 1.0)
    flux = fd.read_image(raw, h, path)
    wave_air = crval + (np.arange(flux.size) + 1.0 - float(crpix or 1.0)) * cdelt
    fwhm = fd.header_float(h, "FWHM", MILES_FWHM) or MILES_FWHM
    m = _NAME_RE.match(path.name)
    meta: dict[str, Any] = {"flux_unit": "relative", "library": "MILES v9.1",
                            "crval1_air": crval, "cdelt1": cdelt}
    if m:
        meta["miles_id"] = int(m.group(1))
        meta["name"] = f"m{int(m.group(1)):04d}"
    return finish_spectrum(wave_air, flux, path=path, fmt=FORMAT, medium="air", meta=meta,
                           mask=zero_padding(flux), resolution=Resolution(fwhm=fwhm), hdu=0)


def _num(text: str, missing: tuple[float, ...] = ()) -> float:
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        return np.nan
    return np.nan if v in missing else v


def read_params(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Parameters by MILES number from ``paramsMILES_v9.1.txt`` or ``MILES_params.db``.

    Returns ``{miles_id: {"name", "spt", "teff", "logg", "feh"}}``; missing values
    (``--``, 99999, 9999) are NaN.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise InputFormatError(f"cannot read MILES parameter file ({exc})", path=p) from exc
    out: dict[int, dict[str, Any]] = {}
    if lines and lines[0].lstrip().startswith("#MILES"):          # MILES_params.db
        for ln in lines:
            if ln.startswith("#") or not ln.strip():
                continue
            tok = ln.split()
            if len(tok) >= 4 and tok[0].isdigit():
                out[int(tok[0])] = {"name": "", "spt": "",
                                    "teff": _num(tok[1], (99999.0,)),
                                    "logg": _num(tok[2], (9999.0,)),
                                    "feh": _num(tok[3], (9999.0,))}
        return out
    head = lines[0] if lines else ""
    if any(head.find(tok) != col for tok, col in _HEADER_TOKENS.items()):
        raise InputFormatError("not the fixed-width paramsMILES_v9.1.txt layout", path=p,
                               expected=f"header tokens at columns {_HEADER_TOKENS}",
                               found=repr(head[:80]))
    for ln in lines[3:]:
        field = {k: ln[a:b] for k, (a, b) in _COLS.items()}
        ident = field["miles"].strip()
        if not ident.isdigit():
            continue           # e.g. '022.' (HD044691A): not a usable MILES number
        out[int(ident)] = {"name": field["name"].strip(), "spt": field["spt"].strip(),
                           "teff": _num(field["teff"], (99999.0,)),
                           "logg": _num(field["logg"], (9999.0,)),
                           "feh": _num(field["feh"], (9999.0,))}
    return out


def read(path: str | os.PathLike[str], *,
         params: str | os.PathLike[str] | None = None) -> Spectrum | SpectralLibrary:
    """Read one MILES star file (→ :class:`Spectrum`) or a MILES directory (→ library).

    Parameters
    ----------
    path : path-like
        A ``MILES_res2.50_star_m####V.fits`` file or a directory of them.
    params : path-like, optional
        Parameter file; default ``paramsMILES_v9.1.txt`` (or ``MILES_params.db``) in the
        directory. Stars without parameters get NaN.

    Returns
    -------
    Spectrum or SpectralLibrary
        Library: stars in MILES-number order, ``names`` ``m0001``..., wavelength (4300,)
        vacuum Å, flux (n_star, 4300) relative, error NaN, ``extra`` with ``miles_id``,
        ``star`` (catalogue name) and ``spt``. Raises :class:`GridMismatchError` if one file's
        grid differs from the others.
    """
    p = Path(path)
    if not p.is_dir():
        return _read_star(p)
    files = _star_files(p)
    if not files:
        raise InputFormatError("no MILES_*star_m####*.fits files in directory", path=p)
    if params is None:
        params = next((p / f for f in PARAMS_FILES if (p / f).is_file()), None)
    table = read_params(params) if params is not None else {}
    spectra = [_read_star(f) for _, f in files]
    ids = np.array([i for i, _ in files])
    rec = [table.get(int(i), {}) for i in ids]

    def col(key: str) -> NDArray[np.float64]:
        return np.array([r.get(key, np.nan) for r in rec], dtype=np.float64)

    return stack(spectra, names=[f"m{i:04d}" for i in ids], path=p, fmt=FORMAT,
                 teff=col("teff"), logg=col("logg"), feh=col("feh"),
                 extra={"miles_id": ids, "star": np.array([r.get("name", "") for r in rec]),
                        "spt": np.array([r.get("spt", "") for r in rec])},
                 meta={"flux_unit": "relative", "library": "MILES v9.1",
                       "wavelength_medium_original": "air",
                       "params_file": None if params is None else os.fspath(params)})
