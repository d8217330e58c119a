"""Low-level FITS checks shared by every FITS reader.

cfitsio (and so fitsio) reads the first columns of a truncated file without complaint and
decompresses a damaged gzip stream as far as it can. Before a reader trusts a file it calls
:func:`load_fits_bytes`, which decompresses gzip in Python (so a truncated stream or a CRC
failure is caught), walks every HDU header, compares the bytes the headers promise with the
bytes present and verifies the CHECKSUM/DATASUM keywords of the HDUs that carry them.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

from csstflux.errors import InputFormatError, TruncatedFileError

BLOCK = 2880
CARD = 80
GZIP_MAGIC = b"\x1f\x8b"
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
    cards: dict[str, str]
    """Raw value strings of the header keywords (first occurrence), without comments."""

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
    """The file's bytes, gunzipped when gzip; damaged gzip streams raise clear errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFormatError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    if not data:
        raise InputFormatError("file is empty", path=path, expected="a FITS file", found="0 bytes")
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except EOFError as exc:
            raise TruncatedFileError("gzip stream ends early", path=path) from exc
        except (OSError, zlib.error) as exc:
            raise InputFormatError(f"corrupt gzip stream ({exc})", path=path) from exc
        if not data:
            raise InputFormatError("gzip stream decompresses to nothing", path=path)
    return data


def _parse_header(raw: bytes, start: int, path: Path, index: int) -> tuple[dict[str, str], int]:
    cards: dict[str, str] = {}
    pos = start
    while True:
        if pos + BLOCK > len(raw):
            raise TruncatedFileError("file ends inside a header", path=path, hdu=index,
                                     expected=f"END card by byte {pos + BLOCK}",
                                     found=f"{len(raw)} bytes")
        block = raw[pos:pos + BLOCK]
        pos += BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i:i + CARD]
            try:
                text = card.decode("ascii")
            except UnicodeDecodeError as exc:
                raise InputFormatError("header contains non-ASCII bytes (corrupt file?)",
                                       path=path, hdu=index) from exc
            key = text[:8].strip()
            if key == "END":
                return cards, pos
            if text[8:10] == "= " and key and key not in cards:
                value = text[10:]
                if value.lstrip().startswith("'"):
                    # string value: up to the closing quote ('' is an escaped quote)
                    body = _STRING_BODY.match(value.lstrip(), 1)
                    text = body.group(0) if body else ""
                    cards[key] = "'" + text.replace("''", "'") + "'"
                else:
                    cards[key] = value.split("/", 1)[0].strip()


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
            bitpix = int(cards["BITPIX"])
            naxis = int(cards["NAXIS"])
            dims = [int(cards[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
        except (KeyError, ValueError) as exc:
            raise InputFormatError(f"header lacks a valid {exc} keyword", path=p,
                                   hdu=len(hdus)) from exc
        n = 0
        if naxis > 0:
            n = 1
            for d in dims:
                n *= d
        pcount = int(float(cards.get("PCOUNT", "0")))
        gcount = int(float(cards.get("GCOUNT", "1")))
        nbytes = abs(bitpix) // 8 * gcount * (pcount + n) if (naxis > 0 or pcount) else 0
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
               max_bytes: int = 1 << 16) -> list[dict[str, str]]:
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
    out: list[dict[str, str]] = []
    pos = 0
    while len(out) < max_hdus and pos < len(head):
        if out and head[pos:pos + 8] != b"XTENSION":
            break
        try:
            cards, data_start = _parse_header(head, pos, Path(path), len(out))
            naxis = int(cards.get("NAXIS", "0"))
            n = 1
            for i in range(1, naxis + 1):
                n *= int(cards[f"NAXIS{i}"])
            bitpix = abs(int(cards["BITPIX"]))
        except (InputFormatError, KeyError, ValueError):
            break
        out.append(cards)
        pcount = int(float(cards.get("PCOUNT", "0")))
        nbytes = bitpix // 8 * (pcount + (n if naxis > 0 else 0))
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

