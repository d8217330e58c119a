"""FITS at the byte level, shared by every FITS reader: checks, header values and data units.

cfitsio (and so fitsio) reads the first columns of a truncated file without complaint and
decompresses a damaged gzip stream as far as it can. Before a reader trusts a file it calls
:func:`load_fits_bytes`, which decompresses gzip in Python (:mod:`csstflux.io.fits.inflate`,
with the fastest inflater installed, so a truncated stream or a CRC failure is caught), walks
every HDU header, compares the bytes the headers promise with the bytes present and verifies
the CHECKSUM/DATASUM keywords of the HDUs that carry them. These are the only FITS-level
checks in the package; spectrum-level checks live in :mod:`csstflux.io.validate`.

The header walk notes where each keyword's card is and leaves the values in the header text
until a reader asks for them (:class:`Cards`): a LAMOST header has ~120 cards, the reader
needs ~45, and parsing them all took longer than the rest of the walk.

Images (:func:`read_image`) and simple binary tables (:func:`read_table`: numeric and
character columns, fixed repeat counts; :func:`read_column`: one scalar numeric column of any
table whose earlier columns can be sized; :func:`plain_columns`: numeric columns as views,
not copied) are then decoded straight from those bytes with numpy, which is fast enough to
read the ~600 files of the CK04 grid in well under a second. Tables with variable-length or
other columns go to fitsio (:func:`read_bintable`).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from numpy.typing import NDArray

from csstflux.errors import InputFormatError, TruncatedFileError
from csstflux.io.fits.inflate import GZIP_MAGIC, gunzip

BLOCK = 2880
CARD = 80
#: Body of a FITS string value after its opening quote: anything but a lone quote.
_STRING_BODY = re.compile(r"(?:[^']|'')*")


@dataclass(frozen=True)
class HduInfo:
    """Where one HDU sits in a FITS byte stream and what its header says."""

    index: int
    header_start: int
    data_start: int
    data_bytes: int
    """Unpadded data size the header promises."""
    cards: Mapping[str, str]
    """Raw value strings of the header keywords (first occurrence), without comments
    (:class:`Cards`)."""

    @property
    def end(self) -> int:
        """Offset just after this HDU's padded data."""
        return self.data_start + _pad(self.data_bytes)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.cards.get(key, default)

    def get_int(self, key: str, default: int = 0) -> int:
        v = self.cards.get(key)
        return default if v is None else int(float(v))

    def get_str(self, key: str, default: str = "") -> str:
        v = self.cards.get(key)
        if v is None:
            return default
        return v.strip().strip("'").strip()


def _pad(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def is_gzip(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def read_raw(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, gunzipped when gzip (:func:`~csstflux.io.fits.inflate.gunzip`:
    truncated or damaged gzip streams raise clear errors)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFormatError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    if not data:
        raise InputFormatError("file is empty", path=path, expected="a FITS file", found="0 bytes")
    if data[:2] == GZIP_MAGIC:
        data = gunzip(data, path)
        if not data:
            raise InputFormatError("gzip stream decompresses to nothing", path=path)
    return data


class Cards(Mapping[str, str]):
    """Raw value strings of a header's keywords (first occurrence of each), without comments.

    Read lazily: the header is scanned once for where each ``KEYWORD = `` card sits and a value
    is cut out of its card the first time it is asked for (string values keep their quotes,
    with ``''`` unescaped; others are stripped of their comment). A LAMOST header has ~120
    cards and a reader looks at ~45 of them.
    """

    __slots__ = ("_text", "_where", "_values")

    def __init__(self, text: str, where: dict[str, int]) -> None:
        self._text = text
        self._where = where
        """Offset in ``text`` of each keyword's card."""
        self._values: dict[str, str] = {}

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._values.get(key)
        if value is None:
            pos = self._where.get(key)
            if pos is None:
                return default
            value = self._values[key] = _card_value(self._text[pos + 10:pos + CARD])
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return f"Cards({dict(self)!r})"


def _card_value(value: str) -> str:
    """The value part (columns 11-80) of a ``KEYWORD = `` card as :class:`Cards` keeps it."""
    text = value.lstrip()
    if text.startswith("'"):
        # string value: up to the closing quote ('' is an escaped quote)
        body = _STRING_BODY.match(text, 1)
        return "'" + (body.group(0) if body else "").replace("''", "'") + "'"
    return value.split("/", 1)[0].strip()


def _parse_header(raw: bytes, start: int, path: Path, index: int) -> tuple[Cards, int]:
    """The cards of the header that starts at byte ``start`` and the offset just after it."""
    where: dict[str, int] = {}
    blocks: list[str] = []
    pos = start
    while True:
        if pos + BLOCK > len(raw):
            raise TruncatedFileError("file ends inside a header", path=path, hdu=index,
                                     expected=f"END card by byte {pos + BLOCK}",
                                     found=f"{len(raw)} bytes")
        block = raw[pos:pos + BLOCK]
        pos += BLOCK
        bad: UnicodeDecodeError | None = None
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError as exc:   # the cards before the first non-ASCII one
            bad, text = exc, block[:exc.start // CARD * CARD].decode("ascii")
        offset = BLOCK * len(blocks)
        for i in range(0, len(text), CARD):
            head = text[i:i + 10]
            key = head[:8].strip()
            if key == "END":
                blocks.append(text[:i])
                return Cards("".join(blocks), where), pos
            if key and head[8:] == "= " and key not in where:
                where[key] = offset + i
        if bad is not None:
            raise InputFormatError("header contains non-ASCII bytes (corrupt file?)",
                                   path=path, hdu=index) from bad
        blocks.append(text)


def _data_bytes(cards: Mapping[str, str]) -> int:
    """Unpadded size of the data unit a header promises (FITS standard 4.0, eq. 2);
    :class:`KeyError` naming the keyword that is missing or not a number."""

    def number(key: str, default: str | None = None) -> int:
        value = cards.get(key, default)
        if value is not None:
            try:
                return int(float(value))
            except ValueError:
                pass
        raise KeyError(key)

    bitpix = number("BITPIX")
    naxis = number("NAXIS")
    n = 1
    for i in range(1, naxis + 1):
        n *= number(f"NAXIS{i}")
    pcount = number("PCOUNT", "0")
    if naxis <= 0 and not pcount:
        return 0
    return abs(bitpix) // 8 * number("GCOUNT", "1") * (pcount + (n if naxis > 0 else 0))


def walk_hdus(raw: bytes, path: str | os.PathLike[str] = "<bytes>") -> list[HduInfo]:
    """Parse every HDU header in ``raw`` and check the data each promises is present.

    Raises :class:`InputFormatError` when ``raw`` is not FITS and :class:`TruncatedFileError`
    when a header or a data unit is cut short.
    """
    p = Path(path)
    if not raw.startswith(b"SIMPLE  ="):
        raise InputFormatError("not a FITS file", path=p, expected="'SIMPLE  =' at byte 0",
                               found=repr(raw[:9]))
    hdus: list[HduInfo] = []
    pos = 0
    while pos < len(raw):
        if hdus and raw[pos:pos + 8] != b"XTENSION":
            # trailing bytes that are not an extension (zero padding is legal)
            break
        cards, data_start = _parse_header(raw, pos, p, len(hdus))
        try:
            nbytes = _data_bytes(cards)
        except KeyError as exc:
            raise InputFormatError(f"header lacks a valid {exc} keyword", path=p,
                                   hdu=len(hdus)) from exc
        info = HduInfo(len(hdus), pos, data_start, nbytes, cards)
        if data_start + nbytes > len(raw):
            raise TruncatedFileError("file is shorter than its header promises", path=p,
                                     hdu=len(hdus), expected=f"{data_start + nbytes} bytes",
                                     found=f"{len(raw)} bytes")
        hdus.append(info)
        pos = info.end
    return hdus


# --- checksums (FITS standard 4.0, appendix J) and cheap header peeks --------------------------

_MASK32 = 0xFFFFFFFF
_CHUNK_WORDS = 1 << 28  # uint64 partial sums of this many 32-bit words cannot overflow


def ones_complement_sum(data: bytes | memoryview) -> int:
    """32-bit ones'-complement sum of ``data`` read as big-endian unsigned 32-bit words.

    This is the sum FITS ``DATASUM`` records and ``CHECKSUM`` complements. ``data`` is padded
    with zero bytes to a multiple of 4 (zero words do not change the sum). Returns an integer in
    [0, 2**32 - 1]; 0 only when every word is zero.
    """
    buf = memoryview(data).cast("B")
    tail = len(buf) % 4
    total = 0
    n_words = len(buf) // 4
    words = np.frombuffer(buf, dtype=">u4", count=n_words)
    for i in range(0, n_words, _CHUNK_WORDS):
        total += int(words[i:i + _CHUNK_WORDS].sum(dtype=np.uint64))
    if tail:
        total += int.from_bytes(bytes(buf[4 * n_words:]) + b"\0" * (4 - tail), "big")
    while total > _MASK32:  # end-around carry
        total = (total & _MASK32) + (total >> 32)
    return total


def verify_checksums(raw: bytes, hdus: list[HduInfo],
                     path: str | os.PathLike[str] = "<bytes>") -> None:
    """Check the ``DATASUM`` and ``CHECKSUM`` keywords of every HDU that has them.

    ``DATASUM`` must equal the ones'-complement sum of the data unit; the ones'-complement sum
    of the whole HDU (header as written, including its ``CHECKSUM`` card, plus data) must be
    negative zero (``0xFFFFFFFF``). HDUs without these keywords are not checked. Raises
    :class:`InputFormatError` naming the HDU on a mismatch.
    """
    p = Path(path)
    for h in hdus:
        datasum_s = h.get("DATASUM")
        checksum_s = h.get("CHECKSUM")
        if datasum_s is None and checksum_s is None:
            continue
        data_sum = ones_complement_sum(memoryview(raw)[h.data_start:h.data_start + h.data_bytes])
        if datasum_s is not None and h.get_str("DATASUM") != "":
            try:
                expected = int(h.get_str("DATASUM"))
            except ValueError as exc:
                raise InputFormatError("DATASUM keyword is not an integer", path=p, hdu=h.index,
                                       found=datasum_s) from exc
            if expected != data_sum:
                raise InputFormatError("data checksum mismatch: the data are corrupt", path=p,
                                       hdu=h.index, expected=f"DATASUM {expected}",
                                       found=data_sum)
        if checksum_s is not None and h.get_str("CHECKSUM") != "":
            head_sum = ones_complement_sum(memoryview(raw)[h.header_start:h.data_start])
            total = head_sum + data_sum
            while total > _MASK32:
                total = (total & _MASK32) + (total >> 32)
            if total != _MASK32:
                raise InputFormatError("HDU checksum mismatch: the header or data are corrupt",
                                       path=p, hdu=h.index,
                                       expected="HDU sum 0xFFFFFFFF (CHECKSUM keyword)",
                                       found=f"0x{total:08X}")


def load_fits_bytes(path: str | os.PathLike[str], *,
                    verify_checksum: bool = True) -> tuple[bytes, list[HduInfo]]:
    """Read, gunzip and validate a FITS file: :func:`read_raw`, :func:`walk_hdus` and
    (unless ``verify_checksum`` is False) :func:`verify_checksums`.

    Returns the decompressed bytes and the HDU layout.
    """
    raw = read_raw(path)
    hdus = walk_hdus(raw, path)
    if verify_checksum:
        verify_checksums(raw, hdus, path)
    return raw, hdus


def head_cards(path: str | os.PathLike[str], *, max_hdus: int = 2,
               max_bytes: int = 1 << 16) -> list[Mapping[str, str]]:
    """Header cards of the first ``max_hdus`` HDUs, from at most ``max_bytes`` decompressed
    bytes at the start of the file, for cheap ``identify()`` functions.

    Never raises: returns ``[]`` for unreadable or non-FITS files and fewer headers than asked
    when the file or the prefix ends (nor is the data checked: that is :func:`walk_hdus`'s job).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(max_bytes)
        if head[:2] == GZIP_MAGIC:
            with open(path, "rb") as fh:
                dec = zlib.decompressobj(wbits=31)
                head = b""
                while len(head) < max_bytes:
                    chunk = fh.read(1 << 15)
                    if not chunk:
                        break
                    head += dec.decompress(chunk, max_bytes - len(head))
                    if dec.eof:
                        break
    except (OSError, zlib.error):
        return []
    if not head.startswith(b"SIMPLE  ="):
        return []
    out: list[Mapping[str, str]] = []
    pos = 0
    while len(out) < max_hdus and pos < len(head):
        if out and head[pos:pos + 8] != b"XTENSION":
            break
        try:
            cards, data_start = _parse_header(head, pos, Path(path), len(out))
            nbytes = _data_bytes(cards)
        except (InputFormatError, KeyError):
            break
        out.append(cards)
        pos = data_start + _pad(nbytes)
    return out


def read_bintable(path: str | os.PathLike[str], index: int, what: str = "table") -> Any:
    """Rows of binary-table HDU ``index`` read with fitsio (a numpy structured array); cfitsio
    errors become :class:`InputFormatError` naming the file, the HDU and ``what`` was read.

    fitsio decodes text columns as ASCII and fails on any other byte, and cfitsio opens only
    files whose names are valid UTF-8: such a table, or a table in such a file (a name read
    with ``surrogateescape``), is read with astropy instead, its text columns left as bytes
    (``S`` dtype) for the caller to decode.
    """
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return _bintable_with_bytes(path, index, what)
    try:
        with fitsio.FITS(os.fspath(path)) as fits:
            return fits[index].read()
    except UnicodeDecodeError:
        return _bintable_with_bytes(path, index, what)
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"cannot read the {what} ({exc})", path=path, hdu=index) from exc


def _bintable_with_bytes(path: str | os.PathLike[str], index: int, what: str) -> Any:
    from astropy.table import Table

    try:
        return Table.read(os.fspath(path), hdu=index, character_as_bytes=True).as_array()
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"cannot read the {what} ({exc})", path=path, hdu=index) from exc


def is_fits(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file that starts with ``SIMPLE  =`` (gzip looked through)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        if is_gzip(p):
            with gzip.open(p, "rb") as gz:
                return gz.read(9) == b"SIMPLE  ="
        with open(p, "rb") as fh:
            return fh.read(9) == b"SIMPLE  ="
    except (OSError, EOFError):
        return False


def first_header(path: str | os.PathLike[str]) -> list[HduInfo] | None:
    """HDU list of a FITS file for ``identify()``: None instead of raising.

    A truncated file still yields its primary header (so that the right reader claims it
    and its ``read()`` reports the truncation). Checksums are not verified here.
    """
    if not is_fits(path):
        return None
    try:
        return load_fits_bytes(path, verify_checksum=False)[1]
    except TruncatedFileError:
        try:
            raw = read_raw(path)
            cards, data_start = _parse_header(raw, 0, Path(path), 0)
        except (InputFormatError, OSError, ValueError):
            return None
        return [HduInfo(0, 0, data_start, 0, cards)]
    except (InputFormatError, OSError, ValueError):
        return None


# --- header values ------------------------------------------------------------------------------

def card_value(cards: Mapping[str, str], key: str, kind: type) -> Any:
    """Typed value of header keyword ``key`` from raw card strings; None if absent or unparsable.

    ``kind`` is ``int``, ``float``, ``str`` (quotes and padding removed, blank → None) or
    ``bool`` (``T``/``F``). Numbers written as strings (``'516.35'``) and FITS ``D``
    exponents are accepted.
    """
    raw = cards.get(key)
    if raw is None:
        return None
    text = raw.strip()
    if text.startswith("'"):
        text = text[1:-1].strip() if text.endswith("'") and len(text) > 1 else text[1:].strip()
    if kind is str:
        return text or None
    if kind is bool:
        return {"T": True, "F": False}.get(text.upper())
    try:
        value = float(text.upper().replace("D", "E"))
    except ValueError:
        return None
    if kind is int:
        return int(value) if value.is_integer() else None
    return value


def header_float(hdu: HduInfo, key: str, default: float | None = None) -> float | None:
    """Numeric header value (:func:`card_value`), or ``default`` when absent or blank."""
    value = card_value(hdu.cards, key, float)
    return default if value is None else float(value)


def header_number(hdu: HduInfo, key: str, default: float) -> float:
    """Like :func:`header_float` but never None."""
    value = header_float(hdu, key)
    return default if value is None else value


# --- data units: images and binary tables, decoded with numpy from checked bytes -----------------

_BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: Bytes per element of each TFORM type code (FITS standard 4.0, table 18; P and Q are
#: descriptors of a fixed size whatever their repeat).
_TFORM_BYTES = {"L": 1, "X": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8,
                "M": 16, "P": 8, "Q": 16}
#: The TFORM codes decoded here, with the numpy type of one element.
_TFORM_DTYPE = {"L": "S1", "B": ">u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4",
                "D": ">f8", "A": "S1"}
_TFORM_RE = re.compile(r"^\s*(\d*)([A-Z])")
_SCALAR_TFORM = re.compile(r"^\s*1?[A-Z]\s*$")


def read_image(raw: bytes, hdu: HduInfo, path: str | os.PathLike[str]) -> NDArray[np.float64]:
    """Image data of ``hdu`` as float64 with BSCALE/BZERO applied; shape is numpy order
    (NAXISn, …, NAXIS1)."""
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
    """Column names (TTYPEn, ``coln`` when absent) of a binary-table HDU, as written."""
    n = hdu.get_int("TFIELDS")
    return [hdu.get_str(f"TTYPE{i}", f"col{i}") for i in range(1, n + 1)]


@dataclass(frozen=True)
class Column:
    """One binary-table column: how it is stored and where it sits in a row."""

    number: int
    """1-based, as in TTYPEn/TFORMn."""
    name: str
    """TTYPEn as written."""
    tform: str
    """TFORMn, upper case."""
    code: str
    """Type letter ('' when TFORMn does not parse)."""
    repeat: int
    offset: int | None
    """Bytes from the start of a row; None after a column of unknown width."""
    width: int | None
    """Bytes per row; None for an unknown type letter."""
    unit: str
    """TUNITn ('' when absent)."""


def table_layout(hdu: HduInfo) -> list[Column]:
    """The columns of a binary-table HDU with their byte offsets in a row."""
    out: list[Column] = []
    offset: int | None = 0
    for i, name in enumerate(table_columns(hdu), start=1):
        tform = hdu.get_str(f"TFORM{i}").upper()
        m = _TFORM_RE.match(tform)
        code, repeat = (m.group(2), int(m.group(1) or 1)) if m else ("", 1)
        width = None
        if code == "X":
            width = (repeat + 7) // 8
        elif code in _TFORM_BYTES:
            width = _TFORM_BYTES[code] * (1 if code in "PQ" else repeat)
        out.append(Column(i, name, tform, code, repeat, offset, width,
                          hdu.get_str(f"TUNIT{i}")))
        offset = None if offset is None or width is None else offset + width
    return out


def _require_bintable(hdu: HduInfo, path: str | os.PathLike[str]) -> None:
    if hdu.get_str("XTENSION").upper() != "BINTABLE":
        raise InputFormatError("not a binary table", path=path, hdu=hdu.index,
                               expected="XTENSION = 'BINTABLE'", found=hdu.get_str("XTENSION"))


def _scaled(col: NDArray[Any], hdu: HduInfo, number: int) -> NDArray[np.float64]:
    """A numeric column as float64 with its TSCALn/TZEROn applied."""
    scale = header_number(hdu, f"TSCAL{number}", 1.0)
    zero = header_number(hdu, f"TZERO{number}", 0.0)
    arr = col.astype(np.float64)
    return arr * scale + zero if (scale != 1.0 or zero != 0.0) else arr


def read_table(raw: bytes, hdu: HduInfo, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Columns of a BINTABLE HDU keyed by upper-case name.

    Every column must be of type L, B, I, J, K, E, D or A and their widths must add up to
    NAXIS1. Numeric columns come back as float64 arrays of shape (n_rows,) for repeat 1 or
    (n_rows, repeat) otherwise, TSCALn/TZEROn applied; character columns as arrays of
    stripped ``str``, logical ones as ``"T"``/``"F"``/``""`` (null).
    """
    _require_bintable(hdu, path)
    layout = table_layout(hdu)
    fields: list[tuple[str, str]] = []
    for c in layout:
        if c.code not in _TFORM_DTYPE:
            raise InputFormatError(f"unsupported column format for {c.name!r}", path=path,
                                   hdu=hdu.index, expected="L, B, I, J, K, E, D or A",
                                   found=c.tform)
        shape = "" if c.code == "A" or c.repeat == 1 else f"{c.repeat}"
        dtype = f"S{c.repeat}" if c.code == "A" else _TFORM_DTYPE[c.code]
        fields.append((f"f{c.number}", f"{shape}{dtype}"))
    row = sum(c.width or 0 for c in layout)
    width = hdu.get_int("NAXIS1")
    if row != width:
        raise InputFormatError("column formats do not add up to the row width", path=path,
                               hdu=hdu.index, expected=f"NAXIS1 = {row}", found=width)
    rec = np.frombuffer(raw, dtype=np.dtype(fields), count=hdu.get_int("NAXIS2"),
                        offset=hdu.data_start)
    out: dict[str, Any] = {}
    for c in layout:
        col = rec[f"f{c.number}"]
        if c.code in ("A", "L"):
            out[c.name.upper()] = np.array([v.decode("ascii", "replace").strip()
                                            for v in col.ravel()])
        else:
            out[c.name.upper()] = _scaled(col, hdu, c.number)
    return out


def read_column(raw: bytes, hdu: HduInfo, name: str, path: str | os.PathLike[str], *,
                codes: str = "BIJKED") -> NDArray[np.float64]:
    """One scalar numeric column of a BINTABLE HDU as float64 (n_rows,), TSCALn/TZEROn
    applied. ``name`` is matched without regard to case; the columns before it need only be
    of a known width (any type), those after it are not looked at.

    Raises
    ------
    InputFormatError
        No such column, a column before it of unknown width, a column that is not scalar or
        not of a type in ``codes``, or a column that does not fit in NAXIS1.
    """
    _require_bintable(hdu, path)
    layout = table_layout(hdu)
    col = next((c for c in layout if c.name.upper() == name.upper()), None)
    if col is None:
        raise InputFormatError(f"no column {name}", path=path, hdu=hdu.index)
    if col.offset is None:
        unsized = next(c for c in layout if c.width is None)
        raise InputFormatError(f"cannot size column {unsized.number} (TFORM {unsized.tform!r})",
                               path=path, hdu=hdu.index)
    if not (col.code and col.code in codes and col.code in _TFORM_DTYPE
            and _SCALAR_TFORM.match(col.tform)):
        kind = "float" if set(codes) <= set("ED") else "numeric"
        raise InputFormatError(f"column {name} is not a scalar {kind} column", path=path,
                               hdu=hdu.index, found=col.tform,
                               expected="TFORM " + " or ".join(repr(c) for c in codes))
    dtype = np.dtype(_TFORM_DTYPE[col.code])
    row_bytes, n_rows = hdu.get_int("NAXIS1"), hdu.get_int("NAXIS2")
    end = col.offset + dtype.itemsize
    if end > row_bytes:
        raise InputFormatError(f"column {name} lies outside the table row", path=path,
                               hdu=hdu.index, expected=f"<= {row_bytes} bytes per row",
                               found=f"{end}")
    data = np.ndarray((n_rows,), dtype=dtype, buffer=raw, offset=hdu.data_start + col.offset,
                      strides=(row_bytes,))
    return _scaled(data, hdu, col.number)


#: TFORM codes :func:`plain_columns` views: numbers stored as they are read.
_PLAIN_CODES = "BIJKED"


def plain_columns(raw: bytes, hdu: HduInfo, names: Sequence[str]
                  ) -> list[NDArray[Any]] | None:
    """Numeric columns ``names`` (matched without regard to case) of a BINTABLE HDU as
    (n_rows, repeat) views over ``raw``, in their stored (big-endian) type: no copy, no
    conversion.

    None when the table is not that simple: not a binary table, a column missing, of another
    type than B, I, J, K, E or D, or with TSCALn/TZEROn, two columns of the same name, or
    column widths that do not add up to NAXIS1. Such tables are for :func:`read_table` or
    :func:`read_bintable`.
    """
    if hdu.get_str("XTENSION").upper() != "BINTABLE":
        return None
    layout = table_layout(hdu)
    row_bytes, n_rows = hdu.get_int("NAXIS1"), hdu.get_int("NAXIS2")
    if any(c.width is None for c in layout) or sum(c.width or 0 for c in layout) != row_bytes:
        return None
    by_name = {c.name.upper(): c for c in layout}
    if len(by_name) != len(layout):
        return None
    out = []
    for name in names:
        c = by_name.get(name.upper())
        if (c is None or c.offset is None or not c.code or c.code not in _PLAIN_CODES
                or f"TSCAL{c.number}" in hdu.cards or f"TZERO{c.number}" in hdu.cards):
            return None
        dtype = np.dtype(_TFORM_DTYPE[c.code])
        out.append(np.ndarray((n_rows, c.repeat), dtype=dtype, buffer=raw,
                              offset=hdu.data_start + c.offset,
                              strides=(row_bytes, dtype.itemsize)))
    return out


def column_unit(hdu: HduInfo, name: str) -> str:
    """TUNITn of the binary-table column ``name`` (case-insensitive); '' when it has none or
    there is no such column."""
    return next((c.unit for c in table_layout(hdu) if c.name.upper() == name.upper()), "")
