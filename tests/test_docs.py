"""The documentation site builds with warnings as errors and its pages render cleanly.

``python -m sphinx -W --keep-going -b html docs OUT`` (the command in ``docs/index.md``)
executes the tutorials on the embedded demo data, so this is also an end-to-end test of the
notebook API. The built pages are then opened in headless chromium (:mod:`browser`, no
network): no script error, no broken image, nothing fetched from outside the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import HeadlessChromium, chromium_executable

pytest.importorskip("sphinx", reason="pip install '.[docs]' (CI installs it with .[test])")
pytest.importorskip("myst_nb")
pytest.importorskip("pydata_sphinx_theme")

DOCS = Path(__file__).resolve().parents[1] / "docs"
TUTORIALS = sorted(p.stem for p in (DOCS / "tutorials").glob("*.md"))
PAGES = [*sorted(p.stem for p in DOCS.glob("*.md")), *(f"tutorials/{t}" for t in TUTORIALS)]
_IMG = re.compile(r"<img[^>]*\ssrc=\"([^\"]+)\"")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for this module into a fresh folder (notebooks executed)."""
    work = tmp_path_factory.mktemp("docs")
    out = work / "html"
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(work / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (
        f"sphinx exited {proc.returncode}\n" + "\n".join(
            line for line in (proc.stdout + proc.stderr).splitlines()
            if "WARNING" in line or "ERROR" in line or "Error" in line)[-6000:])
    return out


def test_tutorials_exist():
    assert {"predict", "anchor", "flat", "operations", "training"} <= set(TUTORIALS)


@pytest.mark.slow
def test_every_page_is_built(site):
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), page


@pytest.mark.slow
@pytest.mark.parametrize("tutorial", TUTORIALS)
def test_tutorial_has_figures_drawn_at_build_time(site, tutorial):
    page = site / "tutorials" / f"{tutorial}.html"
    srcs = _IMG.findall(page.read_text(encoding="utf-8"))
    pngs = [s for s in srcs if s.endswith(".png") or s.startswith("data:image/png")]
    assert pngs, f"{tutorial}: no PNG figure"
    for src in pngs:
        if not src.startswith("data:"):
            png = (page.parent / src).resolve()
            assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src


@pytest.mark.slow
def test_no_notebook_error_in_output(site):
    for t in TUTORIALS:
        html = (site / "tutorials" / f"{t}.html").read_text(encoding="utf-8")
        assert "Traceback (most recent call last)" not in html, t


@pytest.mark.slow
def test_pages_render_in_headless_chromium(site, tmp_path):
    if chromium_executable() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    with HeadlessChromium() as browser:
        for page in PAGES:
            res = browser.check(site / f"{page}.html", tmp_path / f"{page.replace('/', '-')}.png")
            assert res.errors == [], (page, res.errors)
            assert res.broken_images == [], (page, res.broken_images)
            assert res.blocked == [], (page, res.blocked)
