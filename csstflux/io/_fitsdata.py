"""Decode FITS data units from bytes already checked by :func:`csstflux.io.fitsutil.walk_hdus`.

The readers never hand a file to a FITS library before :mod:`csstflux.io.fitsutil` has proved
that every byte its headers promise is present. Images and simple binary tables (numeric and
character columns, fixed repeat counts) are then decoded here straight from those bytes with
numpy, which is fast enough to read the ~600 files of the CK04 grid in well under a second.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import InputFormatError, TruncatedFileError
from csstflux.io.fitsutil import HduInfo, _parse_header, read_raw, walk_hdus

_BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_TFORM_DTYPE = {"L": "S1", "B": ">u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4",
                "D": ">f8", "A": "S"}
_TFORM_RE = re.compile(r"^\s*(\d*)([LBIJKEDA])")


def load(path: str | os.PathLike[str]) -> tuple[bytes, list[HduInfo]]:
    """Bytes (gunzipped) and checked HDU list of a FITS file; raises on truncation."""
    raw = read_raw(path)
    return raw, walk_hdus(raw, path)


def header_float(hdu: HduInfo, key: str, default: float | None = None) -> float | None:
    """Numeric header value (FITS ``D`` exponents accepted), or ``default`` when absent."""
    value = hdu.get(key)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value.strip().strip("'").replace("D", "E").replace("d", "e"))
    except ValueError:
        return default


def header_number(hdu: HduInfo, key: str, default: float) -> float:
    """Like :func:`header_float` but never None."""
    value = header_float(hdu, key)
    return default if value is None else value


def read_image(raw: bytes, hdu: HduInfo, path: str | os.PathLike[str]) -> NDArray[np.float64]:
    """Image data of ``hdu`` as float64 with BSCALE/BZERO applied; shape is numpy order."""
    bitpix = hdu.get_int("BITPIX")
    naxis = hdu.get_int("NAXIS")
    if bitpix not in _BITPIX_DTYPE:
        raise InputFormatError("unsupported BITPIX", path=path, hdu=hdu.index,
                               expected=sorted(_BITPIX_DTYPE), found=bitpix)
    dims = [hdu.get_int(f"NAXIS{i}") for i in range(naxis, 0, -1)]
    n = int(np.prod(dims)) if dims else 0
    data = np.frombuffer(raw, dtype=_BITPIX_DTYPE[bitpix], count=n, offset=hdu.data_start)
    out = data.astype(np.float64).reshape(dims)
    bscale = header_number(hdu, "BSCALE", 1.0)
    bzero = header_number(hdu, "BZERO", 0.0)
    if bscale != 1.0 or bzero != 0.0:
        out = out * bscale + bzero
    return out


def table_columns(hdu: HduInfo) -> list[str]:
    """Column names (TTYPEn) of a binary-table HDU, as written."""
    n = hdu.get_int("TFIELDS")
    return [hdu.get_str(f"TTYPE{i}", f"col{i}") for i in range(1, n + 1)]


def read_table(raw: bytes, hdu: HduInfo, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Columns of a BINTABLE HDU keyed by upper-case name.

    Numeric columns come back as float64 arrays of shape (n_rows,) for repeat 1 or
    (n_rows, repeat) otherwise; character columns as arrays of stripped ``str``.
    """
    if hdu.get_str("XTENSION").upper() != "BINTABLE":
        raise InputFormatError("not a binary table", path=path, hdu=hdu.index,
                               expected="XTENSION = 'BINTABLE'", found=hdu.get_str("XTENSION"))
    nrow = hdu.get_int("NAXIS2")
    width = hdu.get_int("NAXIS1")
    fields: list[tuple[str, str]] = []
    names: list[str] = []
    offset = 0
    for i, name in enumerate(table_columns(hdu), start=1):
        tform = hdu.get_str(f"TFORM{i}").upper()
        m = _TFORM_RE.match(tform)
        if m is None:
            raise InputFormatError(f"unsupported column format for {name!r}", path=path,
                                   hdu=hdu.index, expected="L, B, I, J, K, E, D or A",
                                   found=tform)
        repeat = int(m.group(1) or 1)
        code = m.group(2)
        dtype = f"S{repeat}" if code == "A" else _TFORM_DTYPE[code]
        shape = "" if code == "A" or repeat == 1 else f"{repeat}"
        fields.append((f"f{i}", f"{shape}{dtype}"))
        names.append(name.upper())
        offset += repeat * np.dtype(_TFORM_DTYPE[code] if code != "A" else "S1").itemsize
    if offset != width:
        raise InputFormatError("column formats do not add up to the row width", path=path,
                               hdu=hdu.index, expected=f"NAXIS1 = {offset}", found=width)
    rec = np.frombuffer(raw, dtype=np.dtype(fields), count=nrow, offset=hdu.data_start)
    out: dict[str, Any] = {}
    for (key, fmt), name in zip(fields, names, strict=True):
        col = rec[key]
        if "S" in fmt:
            out[name] = np.array([v.decode("ascii", "replace").strip() for v in col.ravel()])
        else:
            i = int(key[1:])
            scale = header_number(hdu, f"TSCAL{i}", 1.0)
            zero = header_number(hdu, f"TZERO{i}", 0.0)
            arr = col.astype(np.float64)
            out[name] = arr * scale + zero if (scale != 1.0 or zero != 0.0) else arr
    return out


def is_fits(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file that starts with ``SIMPLE  =`` (gzip looked through)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            import gzip

            with gzip.open(p, "rb") as gz:
                return gz.read(9) == b"SIMPLE  ="
        with open(p, "rb") as fh:
            return fh.read(9) == b"SIMPLE  ="
    except (OSError, EOFError):
        return False


def first_header(path: str | os.PathLike[str]) -> list[HduInfo] | None:
    """HDU list of a FITS file for ``identify()``: None instead of raising.

    A truncated file still yields its primary header (so that the right reader claims it
    and its ``read()`` reports the truncation).
    """
    if not is_fits(path):
        return None
    try:
        return load(path)[1]
    except TruncatedFileError:
        try:
            raw = read_raw(path)
            cards, data_start = _parse_header(raw, 0, Path(path), 0)
        except (InputFormatError, OSError, ValueError):
            return None
        return [HduInfo(0, 0, data_start, 0, cards)]
    except (InputFormatError, OSError, ValueError):
        return None
