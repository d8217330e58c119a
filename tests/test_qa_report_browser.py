"""The QA report opens in a real headless browser: no script error, no broken image.

Debian's ``chromium`` (installed by ``.ci/run`` when missing), headless, no sandbox, no
network (:mod:`browser`). The negative pages prove the harness sees what it must: a broken
image and a throwing script are each detected.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from browser import HeadlessChromium, chromium_executable

from csstflux.report.html import Figure, Link, Section, Table, png_size, write_html_report


@pytest.fixture(scope="module")
def browser():
    if chromium_executable() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    with HeadlessChromium() as b:
        yield b


def _png(kind: str) -> bytes:
    """A real matplotlib (Agg) figure as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(3)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if kind == "map":
        im = ax.imshow(1 + 0.03 * rng.standard_normal((9, 9)), origin="lower", cmap="RdBu_r")
        fig.colorbar(im, ax=ax)
        ax.set_title("GV flat, 5500 A")
    else:
        lam = np.linspace(2500, 10500, 574)
        ax.plot(lam, 0.003 + 0.001 * np.abs(np.sin(lam / 900)), label="GV")
        ax.set_xlabel("wavelength (A)")
        ax.set_ylabel("RMS(recovered - true)")
        ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


@pytest.mark.slow
def test_qa_report_renders_cleanly(browser, tmp_path):
    figs = (Figure("flat-map-gv", _png("map"), "GV flat map <recovered>"),
            Figure("residual-vs-wavelength", _png("line"), "RMS against wavelength"))
    table = Table([{"band": b, "rms": v, "n_stars": 400} for b, v in
                   (("GU", 0.0029), ("GV", 0.0011), ("GI", 0.0015))], caption="flat precision")
    page = write_html_report(
        tmp_path / "qa.html", "csstflux QA, night 2031-05-02",
        {"night": "2031-05-02", "csstflux": "0.1.0", "created": "2031-05-03T08:00:00Z"},
        [Section("Flat field", paragraphs=("Recovered minus true flat, 400 stars.",),
                 tables=(table,), figures=figs,
                 links=(Link("flat.performance.html", "Dask performance report"),
                        Link("http://127.0.0.1:8787/status", "Dask dashboard"))),
         Section("Predictions", paragraphs=("2000 stars, 3 files unusable.",))],
        assets_dir=tmp_path / "qa-figures")
    res = browser.check(page, tmp_path / "qa.png")
    assert res.errors == [] and res.broken_images == [] and res.blocked == []
    w, h = png_size(res.screenshot.read_bytes())
    # full page at 1280 px wide: the header, a table and two 400 x 280 figures at least
    assert w == 1280 and 900 <= h < 20_000
    assert res.screenshot.stat().st_size > 20_000  # not a blank page


def check_body(browser, tmp_path, name: str, body: str):
    """Open a page with ``body`` (after one paragraph) in the harness."""
    page = tmp_path / f"{name}.html"
    page.write_text(f"<!DOCTYPE html><html><body><p>x</p>{body}</body></html>")
    return browser.check(page, tmp_path / f"{name}.png")


@pytest.mark.slow
def test_harness_detects_a_broken_image(browser, tmp_path):
    res = check_body(browser, tmp_path, "broken",
                     '<img src="missing.png" alt="gone">'
                     '<img src="data:image/png;base64,iVBORw0KGgoAAAAAbm9wZQ==" alt="corrupt">')
    assert [b.split(" alt=")[1] for b in res.broken_images] == ["gone", "corrupt"]
    assert res.screenshot.is_file()


@pytest.mark.slow
def test_harness_detects_a_script_error_and_blocks_network(browser, tmp_path):
    res = check_body(browser, tmp_path, "throws",
                     '<img src="https://example.org/remote.png" alt="remote">'
                     '<script>console.error("logged"); null.boom();</script>')
    assert any(e.startswith("pageerror:") and "null" in e for e in res.errors)
    assert any(e == "console.error: logged" for e in res.errors)
    assert res.blocked == ["https://example.org/remote.png"]
    assert [b.split(" alt=")[1] for b in res.broken_images] == ["remote"]
