"""Generic 1-D FITS spectra: an image whose axis 1 carries a wavelength WCS; and libraries
made of such files (or of ECSV/CSV tables), each file with its own wavelength grid.

Wavelength of pixel p (1-based), with ``w = CRVAL1 + (p - CRPIX1) · Δ``, ``Δ = CDELT1`` or
``CD1_1``, ``CRPIX1`` defaulting to 1:

- linear: λ = w;
- IRAF log-linear (``DC-FLAG = 1``), or ``CRVAL1 < 5`` with no other hint: λ = 10**w
  (a wavelength below 5 Å is taken to be log10 λ);
- FITS Paper III ``CTYPE1 = 'WAVE-LOG'`` or ``'AWAV-LOG'``: λ = CRVAL1 · exp((p - CRPIX1) · Δ
  / CRVAL1).

Units from ``CUNIT1`` (Å default; nm, µm, m accepted).

Medium: the ``medium=`` argument wins; else header ``AIRORVAC`` (``air``/``vac``), ``VACUUM``
(T/F), or ``CTYPE1`` (``AWAV…`` air, ``WAVE…`` vacuum); else **vacuum** (the convention of
modern survey products and of this package), recorded as
``meta["wavelength_medium_source"] = "default"``.

Resolution: the ``resolution=`` argument wins; else header ``FWHM`` (constant FWHM, in the
``CUNIT1`` unit) or ``SPEC_RES``, ``RESOLUTN``, ``R`` (resolving power λ/FWHM); else the
sampling limit, FWHM = 2 pixels (:func:`~csstflux.io.formats._common.sampling_resolution`), recorded
as ``meta["resolution_source"] = "default"``. A library read with guesses warns once per
guessed quantity.

Bad pixels: NaN/inf flux; exact zeros running from either end or in runs of at least
:data:`~csstflux.io.formats._common.ZERO_RUN` (padding); non-zero values of a mask extension
(``EXTNAME`` MASK/QUALITY/FLAG/FLAGS/BADPIX/DQ, same length). Errors: an image extension of the
same length whose ``EXTNAME`` is ERROR/ERR/SIGMA/UNCERT/STDDEV/NOISE (1σ) or IVAR/INVVAR
(inverse variance), or the extension named by ``error_hdu=``.

Stellar parameters: header ``TEFF``, ``LOGG``/``LOG_G``, ``FEH``/``FE_H``/``MH``/``M_H``
(``meta["teff"]``...), used by a library read without a parameter CSV.

A directory → :class:`SpectralLibrary` (:func:`read_library`): every ``*.fits``/``*.fits.gz``
file and every ``*.ecsv``/``*.csv`` table that :mod:`~csstflux.io.formats.generic_table` identifies
as
a spectrum (other tables, such as a parameter CSV, are skipped); on one common grid when all
files share one, otherwise with one grid per star.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import Resolution, SpectralLibrary, Spectrum
from csstflux.errors import InputFormatError
from csstflux.io.fits import decode as fd
from csstflux.io.fits.decode import HduInfo
from csstflux.io.formats import generic_table
from csstflux.io.formats._common import (
    check_medium,
    check_wavelength,
    finish_spectrum,
    params_for,
    params_from_keywords,
    read_params_csv,
    resolution_from_keywords,
    sampling_resolution,
    stack,
    warn_guesses,
    zero_padding,
)

FORMAT = "generic-fits"
SIGMA_NAMES = ("ERROR", "ERR", "SIGMA", "UNCERT", "STDDEV", "NOISE")
IVAR_NAMES = ("IVAR", "INVVAR")
MASK_NAMES = ("MASK", "QUALITY", "FLAG", "FLAGS", "BADPIX", "DQ")
_UNIT_TO_ANGSTROM = {"": 1.0, "angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "aa": 1.0,
                     "nm": 10.0, "um": 1e4, "micron": 1e4, "microns": 1e4, "m": 1e10}


def _axis_length(h: HduInfo) -> int | None:
    naxis = h.get_int("NAXIS")
    if naxis == 1:
        return h.get_int("NAXIS1")
    if naxis == 2 and h.get_int("NAXIS2") == 1:
        return h.get_int("NAXIS1")
    return None


def _has_wcs(h: HduInfo) -> bool:
    return h.get("CRVAL1") is not None and (h.get("CDELT1") is not None
                                            or h.get("CD1_1") is not None)


def _stem(path: Path) -> str:
    """File name without ``.fits``/``.fit``/``.fts`` and ``.gz`` (other dots kept)."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    root, dot, ext = name.rpartition(".")
    return root if dot and ext.lower() in ("fits", "fit", "fts") else name


def _fits_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.fits")) + sorted(directory.glob("*.fits.gz"))


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a FITS file whose primary HDU is a 1-D image with a wavelength WCS (MILES files
    included), or a directory whose first ``*.fits`` file is one."""
    p = Path(path)
    try:
        if p.is_dir():
            first = next(iter(_fits_files(p)), None)
            return first is not None and identify(first)
        hdus = fd.first_header(p)
    except OSError:
        return False
    return hdus is not None and _axis_length(hdus[0]) is not None and _has_wcs(hdus[0])


def _unit_scale(h: HduInfo, path: str | os.PathLike[str]) -> float:
    unit = h.get_str("CUNIT1").lower().replace("µ", "u")
    if unit not in _UNIT_TO_ANGSTROM:
        raise InputFormatError("unsupported wavelength unit", path=path, hdu=h.index,
                               expected=sorted(_UNIT_TO_ANGSTROM), found=unit)
    return _UNIT_TO_ANGSTROM[unit]


def wavelength_from_header(h: HduInfo, n: int, path: str | os.PathLike[str]
                           ) -> tuple[NDArray[np.float64], str]:
    """(wavelength (n,) Å in the file's medium, kind ``linear``/``log10``/``wave-log``)."""
    crval = fd.header_float(h, "CRVAL1")
    delta = fd.header_float(h, "CDELT1", fd.header_float(h, "CD1_1"))
    if crval is None or delta is None:
        raise InputFormatError("no wavelength solution", path=path, hdu=h.index,
                               expected="CRVAL1 and CDELT1 or CD1_1", found="missing")
    crpix = fd.header_float(h, "CRPIX1", 1.0) or 1.0
    scale = _unit_scale(h, path)
    pix = np.arange(n, dtype=np.float64) + 1.0 - crpix
    ctype = h.get_str("CTYPE1").upper()
    dcflag = fd.header_float(h, "DC-FLAG", 0.0)
    if ctype.endswith("-LOG") and ctype[:4] in ("WAVE", "AWAV"):
        return crval * np.exp(pix * delta / crval) * scale, "wave-log"
    if dcflag == 1 or crval < 5:
        return 10.0 ** (crval + pix * delta) * scale, "log10"
    return (crval + pix * delta) * scale, "linear"


def _medium(h: HduInfo, medium: str | None) -> tuple[str, str]:
    if medium is not None:
        return check_medium(medium), "argument"
    airorvac = h.get_str("AIRORVAC").lower()
    if airorvac:
        return check_medium(airorvac), "AIRORVAC"
    vac = h.get("VACUUM")
    if vac is not None:
        return ("vacuum" if vac.strip().upper().startswith("T") else "air"), "VACUUM"
    ctype = h.get_str("CTYPE1").upper()
    if ctype[:4] in ("AWAV", "WAVE"):
        return ("air" if ctype.startswith("AWAV") else "vacuum"), "CTYPE1"
    return "vacuum", "default"


def _extension(raw: bytes, hdus: list[HduInfo], n: int, path: Path, names: tuple[str, ...],
               chosen: int | str | None = None) -> tuple[NDArray[np.float64] | None, str | None]:
    """Data of the first extension named in ``names`` (or the one ``chosen`` by index or
    EXTNAME) and its EXTNAME; its length must be the flux's."""
    for h in hdus[1:]:
        extname = h.get_str("EXTNAME").upper()
        if chosen is None and extname not in names:
            continue
        if chosen is not None and not (chosen == h.index or (
                isinstance(chosen, str) and extname == chosen.upper())):
            continue
        if _axis_length(h) != n:
            raise InputFormatError(f"{extname or 'requested'} extension does not match the "
                                   "flux length", path=path, hdu=h.index, expected=n,
                                   found=_axis_length(h))
        return fd.read_image(raw, h, path).ravel(), extname
    if chosen is not None:
        raise InputFormatError("requested error extension not found", path=path,
                               expected=chosen, found=f"{len(hdus)} HDUs")
    return None, None


def _error(raw: bytes, hdus: list[HduInfo], n: int, path: Path,
           error_hdu: int | str | None) -> tuple[NDArray[np.float64] | None, str | None]:
    data, extname = _extension(raw, hdus, n, path, SIGMA_NAMES + IVAR_NAMES, error_hdu)
    if data is not None and extname in IVAR_NAMES:
        with np.errstate(divide="ignore"):
            return np.where(data > 0, 1.0 / np.sqrt(np.abs(data)), 0.0), extname
    return data, extname


def _read_one(path: Path, medium: str | None, error_hdu: int | str | None,
              resolution: Resolution | None) -> Spectrum:
    raw, hdus = fd.load_fits_bytes(path)
    h = hdus[0]
    n = _axis_length(h)
    if n is None or not _has_wcs(h):
        raise InputFormatError("not a 1-D spectrum with a wavelength WCS", path=path, hdu=0,
                               expected="NAXIS = 1, CRVAL1, CDELT1/CD1_1",
                               found=f"NAXIS = {h.get_int('NAXIS')}")
    flux = fd.read_image(raw, h, path).ravel()
    wave, kind = wavelength_from_header(h, n, path)
    wave = check_wavelength(wave, path, 0)
    med, source = _medium(h, medium)
    error, err_ext = _error(raw, hdus, n, path, error_hdu)
    flags, mask_ext = _extension(raw, hdus, n, path, MASK_NAMES)
    mask = zero_padding(flux)
    if flags is not None:
        mask |= flags != 0
    res_source = "argument"
    if resolution is None:
        found = resolution_from_keywords(h.get, _unit_scale(h, path))
        resolution, res_source = found if found else (sampling_resolution(wave), "default")
    meta: dict[str, Any] = {"flux_unit": h.get_str("BUNIT", "unknown") or "unknown",
                            "wcs": kind, "wavelength_medium_source": source,
                            "resolution_source": res_source, "error_extension": err_ext,
                            "mask_extension": mask_ext, "name": _stem(path),
                            "object": h.get_str("OBJECT"), **params_from_keywords(h.get)}
    return finish_spectrum(wave, flux, path=path, fmt=FORMAT, medium=med, error=error,
                           mask=mask, meta=meta, resolution=resolution, hdu=0)


def read_library(directory: str | os.PathLike[str], *, medium: str | None = None,
                 resolution: Resolution | None = None,
                 params: str | os.PathLike[str] | None = None,
                 error_hdu: int | str | None = None, fmt: str = FORMAT) -> SpectralLibrary:
    """Read a directory of generic spectra (1-D FITS with WCS, ECSV/CSV tables) as a library.

    Parameters
    ----------
    directory : path-like
        Folder of ``*.fits``/``*.fits.gz`` files (every one must be a spectrum) and
        ``*.ecsv``/``*.csv`` tables (those with wavelength and flux columns are read).
    medium, resolution : optional
        Override every file's header or table meta (see module docstring).
    params : path-like, optional
        CSV ``name, teff, logg, feh, ...`` matched to file stems; without it, the parameters
        come from each file's header keywords or table meta (NaN where absent).
    error_hdu : int or str, optional
        FITS files: index or EXTNAME of the 1σ error extension.
    fmt : str
        Format name recorded in the library.

    Returns
    -------
    SpectralLibrary
        Stars in file-name order (FITS first). One common grid when all files share one;
        else one grid per star (``wavelength`` (n_star, n_pix)). Warns once per quantity
        (medium, resolution) that some file leaves to a default.
    """
    p = Path(directory)
    tables = [f for f in sorted(p.iterdir()) if f.suffix.lower() in generic_table.SUFFIXES
              and generic_table.identify(f)]
    spectra = [_read_one(f, medium, error_hdu, resolution) for f in _fits_files(p)]
    spectra += [generic_table.read_file(f, medium=medium, resolution=resolution)
                for f in tables]
    if not spectra:
        raise InputFormatError("no spectra in directory", path=p,
                               expected="*.fits, *.fits.gz, or *.ecsv/*.csv spectra",
                               found="none")
    warn_guesses(spectra, p)
    names = [s.meta["name"] for s in spectra]
    extra: dict[str, Any] = {}
    if params is not None:
        teff, logg, feh, extra = params_for(names, read_params_csv(params), params)
    else:
        teff, logg, feh = (np.array([s.meta.get(k, np.nan) for s in spectra], dtype=float)
                           for k in ("teff", "logg", "feh"))
    media = sorted({s.meta["wavelength_medium_original"] for s in spectra})
    return stack(spectra, names=names, path=p, fmt=fmt, teff=teff, logg=logg, feh=feh,
                 extra=extra, per_star_grid=True,
                 meta={"flux_unit": spectra[0].meta["flux_unit"],
                       "wavelength_medium_original": "/".join(media),
                       "params_source": "csv" if params is not None else "headers"})


def read(path: str | os.PathLike[str], *, medium: str | None = None,
         error_hdu: int | str | None = None, resolution: Resolution | None = None,
         params: str | os.PathLike[str] | None = None) -> Spectrum | SpectralLibrary:
    """Read a 1-D FITS spectrum (→ :class:`Spectrum`) or a directory of them (→ library).

    Parameters
    ----------
    path : path-like
        FITS file (gzip allowed) or a directory (see :func:`read_library`).
    medium : {"air", "vacuum"}, optional
        Overrides the header (see module docstring).
    error_hdu : int or str, optional
        Index or EXTNAME of the 1σ error extension.
    resolution : Resolution, optional
        Overrides the header ``FWHM``/``SPEC_RES``/``RESOLUTN``/``R``.
    params : path-like, optional
        Directory only: CSV ``name, teff, logg, feh, ...`` matched to file stems.

    Returns
    -------
    Spectrum or SpectralLibrary
        Wavelength vacuum Å; flux in ``BUNIT``; error (NaN when absent).
    """
    p = Path(path)
    if p.is_dir():
        return read_library(p, medium=medium, resolution=resolution, params=params,
                            error_hdu=error_hdu)
    return _read_one(p, medium, error_hdu, resolution)
