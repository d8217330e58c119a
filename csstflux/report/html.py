"""Self-contained HTML pages for QA reports: key/value header, sections, tables, PNGs, links.

One file opens anywhere, offline, with nothing else beside it: the figures are embedded as
``data:image/png;base64,…`` images, the style is a short inline sheet, there is no script and
no external resource (a Content-Security-Policy in the page forbids loading any). Links are the
only references out of the page, and only those the caller gives (e.g. a Dask performance
report beside the report, or the dashboard's address). With ``assets_dir`` the figures are
also written as PNG files, for people who want the files, and each figure links to its file.

Plotting stays with the caller (this is the I/O layer, no matplotlib here): a figure is the
PNG bytes of a plot, e.g. ``fig.savefig(buf, format="png")``::

    write_html_report("qa/night.html", "Night 2031-05-02",
                      {"night": "2031-05-02", "csstflux": "0.1.0"},
                      [Section("Flat", paragraphs=("Fit of 20 exposures.",),
                               tables=(Table([{"band": "GV", "rms": 0.0011}]),),
                               figures=(Figure("flat-gv", png_bytes, "GV flat"),),
                               links=(Link("flat.performance.html", "Dask report"),))],
                      assets_dir="qa/night-figures")
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from csstflux.errors import ConfigError, InputFormatError
from csstflux.io.atomic import write_bytes, write_text

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Schemes a link may use; relative links (no scheme) and ``#fragment`` links are always fine.
LINK_SCHEMES = frozenset({"http", "https", "file", "mailto"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Nothing may be loaded from outside the page; figures are data: URLs, the style is inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:72em;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.25em;border-bottom:1px solid #ccc;
padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding-bottom:.3em}
table.meta th{width:12em}
figure{margin:1em 0;display:inline-block;max-width:100%;vertical-align:top}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}nav ul,ul.links{padding-left:1.2em}
"""


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; raises if ``png`` is not a PNG."""
    if not isinstance(png, (bytes, bytearray, memoryview)):
        raise InputFormatError("a figure must be PNG bytes", expected="bytes",
                               found=type(png).__name__)
    head = bytes(png[:24])
    if head[:8] != PNG_SIGNATURE:
        raise InputFormatError("not a PNG image (bad signature)", expected=repr(PNG_SIGNATURE),
                               found=repr(head[:8]))
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise InputFormatError("truncated PNG image: no IHDR chunk", expected="IHDR",
                               found=repr(head[12:16]))
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


@dataclass(frozen=True)
class Table:
    """A table from rows of mappings (column → value); values are escaped on output."""

    rows: Sequence[Mapping[str, Any]]
    """One mapping per row; a missing key is an empty cell."""
    columns: Sequence[str] | None = None
    """Column order; None: the keys of the rows in order of first appearance."""
    caption: str = ""
    """Shown above the table."""


@dataclass(frozen=True)
class Figure:
    """A PNG image embedded in the page."""

    name: str
    """File stem: ``[A-Za-z0-9._-]``, unique in a report (``<name>.png`` in ``assets_dir``)."""
    png: bytes
    """The encoded PNG, as written by e.g. ``fig.savefig(buf, format="png")``."""
    caption: str = ""
    """Shown under the image."""
    alt: str = ""
    """Text alternative; empty: the caption, else the name."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"invalid figure name {self.name!r}",
                              expected="letters, digits, '.', '_' or '-'", found=self.name)
        png_size(self.png)


@dataclass(frozen=True)
class Link:
    """A link out of the page: a path relative to the page, or a URL."""

    href: str
    text: str = ""
    """Link text; empty: the href."""

    def __post_init__(self) -> None:
        scheme = urlsplit(self.href).scheme.lower()
        # one-letter "schemes" are Windows drive letters (C:\\...): paths, not URLs
        if len(scheme) > 1 and scheme not in LINK_SCHEMES:
            raise ConfigError(f"link {self.href!r} has a disallowed scheme",
                              expected=", ".join(sorted(LINK_SCHEMES)) + " or a relative path",
                              found=scheme)


@dataclass(frozen=True)
class Section:
    """A titled part of the page: paragraphs, then tables, figures and links, in that order."""

    title: str
    paragraphs: Sequence[str] = ()
    """Plain text, escaped (no markup)."""
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    links: Sequence[Link] = ()


def format_value(value: Any) -> str:
    """A cell's text: floats to 6 significant digits, None empty, numpy scalars as Python."""
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (numbers.Number, np.number)) and not isinstance(value, bool)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(t: Table, css_class: str = "") -> Iterator[str]:
    cols = list(t.columns) if t.columns is not None else list(
        dict.fromkeys(k for row in t.rows for k in row))
    yield f'<table class="{css_class}">' if css_class else "<table>"
    if t.caption:
        yield f"<caption>{_esc(t.caption)}</caption>"
    yield "<thead><tr>" + "".join(f'<th scope="col">{_esc(c)}</th>' for c in cols) + \
        "</tr></thead><tbody>"
    for row in t.rows:
        cells = []
        for c in cols:
            v = row.get(c)
            cls = ' class="num"' if _is_number(v) else ""
            cells.append(f"<td{cls}>{_esc(format_value(v))}</td>")
        yield "<tr>" + "".join(cells) + "</tr>"
    yield "</tbody></table>"


def _figure(f: Figure, asset_href: str | None) -> Iterator[str]:
    w, h = png_size(f.png)
    data = base64.b64encode(bytes(f.png)).decode("ascii")
    alt = f.alt or f.caption or f.name
    yield f'<figure id="fig-{_esc(f.name)}">'
    yield (f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}" width="{w}" '
           f'height="{h}">')
    cap = _esc(f.caption)
    if asset_href is not None:
        cap += f' <a href="{_esc(asset_href)}">[PNG]</a>'
    if cap:
        yield f"<figcaption>{cap}</figcaption>"
    yield "</figure>"


def _check_unique(sections: Sequence[Section]) -> None:
    names = [f.name for s in sections for f in s.figures]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"figure names must be unique in a report: {', '.join(dup)}")


def render_html(title: str, meta: Mapping[str, Any], sections: Sequence[Section], *,
                asset_hrefs: Mapping[str, str] | None = None) -> str:
    """The page as a string (no I/O); ``asset_hrefs``: figure name → href of its PNG file."""
    _check_unique(sections)
    hrefs = dict(asset_hrefs or {})
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>{CSS.strip()}</style>", "</head>",
           "<body>", f"<h1>{_esc(title)}</h1>"]
    if meta:
        out += ['<table class="meta"><tbody>']
        out += [f'<tr><th scope="row">{_esc(k)}</th><td>{_esc(format_value(v))}</td></tr>'
                for k, v in meta.items()]
        out += ["</tbody></table>"]
    if len(sections) > 1:
        out += ["<nav><ul>"] + [f'<li><a href="#s{i}">{_esc(s.title)}</a></li>'
                                for i, s in enumerate(sections, 1)] + ["</ul></nav>"]
    for i, s in enumerate(sections, 1):
        out += [f'<section id="s{i}">', f"<h2>{_esc(s.title)}</h2>"]
        out += [f"<p>{_esc(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out += list(_table(t))
        for f in s.figures:
            out += list(_figure(f, hrefs.get(f.name)))
        if s.links:
            out += ['<ul class="links">']
            out += [f'<li><a href="{_esc(ln.href)}">{_esc(ln.text or ln.href)}</a></li>'
                    for ln in s.links]
            out += ["</ul>"]
        out += ["</section>"]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_html_report(path: str | os.PathLike[str], title: str, meta: Mapping[str, Any],
                      sections: Sequence[Section], *,
                      assets_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the report to ``path`` atomically and return its path.

    Parameters
    ----------
    path : path
        The HTML file (its folder is created).
    title : str
        Page title and heading.
    meta : mapping
        Header key/value table (night, versions, creation time...), in the given order.
    sections : sequence of Section
    assets_dir : path, optional
        Also write each figure as ``<assets_dir>/<name>.png`` and link it from its caption
        (relative to the page). The page stays self-contained either way.
    """
    page = Path(path)
    page.parent.mkdir(parents=True, exist_ok=True)
    hrefs: dict[str, str] = {}
    if assets_dir is not None:
        adir = Path(assets_dir)
        adir.mkdir(parents=True, exist_ok=True)
        _check_unique(sections)  # before any file is written
        for f in (f for s in sections for f in s.figures):
            target = adir / f"{f.name}.png"
            write_bytes(target, bytes(f.png))
            rel = os.path.relpath(target.resolve(), page.parent.resolve())
            hrefs[f.name] = quote(Path(rel).as_posix())
    write_text(page, render_html(title, meta, sections, asset_hrefs=hrefs))
    return page
