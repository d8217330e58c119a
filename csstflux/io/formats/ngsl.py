"""HST/STIS Next Generation Spectral Library, version 2 (MAST HLSP ``stisngsl``).

Sources: the NGSL v1 README (Lindler & Heap 2008, "STIS Next Generation Spectral Library",
section 1 "File Content and Format") and third-party readers of the v2 files
(``h_stis_ngsl_<star>_v2.fits`` from archive.stsci.edu/pub/hlsp/stisngsl/v2/, read as
``hdu[1].data['WAVELENGTH']``, ``['FLUX']``, one row per pixel). MAST's own v2 format note
(``File_format_contents_V2.pdf``) could not be consulted here, so the error columns are looked
up under every spelling in use: statistical ``STAT_ERR``/``STATERR``/``STATERROR``/
``STAT_ERROR`` and systematic ``SYS_ERR``/``SYSERR``/``SYSERROR``/``SYS_ERROR``; a ``DQ``
column is optional. Vector columns in a single row are accepted too.

Each file: primary header (``TARGNAME``, ``DATAQUAL`` good/suspect, and, where the authors fitted
a model, ``TEFF``, ``LOG_G``, ``LOG_Z``, ``EBMV``), HDU 1 a binary table: WAVELENGTH (Å), FLUX
(erg s⁻¹ cm⁻² Å⁻¹), errors in the flux unit. G230LB + G430L + G750L merged, ~1670-10200 Å,
R ≈ 1000 (nominal; it varies along the spectrum).

Wavelength medium: **vacuum**, the HST/STIS pipeline convention (``medium=`` overrides).
Error = sqrt(stat² + sys²); pixels with DQ ≠ 0 or error ≤ 0 are masked. Stellar parameters
come from an optional CSV (``name, teff, logg, feh, ebv/av, ...``), otherwise from the header
fit keywords when present (NaN if not).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.containers import Resolution, SpectralLibrary, Spectrum
from csstflux.errors import InputFormatError
from csstflux.io.fits import decode as fd
from csstflux.io.fits.decode import HduInfo
from csstflux.io.formats._common import finish_spectrum, params_for, read_params_csv, stack

FORMAT = "ngsl"
#: Nominal resolving power of the STIS low-resolution gratings used by NGSL.
NGSL_R = 1000.0
NAME_RE = re.compile(r"^h_stis_ngsl_(?P<star>.+?)_v\d+\.fits(\.gz)?$", re.IGNORECASE)
STAT_COLUMNS = ("STAT_ERR", "STATERR", "STATERROR", "STAT_ERROR")
SYS_COLUMNS = ("SYS_ERR", "SYSERR", "SYSERROR", "SYS_ERROR")
_HEADER_PARAMS = {"teff": "TEFF", "logg": "LOG_G", "feh": "LOG_Z", "ebv": "EBMV"}


def _looks_ngsl(path: Path, hdus: list[HduInfo]) -> bool:
    if NAME_RE.match(path.name):
        return True
    h = hdus[0]
    if h.get_str("INSTRUME").upper() != "STIS" or len(hdus) < 2:
        return False
    cols = {c.upper() for c in fd.table_columns(hdus[1])}
    return {"WAVELENGTH", "FLUX"} <= cols and bool(cols & set(STAT_COLUMNS))


def identify(path: str | os.PathLike[str]) -> bool:
    """True for an NGSL file (``h_stis_ngsl_*_v2.fits``, or a STIS table with WAVELENGTH, FLUX
    and a statistical-error column) or a directory holding ``h_stis_ngsl_*`` files."""
    p = Path(path)
    try:
        if p.is_dir():
            return any(NAME_RE.match(q.name) for q in p.iterdir())
        hdus = fd.first_header(p)
        return hdus is not None and _looks_ngsl(p, hdus)
    except OSError:
        return False


def _pick(cols: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((np.ravel(cols[n]) for n in names if n in cols), None)


def _read_one(path: Path, medium: str, resolving_power: float) -> Spectrum:
    raw, hdus = fd.load_fits_bytes(path)
    if len(hdus) < 2:
        raise InputFormatError("NGSL file has no table extension", path=path,
                               expected="binary table in HDU 1", found=f"{len(hdus)} HDU(s)")
    cols = fd.read_table(raw, hdus[1], path)
    stat = _pick(cols, STAT_COLUMNS)
    if "WAVELENGTH" not in cols or "FLUX" not in cols or stat is None:
        raise InputFormatError("NGSL table lacks required columns", path=path, hdu=1,
                               expected="WAVELENGTH, FLUX, STAT_ERR[, SYS_ERR, DQ]",
                               found=", ".join(cols))
    wave, flux = np.ravel(cols["WAVELENGTH"]), np.ravel(cols["FLUX"])
    sys_err = _pick(cols, SYS_COLUMNS)
    error = np.sqrt(stat**2 + (0.0 if sys_err is None else sys_err**2))
    error = np.where((stat < 0) | ((sys_err if sys_err is not None else 0.0) < 0), -1.0, error)
    mask = np.zeros(wave.shape, bool) if "DQ" not in cols else np.ravel(cols["DQ"]) != 0
    h = hdus[0]
    m = NAME_RE.match(path.name)
    name = m["star"].lower() if m else h.get_str("TARGNAME", path.stem).lower()
    meta: dict[str, Any] = {"flux_unit": "erg/s/cm2/A", "library": "STIS NGSL",
                            "name": name, "targname": h.get_str("TARGNAME"),
                            "dataqual": h.get_str("DATAQUAL"),
                            "error_components": "stat" if sys_err is None else "stat+sys"}
    for key, card in _HEADER_PARAMS.items():
        meta[f"header_{key}"] = fd.header_float(h, card, np.nan)
    return finish_spectrum(wave, flux, path=path, fmt=FORMAT, medium=medium, error=error,
                           mask=mask, meta=meta, hdu=1, nonpositive_error="mask",
                           resolution=Resolution(resolving_power=resolving_power))


def read(path: str | os.PathLike[str], *, params: str | os.PathLike[str] | None = None,
         medium: str = "vacuum", resolving_power: float = NGSL_R
         ) -> Spectrum | SpectralLibrary:
    """Read one NGSL v2 file (→ :class:`Spectrum`) or a directory of them (→ library).

    Parameters
    ----------
    path : path-like
        ``h_stis_ngsl_<star>_v2.fits`` or a directory holding such files.
    params : path-like, optional
        CSV with ``name`` (matched case-, space- and underscore-insensitively to the star part
        of the file name, e.g. ``HD102212``), ``teff``, ``logg``, ``feh`` and any extra
        columns (``ebv``, ``av``...), stored in ``extra``.
    medium : {"vacuum", "air"}
        Medium of the file wavelengths.
    resolving_power : float
        Nominal R recorded in :class:`Resolution`.

    Returns
    -------
    Spectrum or SpectralLibrary
        Flux erg s⁻¹ cm⁻² Å⁻¹ with 1σ error (stat ⊕ sys); library spectra must share one
        wavelength grid (:class:`GridMismatchError` otherwise). Names sorted alphabetically.
    """
    p = Path(path)
    if not p.is_dir():
        return _read_one(p, medium, resolving_power)
    files = sorted(q for q in p.iterdir() if NAME_RE.match(q.name))
    if not files:
        raise InputFormatError("no h_stis_ngsl_*.fits files in directory", path=p)
    spectra = [_read_one(f, medium, resolving_power) for f in files]
    names = [s.meta["name"] for s in spectra]
    if params is not None:
        teff, logg, feh, extra = params_for(names, read_params_csv(params), params)
    else:
        teff, logg, feh = (np.array([s.meta[f"header_{k}"] for s in spectra])
                           for k in ("teff", "logg", "feh"))
        extra = {"ebv": np.array([s.meta["header_ebv"] for s in spectra])}
    extra["dataqual"] = np.array([s.meta["dataqual"] for s in spectra])
    return stack(spectra, names=names, path=p, fmt=FORMAT, teff=teff, logg=logg, feh=feh,
                 extra=extra, meta={"flux_unit": "erg/s/cm2/A", "library": "STIS NGSL",
                                    "wavelength_medium_original": medium,
                                    "params_file": None if params is None else os.fspath(params)})
