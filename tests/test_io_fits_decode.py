"""The one FITS decoder: header sizes, typed header values, images and tables against astropy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from csstflux.errors import InputFormatError
from csstflux.io.fits import decode


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _table(path: Path, rng: np.random.Generator, n: int = 9) -> Path:
    cols = [
        fits.Column("FLAG", "L", array=rng.random(n) > 0.5),
        fits.Column("BYTE", "B", array=rng.integers(0, 255, n).astype(np.uint8)),
        fits.Column("SHORT", "I", array=rng.integers(-99, 99, n).astype(np.int16)),
        fits.Column("SCALED", "J", array=rng.integers(-99, 99, n).astype(np.int32)),
        fits.Column("LONG", "K", array=rng.integers(-(2**40), 2**40, n)),
        fits.Column("name", "6A", array=np.array([f"s{k}" for k in range(n)])),
        fits.Column("VEC", "3E", array=rng.normal(size=(n, 3)).astype(np.float32)),
        fits.Column("DOUBLE", "D", unit="Angstrom", array=rng.normal(size=n)),
    ]
    table = fits.BinTableHDU.from_columns(cols)
    table.header["TSCAL4"], table.header["TZERO4"] = 0.5, 3.0   # SCALED: stored * 0.5 + 3
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path, checksum=True)
    return path


def test_table_columns_match_astropy(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _table(tmp_path / "t.fits", rng)
    raw, hdus = decode.load_fits_bytes(path)
    ref = fits.getdata(path, 1)
    table = decode.read_table(raw, hdus[1], path)
    assert list(table) == ["FLAG", "BYTE", "SHORT", "SCALED", "LONG", "NAME", "VEC", "DOUBLE"]
    for name in ("BYTE", "SHORT", "SCALED", "LONG", "VEC", "DOUBLE"):
        np.testing.assert_array_equal(table[name], ref[name].astype(np.float64), err_msg=name)
    assert list(table["NAME"]) == list(ref["name"])
    assert list(table["FLAG"]) == ["T" if v else "F" for v in ref["FLAG"]]
    for name in ("BYTE", "SHORT", "SCALED", "LONG", "DOUBLE"):   # one column alone: same values
        np.testing.assert_array_equal(decode.read_column(raw, hdus[1], name.lower(), path),
                                      table[name], err_msg=name)
    assert decode.column_unit(hdus[1], "double") == "Angstrom"
    assert decode.column_unit(hdus[1], "SHORT") == ""
    layout = decode.table_layout(hdus[1])
    assert [c.offset for c in layout] == [0, 1, 2, 4, 8, 16, 22, 34]
    assert sum(c.width or 0 for c in layout) == hdus[1].get_int("NAXIS1")


def test_read_column_refusals(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _table(tmp_path / "t.fits", rng)
    raw, hdus = decode.load_fits_bytes(path)
    for name, why in (("VEC", "not a scalar numeric column"),
                      ("NAME", "not a scalar numeric column"),
                      ("NOPE", "no column NOPE")):
        with pytest.raises(InputFormatError, match=why) as info:
            decode.read_column(raw, hdus[1], name, path)
        assert str(path) in str(info.value) and "[HDU 1]" in str(info.value)
    with pytest.raises(InputFormatError, match="not a scalar float column"):
        decode.read_column(raw, hdus[1], "SHORT", path, codes="DE")
    with pytest.raises(InputFormatError, match="not a binary table"):
        decode.read_column(raw, hdus[0], "SHORT", path)


def test_read_table_refuses_unsupported_and_inconsistent(tmp_path: Path) -> None:
    path = tmp_path / "v.fits"
    cols = [fits.Column("V", "PJ()", array=np.array([np.arange(k) for k in range(4)],
                                                    dtype=object)),
            fits.Column("X", "D", array=np.arange(4.0))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    raw, hdus = decode.load_fits_bytes(path)
    with pytest.raises(InputFormatError, match="unsupported column format for 'V'"):
        decode.read_table(raw, hdus[1], path)
    np.testing.assert_array_equal(decode.read_column(raw, hdus[1], "X", path), np.arange(4.0))
    cols = [fits.Column("X", "D", array=np.arange(4.0))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(
        tmp_path / "d.fits")
    raw2 = (tmp_path / "d.fits").read_bytes().replace(b"NAXIS1  =                    8",
                                                      b"NAXIS1  =                   16")
    hdu = decode.walk_hdus(raw2, path)[1]
    with pytest.raises(InputFormatError, match="do not add up to the row width"):
        decode.read_table(raw2, hdu, path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.float32,
                                   np.float64])
def test_image_matches_astropy(tmp_path: Path, rng: np.random.Generator, dtype: type) -> None:
    data = (rng.normal(size=(3, 4, 5)) * 50 + 100).astype(dtype)
    hdu = fits.PrimaryHDU(data)
    if np.issubdtype(dtype, np.integer):
        hdu.header["BSCALE"], hdu.header["BZERO"] = 0.25, -7.0
    path = tmp_path / "i.fits"
    hdu.writeto(path)
    raw, hdus = decode.load_fits_bytes(path)
    img = decode.read_image(raw, hdus[0], path)
    assert img.dtype == np.float64 and img.shape == (3, 4, 5)
    np.testing.assert_array_equal(img, fits.getdata(path).astype(np.float64))


def test_header_values_and_sizes(tmp_path: Path, rng: np.random.Generator) -> None:
    cards = {"A": "'  516.35 '", "B": "1.5D2", "C": "T", "D": "''", "E": "7", "F": "7.5"}
    assert decode.card_value(cards, "A", float) == 516.35
    assert decode.card_value(cards, "A", str) == "516.35"
    assert decode.card_value(cards, "B", float) == 150.0
    assert decode.card_value(cards, "C", bool) is True
    assert decode.card_value(cards, "D", str) is None
    assert decode.card_value(cards, "E", int) == 7 and decode.card_value(cards, "F", int) is None
    assert decode.card_value(cards, "Z", float) is None
    hdu = decode.HduInfo(0, 0, 0, 0, cards)
    assert decode.header_float(hdu, "B") == 150.0
    assert decode.header_float(hdu, "Z", 3.0) == 3.0
    assert decode.header_number(hdu, "Z", 1.0) == 1.0
    # head_cards (a cheap prefix) and walk_hdus (the whole file) agree on the HDUs
    path = _table(tmp_path / "t.fits", rng)
    raw, hdus = decode.load_fits_bytes(path)
    assert decode.head_cards(path, max_hdus=5) == [h.cards for h in hdus]
    assert decode.is_fits(path) and not decode.is_fits(tmp_path)
    broken = raw.replace(b"NAXIS   =                    2", b"NAXIS   =                    x")
    with pytest.raises(InputFormatError, match="lacks a valid 'NAXIS' keyword") as info:
        decode.walk_hdus(broken, path)
    assert "[HDU 1]" in str(info.value)


# --- lazy header cards ---------------------------------------------------------------------------

def _full_parse(raw: bytes, start: int = 0) -> dict[str, str]:
    """Every ``KEYWORD = `` card of the header at ``start`` parsed at once, card by card: the
    values :class:`~csstflux.io.fits.decode.Cards` must give."""
    out: dict[str, str] = {}
    for pos in range(start, len(raw), 80):
        text = raw[pos:pos + 80].decode("ascii")
        key = text[:8].strip()
        if key == "END":
            return out
        if text[8:10] == "= " and key and key not in out:
            value = text[10:]
            if value.lstrip().startswith("'"):
                body = value.lstrip()[1:]
                end = 0
                while end < len(body):
                    if body[end] == "'":
                        if body[end + 1:end + 2] != "'":
                            break
                        end += 1
                    end += 1
                out[key] = "'" + body[:end].replace("''", "'") + "'"
            else:
                out[key] = value.split("/", 1)[0].strip()
    raise AssertionError("no END card")


def _card(text: str) -> bytes:
    return text.ljust(80).encode("ascii")


def test_cards_read_lazily_equal_a_full_parse(tmp_path: Path, rng: np.random.Generator) -> None:
    cards = [_card("SIMPLE  =                    T"), _card("BITPIX  =                    8"),
             _card("NAXIS   =                    0"),
             _card("NAME    = 'O''Brien / not a comment' / a comment"),
             _card("EMPTY   = ''"), _card("BLANK   = '   '"), _card("NUM     =  1.5D2 / x"),
             _card("NAME    = 'second, ignored'"), _card("COMMENT = not a value card"),
             _card("HISTORY   no equals sign"), _card("NOEQ      1"), _card("  LEAD  = 3"),
             _card("TAIL    ='no blank after equals'"), _card("END")]
    header = b"".join(cards).ljust(2880, b" ")
    (hdu,) = decode.walk_hdus(header, "h.fits")
    assert dict(hdu.cards) == _full_parse(header)
    assert hdu.cards["NAME"] == "'O'Brien / not a comment'" and hdu.cards["NUM"] == "1.5D2"
    assert hdu.cards["LEAD"] == "3" and "TAIL" not in hdu.cards and "NOEQ" not in hdu.cards
    assert hdu.cards.get("MISSING", "d") == "d" and len(hdu.cards) == len(_full_parse(header))
    with pytest.raises(KeyError):
        hdu.cards["MISSING"]
    # a multi-block header, read back in both orders of first access
    path = _table(tmp_path / "t.fits", rng)
    raw, hdus = decode.load_fits_bytes(path)
    for h in hdus:
        full = _full_parse(raw, h.header_start)
        assert list(h.cards) == list(full)
        assert {k: h.cards[k] for k in reversed(list(full))} == full


def test_non_ascii_header_bytes_before_and_after_end(tmp_path: Path) -> None:
    cards = [_card("SIMPLE  =                    T"), _card("BITPIX  =                    8"),
             _card("NAXIS   =                    0")]
    after = b"".join(cards) + _card("END") + "é".encode() + b" " * 78
    (hdu,) = decode.walk_hdus(after.ljust(2880, b" "))      # after END: not the header's
    assert hdu.cards["NAXIS"] == "0"
    before = b"".join(cards) + "X = é".encode().ljust(80) + _card("END")
    with pytest.raises(InputFormatError, match="non-ASCII"):
        decode.walk_hdus(before.ljust(2880, b" "))


# --- columns as views ----------------------------------------------------------------------------

def test_plain_columns_are_views_equal_to_fitsio(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _table(tmp_path / "t.fits", rng)
    raw, hdus = decode.load_fits_bytes(path)
    table = decode.read_bintable(path, 1)
    cols = decode.plain_columns(raw, hdus[1], ["vec", "LONG", "DOUBLE", "BYTE"])
    assert cols is not None
    for col, name in zip(cols, ("VEC", "LONG", "DOUBLE", "BYTE"), strict=True):
        assert col.base is not None and not col.flags.owndata     # a view of the bytes
        np.testing.assert_array_equal(col.reshape(table[name].shape), table[name])
    # scaled, character or logical columns, or a missing one: not for plain_columns
    for names in (["SCALED"], ["NAME"], ["FLAG"], ["NOPE"], ["VEC", "SCALED"]):
        assert decode.plain_columns(raw, hdus[1], names) is None
    assert decode.plain_columns(raw, hdus[0], ["VEC"]) is None
