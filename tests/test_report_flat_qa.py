"""``build-flat --qa PAGE.html --truth DIR``: the QA page of one build, self-contained, with
z-scores equal to (fit − truth)/σ computed here from the truth and the build's solutions."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from click.testing import CliRunner
from test_pipeline_flats import DEC, RA, _stars, _store, _z

from csstflux.cli.main import cli
from csstflux.errors import GridMismatchError
from csstflux.flat.observe import DEFAULT_DETECTORS, simulate
from csstflux.flat.settings import FlatSettings
from csstflux.io.stores.exposures import read_truth
from csstflux.pipeline.flats import build_flat
from csstflux.report.flat_qa import compare_truth, write_build_report

#: The build's settings, the same on the command line and in-process (the build is a fixed
#: tree reduction, so both give the same solutions).
BUILD = {"star_scale": "known", "max_iter": 2}
Z_CAPTION = "z-scores against the truth"


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """40 noisy stars per default detector (2 % SED errors), two dithered exposures."""
    d = tmp_path_factory.mktemp("flat_qa")
    rng = np.random.default_rng(5)
    ra, dec = _stars(rng, n=40)
    _store(d / "pred.zarr", ra, dec, rng, rel_err=0.02)
    with pytest.warns(UserWarning, match="top-hat"):
        simulate(d / "pred.zarr", d / "exp", ra=RA, dec=DEC, radius_deg=1.0, n_pointings=2,
                 ideal=False, seed=5, dither_arcsec=20.0, amplitude=0.03)
    return d


@pytest.fixture(scope="module")
def built(field, dask_scheduler_address):
    """build-flat --qa --truth through the CLI, and the same build in-process."""
    from distributed import Client

    page = field / "qa" / "flat.html"
    res = CliRunner().invoke(cli, [
        "build-flat", "--exposures", str(field / "exp"), "--predictions",
        str(field / "pred.zarr"), "--out", str(field / "cube" / "flat"), "--scheduler",
        dask_scheduler_address, "--star-scale", BUILD["star_scale"], "--max-iter",
        str(BUILD["max_iter"]), "--qa", str(page), "--truth", str(field / "exp"), "--json"])
    assert res.exit_code == 0, res.output
    with Client(dask_scheduler_address) as client:
        flat = build_flat(field / "exp", field / "pred.zarr", client, FlatSettings(**BUILD))
    return page, json.loads(res.stdout), flat


class _Tables(HTMLParser):
    """Every captioned table of a page: caption → rows (header → cell text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self._rows: list[list[str]] = []
        self._caption: str | None = None
        self._text: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._rows, self._caption = [], None
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("caption", "th", "td"):
            self._text = ""

    def handle_data(self, data):
        if self._text is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "caption":
            self._caption = self._text
        elif tag in ("th", "td"):
            self._rows[-1].append(self._text)
        elif tag == "table" and self._caption:
            head, *body = self._rows
            self.tables[self._caption] = [dict(zip(head, r, strict=True)) for r in body]
        if tag in ("caption", "th", "td"):
            self._text = None


def _tables(html: str) -> dict[str, list[dict[str, str]]]:
    p = _Tables()
    p.feed(html)
    return p.tables


def _expected_z(flat, flats):
    """Per detector and all together: count, mean and std of the finite z, from ``_z``."""
    z = {k: v[np.isfinite(v)] for k, v in _z(flat.solutions, flats).items()}
    z["all"] = np.concatenate([z[k] for k in sorted(flats)])
    return {k: (v.size, v.mean(), v.std()) for k, v in z.items()}


def test_qa_page_with_truth(built, field):
    page, summary, flat = built
    html = page.read_text()
    flats, *_ = read_truth(field / "exp")
    assert set(flats) == set(DEFAULT_DETECTORS) == set(flat.solutions)
    expected = _expected_z(flat, flats)

    # the z-score table: the numbers computed here, to the page's 6 significant digits
    rows = {r["detector"]: r for r in _tables(html)[Z_CAPTION]}
    assert list(rows) == [*sorted(DEFAULT_DETECTORS), "all"]
    for k, (n, mean, std) in expected.items():
        assert int(rows[k]["n"]) == n, k
        assert float(rows[k]["z mean"]) == pytest.approx(mean, rel=1e-5, abs=1e-12), k
        assert float(rows[k]["z std"]) == pytest.approx(std, rel=1e-5), k
    n, mean, std = expected["all"]
    assert n == sum(f.size for f in flats.values())  # every grid point and wavelength fitted
    assert summary["truth"]["n"] == n
    assert summary["truth"]["z_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
    assert summary["truth"]["z_std"] == pytest.approx(std, rel=1e-9)
    # a calibrated flat (z of ~47 000 grid points x wavelengths, strongly correlated within
    # one wavelength's 81 points and along λ: loose bounds; this seed 0.005 and 1.018)
    assert abs(mean) < 0.1 and 0.8 < std < 1.2

    # every detector: its row, its figure (maps and, with the truth, fit - truth)
    dets = {r["detector"]: r for r in _tables(html)["Per detector"]}
    assert sorted(dets) == sorted(DEFAULT_DETECTORS)
    for k in DEFAULT_DETECTORS:
        assert f'id="fig-detector_{k}"' in html
        assert int(dets[k]["contaminated pixels left out"]) == \
            summary["contaminated_excluded"][k]
        assert int(dets[k]["wavelengths"]) == flats[k].shape[0]
    assert 'id="fig-z_histogram"' in html and 'id="fig-residuals_counts"' in html
    outcomes = {r["outcome"]: int(r["sources"])
                for r in _tables(html)["Cross-match of the exposures' sources"]}
    m = summary["matches"]
    assert outcomes["matched"] == m["matched"] > 0 and outcomes["unmatched"] == m["no_match"]
    assert outcomes["ambiguous (dropped)"] == m["ambiguous"]

    # self-contained: images are data: URLs, nothing loaded from outside, no script
    assert html.count("<img") == len(DEFAULT_DETECTORS) + 2
    assert re.findall(r'<img src="([^"]{0,22})', html) == \
        ["data:image/png;base64,"] * html.count("<img")
    assert not re.search(r"(src|href)\s*=\s*\"\s*(https?:)?//", html, re.I)
    assert "<script" not in html and "<link" not in html and "url(" not in html
    # the files beside: relative links that resolve from the page
    hrefs = re.findall(r'<a href="([^"#][^"]*)"', html)
    assert len(hrefs) == 4 and all((page.parent / unquote(h)).exists() for h in hrefs)
    assert summary["qa_report"] == str(page)


def test_qa_page_opens_in_a_browser(built, tmp_path):
    """Headless chromium (:mod:`browser`): loads, every image decodes, nothing blocked."""
    from browser import check_page, chromium_executable

    if chromium_executable() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium missing in CI (.ci/run installs it)")
        pytest.skip("chromium is not installed; CI installs it")
    r = check_page(built[0], tmp_path / "qa.png")
    assert not r.errors and not r.broken_images and not r.blocked, r
    assert (tmp_path / "qa.png").stat().st_size > 10_000


def test_qa_page_without_truth(built, tmp_path):
    """The page of a real flat (no truth): maps, σ, fit curves; no z-scores."""
    _, _, flat = built
    page = write_build_report(tmp_path / "plain.html", flat)
    html = page.read_text()
    assert Z_CAPTION not in html and "fig-z_histogram" not in html
    assert all(f'id="fig-detector_{k}"' in html for k in DEFAULT_DETECTORS)
    assert sorted(r["detector"] for r in _tables(html)["Per detector"]) == \
        sorted(DEFAULT_DETECTORS)


def test_truth_that_does_not_fit_the_build(built, field):
    _, _, flat = built
    flats, waves, gx, gy, _ = read_truth(field / "exp")
    with pytest.raises(GridMismatchError, match="wavelengths of GU-03"):
        compare_truth(flat, flats, {**waves, "GU-03": waves["GU-03"][1:]}, gx, gy)
    with pytest.raises(GridMismatchError, match="detector grid in x"):
        compare_truth(flat, flats, waves, gx[:-1], gy)
    with pytest.raises(GridMismatchError, match="no detector of the build"):
        compare_truth(flat, {}, {}, gx, gy)
    part = compare_truth(flat, {"GV-02": flats["GV-02"]}, waves, gx, gy)
    assert part.missing == ("GI-01", "GU-03") and [r["detector"] for r in part.rows()] == \
        ["GV-02"]


def test_truth_options_checked_before_any_build(field, tmp_path):
    """--truth without --qa, a truth on another grid, a folder without truth.npz: said
    before a cluster is contacted (the scheduler address is unreachable), nothing written."""
    base = ["build-flat", "--exposures", str(field / "exp"), "--predictions",
            str(field / "pred.zarr"), "--out", str(tmp_path / "cube"), "--scheduler",
            "tcp://x:1"]
    res = CliRunner().invoke(cli, [*base, "--truth", str(field / "exp")])
    assert res.exit_code == 2 and "--truth goes with --qa" in res.output
    page = tmp_path / "qa.html"
    res = CliRunner().invoke(cli, [*base, "--grid", "7", "--qa", str(page), "--truth",
                                   str(field / "exp" / "truth.npz")])
    assert res.exit_code == 2 and "pass --grid 9" in res.output
    res = CliRunner().invoke(cli, [*base, "--qa", str(page), "--truth", str(tmp_path)])
    assert res.exit_code == 1 and "no such file" in res.output
    assert not page.exists() and not Path(str(tmp_path / "cube") + ".fits").exists()
