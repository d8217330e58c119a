"""``verify-library``'s Teff split (issue 12, item 5): the library's own Teff decides in/out of
5000–9750 K with or without ``--params``; stars without any Teff are verified and reported
under ``unknown_teff``, split by the Teff their own spectrum gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_stars import domain_truth, write_generic_library

from csstflux.grids import TEFF_DOMAIN
from csstflux.library.domain import design, fit_domain_model, scale_labels
from csstflux.model.verify import domain_block

#: Known Teff (NaN: none) and the Teff the spectrum is drawn at.
STARS = {"known_in": (6000.0, 6000.0), "known_out": (4300.0, 4300.0),
         "none_in": (np.nan, 7000.0), "none_out": (np.nan, 4300.0)}


@pytest.fixture(scope="module")
def exact_model():
    """A generative model fitted exactly on noise-free rows drawn from it (5200–9500 K)."""
    rng = np.random.default_rng(11)
    coeffs, color = domain_truth(rng, n_lines=40, depth=0.03)
    n = 300
    lab = scale_labels(rng.uniform(5200.0, 9500.0, n), rng.uniform(2.0, 4.8, n),
                       rng.uniform(-1.5, 0.3, n))
    d = design(lab)
    t, g, f = (lab * [0.1, 1.0, 0.5] + [np.log10(7000.0), 3.5, -0.3]).T
    model = fit_domain_model(d @ coeffs, 10 ** t, g, f, d @ color, np.ones(n, bool))
    return model, coeffs, color


def test_unknown_teff_is_split_by_the_spectrums_own_estimate(exact_model):
    model, coeffs, color = exact_model
    names = np.array(list(STARS))
    teff = np.array([v[0] for v in STARS.values()])
    drawn = np.array([v[1] for v in STARS.values()])
    d = design(scale_labels(drawn, np.full(4, 4.0), np.full(4, -0.2)))
    x, c = d @ coeffs, d @ color
    block = domain_block(model, x, np.zeros(x.shape, bool), c, teff, np.ones(4, bool),
                         snr=2000.0, rng=np.random.default_rng(0), names=names)
    assert block["teff_domain"] == list(TEFF_DOMAIN)
    assert [block[k]["n"] for k in ("in_range", "out_of_range", "unknown_teff")] == [1, 1, 2]
    split = block["unknown_teff"]["by_teff_est"]
    assert split["in_range"]["names"] == ["none_in"]
    assert split["out_of_range"]["names"] == ["none_out"]
    # the estimates are the drawn Teff (exact model, S/N 2000) to within 0.5 %
    assert split["in_range"]["teff_est"][0] == pytest.approx(7000.0, rel=5e-3)
    assert split["out_of_range"]["teff_est"][0] == pytest.approx(4300.0, rel=5e-3)
    # the 4300 K star without a Teff is OUTSIDE_DOMAIN from its estimate, like the known one
    assert split["out_of_range"]["outside_domain"] == 1
    assert split["in_range"]["outside_domain"] == 0
    assert block["out_of_range"]["outside_domain"] == 1
    # groups and the split add up
    u = block["unknown_teff"]
    assert split["in_range"]["n"] + split["out_of_range"]["n"] == u["n"]
    assert split["in_range"]["flagged"] + split["out_of_range"]["flagged"] == u["flagged"]


@pytest.fixture(scope="module")
def header_teff_library(tmp_path_factory):
    """Generic FITS stars with TEFF header keywords (one without any), no parameter file."""
    return write_generic_library(tmp_path_factory.mktemp("hdr"),
                                 {"s6000": 6000.0, "s4000": 4000.0, "s11000": 11000.0,
                                  "nohdr": None}, header_teff=True)


def test_verify_library_uses_the_readers_teff_without_params(header_teff_library, tmp_path):
    """No ``--params``: the TEFF keywords decide which stars the network is verified on (the
    4000 K and 11000 K stars are left out), the star without one is verified, and the domain
    block reports it under ``unknown_teff`` with its own estimate."""
    from csstflux.cli.main import cli

    res = CliRunner().invoke(cli, ["verify-library", "--library", "generic",
                                   str(header_teff_library), "--out", str(tmp_path / "v"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_input"] == 4 and out["n_stars"] == 2
    assert out["n_left_out"]["teff"] == 2
    stars = (tmp_path / "v" / "stars.csv").read_text()
    assert "s6000" in stars and "nohdr" in stars and "s4000" not in stars
    dom = out["domain"]
    assert [dom[k]["n"] for k in ("in_range", "out_of_range", "unknown_teff")] == [1, 2, 1]
    assert dom["by_teff"]["0-4000"]["n"] == 0 and dom["by_teff"]["4000-4500"]["n"] == 1
    split = dom["unknown_teff"]["by_teff_est"]
    got = split["in_range"]["names"] + split["out_of_range"]["names"]
    assert got == ["nohdr"]
    est = (split["in_range"]["teff_est"] + split["out_of_range"]["teff_est"])[0]
    inside = TEFF_DOMAIN[0] <= est <= TEFF_DOMAIN[1]
    assert split["in_range" if inside else "out_of_range"]["n"] == 1
