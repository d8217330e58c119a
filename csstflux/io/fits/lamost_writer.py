"""LAMOST LRS spectrum writer: the inverse of :mod:`csstflux.io.formats.lamost`, in both layouts.

- ``layout="image"`` (DR1–DR7): the primary HDU is a 5 × N float32 image whose rows are flux,
  inverse variance, vacuum wavelength (Å), ANDMASK and ORMASK; the metadata are in its header.
- ``layout="coadd"`` (DR8 v2 and later): an empty primary HDU (``NAXIS = 0``) with the metadata
  and a BINTABLE ``COADD`` with one row of float32 vector columns FLUX, IVAR, WAVELENGTH,
  ANDMASK, ORMASK and NORMALIZATION, as the LAMOST pipeline writes them (masks as floats,
  NORMALIZATION −9999 with ``NORM = 0`` when no normalised spectrum is given).

Files are written with fitsio (cfitsio). Header floats are written as cfitsio formats them,
with 15 significant digits (``%.15G``): a value with more digits comes back rounded at the
15th. LAMOST itself writes at most ~10 digits, so values taken from real headers round-trip
exactly. Gzip is done in Python with a fixed timestamp (``mtime = 0``), so the same inputs
give byte-identical files, and because cfitsio's own gzip writer is ~8× slower. Every file
is written atomically (:func:`csstflux.io.atomic.atomic_path`: a unique temporary beside it,
fsynced, then renamed): a reader never sees a part of one.

Speed (N = 3909, 200 calls, on a shared 2-core AMD EPYC, ext4: CPU time per call, wall-clock
medians in brackets): image layout 1.4 ms plain (1.8 ms), 2.6 ms gzip (3.2 ms); coadd layout
1.3 ms plain (1.7 ms), 2.6 ms gzip (3.2 ms). The atomic write (fsync and rename) costs about
0.7 ms of it, gzip level 6 about 1.5 ms; level 1 would save 0.2 ms for the same size (noisy
float32 spectra compress to ~51 %).
"""

from __future__ import annotations

import gzip as _gzip
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.io.atomic import atomic_path
from csstflux.io.formats.lamost import COADD_COLUMNS

LAYOUTS = ("image", "coadd")
#: LAMOST's value for "no normalised spectrum" in the NORMALIZATION column.
NO_NORMALIZATION = -9999.0
#: Structural keywords fitsio writes itself; dropped from the header passed in.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
               "TFIELDS", "END", "CHECKSUM", "DATASUM", "ZIMAGE", "ZCMPTYPE", "BSCALE",
               "BZERO"}
_STRUCTURAL_PREFIXES = ("NAXIS", "TTYPE", "TFORM", "TUNIT", "TDIM")
#: Gzip level: 6 is as small as 9 on these files and no slower.
GZIP_LEVEL = 6
#: A wavelength solution is written only for rows this close (in pixels) to log-linear.
WCS_TOLERANCE = 0.01


def _records(header: Mapping[str, Any]) -> list[dict[str, Any]]:
    """fitsio header records; values may be ``value`` or ``(value, comment)``.

    fitsio silently drops EXTNAME from header records; :func:`write_lrs` writes it itself.
    """
    recs: list[dict[str, Any]] = []
    for key, item in header.items():
        name = key.strip().upper()
        if (name in _STRUCTURAL or name.startswith(_STRUCTURAL_PREFIXES) or not name
                or name in ("COMMENT", "HISTORY") or item is None):
            continue
        value, comment = item if isinstance(item, tuple) else (item, None)
        if isinstance(value, np.generic):
            value = value.item()
        rec: dict[str, Any] = {"name": name, "value": value}
        if comment:
            rec["comment"] = str(comment)
        recs.append(rec)
    return recs


def _defaults(header: Mapping[str, Any], path: Path, wave: NDArray[np.float32],
              layout: str) -> dict[str, Any]:
    """Keywords every LAMOST file has, filled in when the caller did not give them."""
    out = {k.strip().upper(): v for k, v in header.items()}
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    out.setdefault("FILENAME", name)
    out.setdefault("TELESCOP", ("LAMOST", "GuoShouJing Telescope"))
    out.setdefault("ORIGIN", ("NAOC-LAMOST", "Organization responsible for creating this file"))
    out.setdefault("VACUUM", (True, "Wavelengths are in vacuum"))
    if "COEFF0" not in out or "COEFF1" not in out:
        fit = _log_linear(wave)
        if fit is not None:
            out.setdefault("COEFF0", (fit[0], "Central wavelength (log10) of first pixel"))
            out.setdefault("COEFF1", (fit[1], "Log10 dispersion per pixel"))
    c0, c1 = (v[0] if isinstance(v, tuple) else v for v in (out.get("COEFF0"), out.get("COEFF1")))
    if c0 is not None and c1 is not None and "CRVAL1" not in out:
        out.update({"CRVAL1": (c0, "Central wavelength (log10) of first pixel"),
                    "CD1_1": (c1, "Log10 dispersion per pixel"),
                    "CRPIX1": (1, "Starting pixel (1-indexed)"),
                    "CTYPE1": ("LINEAR", ""), "DC-FLAG": (1, "Log-linear flag")})
    if layout == "coadd":
        out.setdefault("NORM", (0, "1 if there exists a normalized spectrum"))
    return out


def _log_linear(wave: NDArray[np.float32]) -> tuple[float, float] | None:
    """``(COEFF0, COEFF1)`` of a log-linear row (rounded as LAMOST writes them, to 6 and 8
    decimals), or None when the row is not log-linear to :data:`WCS_TOLERANCE` of a pixel
    (then no wavelength solution is written: the row alone says where the pixels are)."""
    if wave.size < 2 or not np.all(np.isfinite(wave) & (wave > 0)):
        return None
    lg = np.log10(wave.astype(np.float64))
    c0, c1 = round(float(lg[0]), 6), round(float(np.median(np.diff(lg))), 8)
    if c1 <= 0 or np.max(np.abs(lg - (c0 + c1 * np.arange(wave.size)))) > WCS_TOLERANCE * c1:
        return None
    return c0, c1


def write_lrs(path: str | os.PathLike[str], wavelength: ArrayLike, flux: ArrayLike,
              ivar: ArrayLike, andmask: ArrayLike, ormask: ArrayLike,
              header: Mapping[str, Any], layout: str = "image", gzip: bool | None = None,
              *, normalization: ArrayLike | None = None, checksum: bool = False) -> Path:
    """Write one LAMOST LRS spectrum file.

    Parameters
    ----------
    path
        Output file; replaced if it exists.
    wavelength : (n_pix,) float
        Vacuum wavelengths, Å, increasing.
    flux, ivar : (n_pix,) float
        Flux (relative units) and inverse variance (0 = no data).
    andmask, ormask : (n_pix,) int
        LAMOST mask bits (stored as float32, as LAMOST does).
    header
        Primary-header keywords (``OBSID``, ``RA``, ``DEC``, ``CLASS``, ``SUBCLASS``, ``Z``,
        ``Z_ERR``, ``SNRU``…``SNRZ``, ``MJD``, ``LMJD``, ``PLANID``, ``SPID``, ``FIBERID``,
        ``DATA_V``…): ``value`` or ``(value, comment)``. Structural keywords (NAXIS…,
        CHECKSUM…) are ignored, so a header read from a file can be passed back. ``FILENAME``,
        ``TELESCOP``, ``ORIGIN``, ``VACUUM`` and, for the coadd layout, ``NORM`` are filled in
        when missing; so is the wavelength solution as the real files state it:
        ``COEFF0``/``COEFF1`` from ``wavelength`` when it is log-linear (to 0.01 pixel; none
        otherwise), and ``CRVAL1``/``CD1_1``/``CRPIX1``/``CTYPE1``/``DC-FLAG`` equal to them.
        A header that gives ``COEFF0``/``COEFF1`` is written as given, consistent with the row
        or not (that is how tests make a file whose row disagrees with its WCS); a keyword
        given as None is neither written nor filled in.
    layout
        ``"image"`` (DR1–7) or ``"coadd"`` (DR8+).
    gzip
        Gzip the file; None (default): when ``path`` ends in ``.gz``.
    normalization : (n_pix,) float, optional
        Coadd layout only: the NORMALIZATION column (default −9999 everywhere).
    checksum
        Write CHECKSUM/DATASUM keywords (the reader verifies them).

    Returns
    -------
    Path
        ``path``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    p = Path(path)
    rows = [np.asarray(a, dtype=np.float32).ravel()
            for a in (flux, ivar, wavelength, andmask, ormask)]
    n = rows[0].size
    if any(r.size != n for r in rows) or n < 2:
        raise ValueError(f"flux, ivar, wavelength and masks must have one equal length >= 2, "
                         f"got {[r.size for r in rows]}")
    wave = rows[2]
    full = _defaults(header, p, wave, layout)
    hdr = _records(full)
    extname = full.get("EXTNAME") if layout == "image" else None  # coadd: COADD table's name
    zipped = p.name.endswith(".gz") if gzip is None else gzip
    with atomic_path(p) as tmp:
        with fitsio.FITS(os.fspath(tmp), "rw", clobber=True) as fits:
            if layout == "image":
                fits.write(np.stack(rows), header=hdr)
                if extname is not None:  # DR1-7 name the primary 'Flux'
                    value, comment = extname if isinstance(extname, tuple) else (extname, "")
                    fits[0].write_key("EXTNAME", value, comment=comment or "")
            else:
                norm = (np.full(n, NO_NORMALIZATION, np.float32) if normalization is None
                        else np.asarray(normalization, dtype=np.float32).ravel())
                if norm.size != n:
                    raise ValueError(f"normalization has {norm.size} pixels, flux has {n}")
                fits.write(None, header=hdr)
                cols = [*rows, norm]  # FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION
                table = np.zeros(1, dtype=[(c, ">f4", (n,)) for c in
                                           (*COADD_COLUMNS, "NORMALIZATION")])
                for c, v in zip(table.dtype.names or (), cols, strict=True):
                    table[c][0] = v
                fits.write(table, extname="COADD")
            if checksum:
                for hdu in fits:
                    hdu.write_checksum()
        if zipped:
            tmp.write_bytes(_gzip.compress(tmp.read_bytes(), compresslevel=GZIP_LEVEL, mtime=0))
    return p
