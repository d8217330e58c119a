"""Generic 1-D FITS spectra: an image whose axis 1 carries a wavelength WCS.

Wavelength of pixel p (1-based), with ``w = CRVAL1 + (p - CRPIX1) · Δ``, ``Δ = CDELT1`` or
``CD1_1``, ``CRPIX1`` defaulting to 1:

- linear: λ = w;
- IRAF log-linear (``DC-FLAG = 1``), or ``CRVAL1 < 5`` with no other hint: λ = 10**w
  (a wavelength below 5 Å is taken to be log10 λ);
- FITS Paper III ``CTYPE1 = 'WAVE-LOG'``: λ = CRVAL1 · exp((p - CRPIX1) · Δ / CRVAL1).

Units from ``CUNIT1`` (Å default; nm, µm, m accepted). An optional FWHM keyword (Å) gives
``Resolution(fwhm=...)``.

Medium: the ``medium=`` argument wins; else header ``AIRORVAC`` (``air``/``vac``) or
``VACUUM`` (T/F); else **vacuum** (the convention of modern survey products and of this
package), recorded as ``meta["wavelength_medium_source"] = "default"``.

Errors: an image extension of the same length whose ``EXTNAME`` is ERROR/ERR/SIGMA/UNCERT/
STDDEV (1σ) or IVAR/INVVAR (inverse variance), or the extension named by ``error_hdu=``.
A directory of such files → :class:`SpectralLibrary` on one common grid, with an optional
parameter CSV (``name`` = file stem).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import InputFormatError
from csstflux.io import _fitsdata as fd
from csstflux.io._library import check_medium, finish_spectrum, params_for, read_params_csv, stack
from csstflux.io.fitsutil import HduInfo
from csstflux.spectrum import Resolution, SpectralLibrary, Spectrum

FORMAT = "generic-fits"
SIGMA_NAMES = ("ERROR", "ERR", "SIGMA", "UNCERT", "STDDEV", "NOISE")
IVAR_NAMES = ("IVAR", "INVVAR")
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


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a FITS file whose primary HDU is a 1-D image with a wavelength WCS (MILES files
    included), or a directory whose first ``*.fits`` file is one."""
    p = Path(path)
    try:
        if p.is_dir():
            first = next(iter(sorted(p.glob("*.fits"))), None)
            return first is not None and identify(first)
        hdus = fd.first_header(p)
    except OSError:
        return False
    return hdus is not None and _axis_length(hdus[0]) is not None and _has_wcs(hdus[0])


def wavelength_from_header(h: HduInfo, n: int, path: str | os.PathLike[str]
                           ) -> tuple[NDArray[np.float64], str]:
    """(wavelength (n,) Å in the file's medium, kind ``linear``/``log10``/``wave-log``)."""
    crval = fd.header_float(h, "CRVAL1")
    delta = fd.header_float(h, "CDELT1", fd.header_float(h, "CD1_1"))
    if crval is None or delta is None:
        raise InputFormatError("no wavelength solution", path=path, hdu=h.index,
                               expected="CRVAL1 and CDELT1 or CD1_1", found="missing")
    crpix = fd.header_float(h, "CRPIX1", 1.0) or 1.0
    unit = h.get_str("CUNIT1").lower().replace("µ", "u")
    if unit not in _UNIT_TO_ANGSTROM:
        raise InputFormatError("unsupported wavelength unit", path=path, hdu=h.index,
                               expected=sorted(_UNIT_TO_ANGSTROM), found=unit)
    scale = _UNIT_TO_ANGSTROM[unit]
    pix = np.arange(n, dtype=np.float64) + 1.0 - crpix
    ctype = h.get_str("CTYPE1").upper()
    dcflag = fd.header_float(h, "DC-FLAG", 0.0)
    if ctype.startswith("WAVE-LOG"):
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
    return "vacuum", "default"


def _error(raw: bytes, hdus: list[HduInfo], n: int, path: Path,
           error_hdu: int | str | None) -> tuple[NDArray[np.float64] | None, str | None]:
    for h in hdus[1:]:
        extname = h.get_str("EXTNAME").upper()
        chosen = (error_hdu == h.index or (isinstance(error_hdu, str)
                                             and extname == error_hdu.upper()))
        if error_hdu is None and extname not in SIGMA_NAMES + IVAR_NAMES:
            continue
        if error_hdu is not None and not chosen:
            continue
        if _axis_length(h) != n:
            raise InputFormatError("error extension does not match the flux length",
                                   path=path, hdu=h.index, expected=n, found=_axis_length(h))
        data = fd.read_image(raw, h, path).ravel()
        if extname in IVAR_NAMES:
            with np.errstate(divide="ignore"):
                return np.where(data > 0, 1.0 / np.sqrt(np.abs(data)), 0.0), extname
        return data, extname
    if error_hdu is not None:
        raise InputFormatError("requested error extension not found", path=path,
                               expected=error_hdu, found=f"{len(hdus)} HDUs")
    return None, None


def _read_one(path: Path, medium: str | None, error_hdu: int | str | None,
              resolution: Resolution | None) -> Spectrum:
    raw, hdus = fd.load(path)
    h = hdus[0]
    n = _axis_length(h)
    if n is None or not _has_wcs(h):
        raise InputFormatError("not a 1-D spectrum with a wavelength WCS", path=path, hdu=0,
                               expected="NAXIS = 1, CRVAL1, CDELT1/CD1_1",
                               found=f"NAXIS = {h.get_int('NAXIS')}")
    flux = fd.read_image(raw, h, path).ravel()
    wave, kind = wavelength_from_header(h, n, path)
    med, source = _medium(h, medium)
    error, err_ext = _error(raw, hdus, n, path, error_hdu)
    if resolution is None:
        fwhm = fd.header_float(h, "FWHM")
        resolution = Resolution(fwhm=fwhm) if fwhm and fwhm > 0 else Resolution()
    meta: dict[str, Any] = {"flux_unit": h.get_str("BUNIT", "unknown") or "unknown",
                            "wcs": kind, "wavelength_medium_source": source,
                            "error_extension": err_ext, "name": path.name.split(".")[0],
                            "object": h.get_str("OBJECT")}
    return finish_spectrum(wave, flux, path=path, fmt=FORMAT, medium=med, error=error,
                           meta=meta, resolution=resolution, hdu=0)


def read(path: str | os.PathLike[str], *, medium: str | None = None,
         error_hdu: int | str | None = None, resolution: Resolution | None = None,
         params: str | os.PathLike[str] | None = None) -> Spectrum | SpectralLibrary:
    """Read a 1-D FITS spectrum (→ :class:`Spectrum`) or a directory of them (→ library).

    Parameters
    ----------
    path : path-like
        FITS file (gzip allowed) or a directory of ``*.fits`` files.
    medium : {"air", "vacuum"}, optional
        Overrides the header (see module docstring).
    error_hdu : int or str, optional
        Index or EXTNAME of the 1σ error extension.
    resolution : Resolution, optional
        Overrides the header ``FWHM``.
    params : path-like, optional
        Directory only: CSV ``name, teff, logg, feh, ...`` matched to file stems.

    Returns
    -------
    Spectrum or SpectralLibrary
        Wavelength (n_pix,) vacuum Å; flux in ``BUNIT``; error (NaN when absent).
    """
    p = Path(path)
    if not p.is_dir():
        return _read_one(p, medium, error_hdu, resolution)
    files = sorted(p.glob("*.fits")) + sorted(p.glob("*.fits.gz"))
    if not files:
        raise InputFormatError("no *.fits files in directory", path=p)
    spectra = [_read_one(f, medium, error_hdu, resolution) for f in files]
    names = [s.meta["name"] for s in spectra]
    teff = logg = feh = None
    extra: dict[str, Any] = {}
    if params is not None:
        teff, logg, feh, extra = params_for(names, read_params_csv(params), params)
    return stack(spectra, names=names, path=p, fmt=FORMAT, teff=teff, logg=logg, feh=feh,
                 extra=extra, meta={"flux_unit": spectra[0].meta["flux_unit"],
                                    "wavelength_medium_original":
                                        spectra[0].meta["wavelength_medium_original"]})
