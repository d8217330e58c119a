"""The QA report page: escaped text, figures that decode to the same bytes, nothing external."""

from __future__ import annotations

import base64
import html
import os
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csstflux.errors import ConfigError, InputFormatError
from csstflux.report import html as report_html
from csstflux.report.html import (
    Figure,
    Link,
    Section,
    Table,
    png_size,
    render_html,
    write_html_report,
)

EVIL = "<script>alert('x')</script> & \"quoted\" <img src=http://evil.example/x.png>"


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """A valid 8-bit RGB PNG of random pixels (stdlib zlib; no imaging library needed)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (report_html.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


class _Collect(HTMLParser):
    """Every attribute of every tag, and the text inside each tag kind."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = {}
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br"):
            self._stack.append(tag)

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data):
        if self._stack:
            self.text.setdefault(self._stack[-1], []).append(data)


def parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    p.close()
    return p


def _report(png_a: bytes, png_b: bytes) -> tuple[str, list[Section]]:
    sections = [
        Section(EVIL, paragraphs=(EVIL, "plain"),
                tables=(Table([{"band": "GV", "rms": np.float32(0.0011), "n": np.int64(400),
                                "note": EVIL},
                               {"band": "GI", "rms": float("nan"), "extra": None}],
                              caption=EVIL),),
                figures=(Figure("flat-gv", png_a, caption=EVIL),),
                links=(Link("flat.performance.html", "Dask report"),
                       Link("http://127.0.0.1:8787/status", EVIL))),
        Section("Second", figures=(Figure("flat-gi", png_b, "GI", alt="GI flat map"),)),
    ]
    return render_html(EVIL, {"night": "2031-05-02", EVIL: EVIL}, sections), sections


def test_text_is_escaped_everywhere():
    page, _ = _report(make_png(4, 3), make_png(2, 2, 1))
    assert "<script" not in page and "evil.example/x.png>" not in page
    assert html.escape(EVIL, quote=True) in page
    doc = parse(page)
    assert {t for t, _ in doc.tags} <= {"html", "head", "meta", "title", "style", "body", "h1",
                                        "table", "tbody", "thead", "tr", "th", "td", "caption",
                                        "nav", "ul", "li", "a", "section", "h2", "p", "figure",
                                        "img", "figcaption"}
    assert EVIL in doc.text["title"] and EVIL in doc.text["p"] and EVIL in doc.text["td"]


def test_table_columns_values_and_alignment():
    page = render_html("t", {}, [Section("s", tables=(Table(
        [{"a": 1, "b": 0.123456789}, {"b": True, "c": None}], columns=["b", "a", "c"]),))])
    doc = parse(page)
    assert doc.text["th"] == ["b", "a", "c"]
    assert doc.text["td"] == ["0.123457", "1", "True"]  # empty cells carry no text
    assert page.count('<td class="num">') == 2  # the two numbers, not the bool or blanks


def test_figures_decode_to_the_same_bytes_with_their_size():
    a, b = make_png(40, 30), make_png(7, 5, seed=3)
    page, _ = _report(a, b)
    imgs = [attrs for tag, attrs in parse(page).tags if tag == "img"]
    assert len(imgs) == 2
    for attrs, png in zip(imgs, (a, b), strict=True):
        src = attrs["src"]
        assert src is not None and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True) == png
        assert (int(attrs["width"]), int(attrs["height"])) == png_size(png)
    assert [i["alt"] for i in imgs] == [EVIL, "GI flat map"]


def test_nothing_external_but_the_links_given():
    page, _ = _report(make_png(4, 3), make_png(2, 2, 1))
    doc = parse(page)
    srcs = [a["src"] for _, a in doc.tags if "src" in a]
    hrefs = [a["href"] for _, a in doc.tags if "href" in a]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert [h for h in hrefs if not h.startswith("#")] == ["flat.performance.html",
                                                           "http://127.0.0.1:8787/status"]
    assert {t for t, _ in doc.tags}.isdisjoint({"script", "link", "iframe", "object", "embed"})
    assert "url(" not in page and "@import" not in page
    # without text that mentions URLs, the only one in the page is the link given (href, text)
    plain = render_html("t", {"night": 1}, [Section("s", figures=(Figure("f", make_png(2, 2)),),
                                                    links=(Link("https://example.org/x"),))])
    assert set(re.findall(r"[a-z]+://[^\s\"'<>]*", plain)) == {"https://example.org/x"}
    csp = [a["content"] for t, a in doc.tags
           if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [report_html.CSP] and "default-src 'none'" in csp[0]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s and "\r" not in s
                                               and "\x00" not in s))
def test_any_text_round_trips_through_the_page(text):
    page = render_html("t", {}, [Section("s", paragraphs=(text,),
                                         tables=(Table([{"c": text}]),))])
    doc = parse(page)
    assert "".join(doc.text["p"]) == text and "".join(doc.text["td"]) == text


@pytest.mark.parametrize("data,match", [
    (b"GIF89a....", "bad signature"),
    (report_html.PNG_SIGNATURE + b"\x00\x00", "truncated"),
    ("not bytes", "PNG bytes"),
])
def test_non_png_figures_refused(data, match):
    with pytest.raises(InputFormatError, match=match):
        Figure("x", data)


def test_bad_names_links_and_duplicates_refused(tmp_path):
    png = make_png(2, 2)
    with pytest.raises(ConfigError, match="figure name"):
        Figure("../x", png)
    with pytest.raises(ConfigError, match="scheme"):
        Link("javascript:alert(1)")
    dup = [Section("a", figures=(Figure("f", png),)), Section("b", figures=(Figure("f", png),))]
    with pytest.raises(ConfigError, match="unique"):
        write_html_report(tmp_path / "r.html", "t", {}, dup, assets_dir=tmp_path / "assets")
    assert not (tmp_path / "assets").exists() or not any((tmp_path / "assets").iterdir())
    assert not (tmp_path / "r.html").exists()


def test_assets_written_and_linked_relative(tmp_path):
    a, b = make_png(5, 4), make_png(3, 3, 2)
    _, sections = _report(a, b)
    page = write_html_report(tmp_path / "qa" / "night.html", "t", {}, sections,
                             assets_dir=tmp_path / "qa" / "night figures")
    assert (tmp_path / "qa" / "night figures" / "flat-gv.png").read_bytes() == a
    assert (tmp_path / "qa" / "night figures" / "flat-gi.png").read_bytes() == b
    hrefs = [h for t, at in parse(page.read_text()).tags if t == "a" and (h := at.get("href"))
             and h.endswith(".png")]
    assert hrefs == ["night%20figures/flat-gv.png", "night%20figures/flat-gi.png"]


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    write_html_report(path, "first", {}, [])
    first = path.read_text()
    assert "<title>first</title>" in first and first.endswith("</html>\n")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html_report(path, "second", {}, [])
    monkeypatch.undo()
    assert path.read_text() == first  # the old page is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary left
    write_html_report(path, "second", {}, [])
    assert "<title>second</title>" in path.read_text()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["r.html"]
