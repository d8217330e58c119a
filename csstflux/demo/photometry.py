"""Photometry of the demo release: true SEDs, reddening, scale and header magnitudes.

Each demo star's true SED is the shipped ATLAS9 grid (:mod:`csstflux.library.sed_grid`) at
its parameters, reddened by a drawn E(B−V) (exponential, mean :data:`EBV_MEAN`, capped at
:data:`EBV_CAP`; F99, R_V 3.1) and scaled so that its observed SDSS r is uniform in
:data:`R_MAG_RANGE`; its header magnitudes are the synthetic AB magnitudes less each band's
AB offset plus Gaussian noise (:data:`PHOT_SIGMA`), rounded to 0.01, with a few bands made
missing or absurd on purpose. :mod:`csstflux.demo.release` writes them into the headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import OUTPUT_GRID
from csstflux.io.formats.lamost_photometry import HEADER_BANDS, PS1_KEYS
from csstflux.library.sed_grid import load_sed_grid
from csstflux.photometry.bands import load_bands
from csstflux.photometry.extinction import extinction_k, redden
from csstflux.photometry.synth import SyntheticPhotometry

#: True E(B-V), mag: exponential with mean EBV_MEAN, capped at EBV_CAP (mean of the capped
#: draw 0.1 (1 - e^-5) = 0.0993), rounded to 1e-4; reddening law and R_V.
EBV_MEAN, EBV_CAP = 0.1, 0.5
EXTINCTION_LAW, EXTINCTION_RV = "F99", 3.1
#: Observed (reddened) SDSS r AB magnitude, uniform in this range (rounded to 1e-3).
R_MAG_RANGE = (12.0, 17.5)
#: Bands of the photometry truth (csstflux.io.formats.lamost_photometry.HEADER_BANDS order) and the
#: catalogue's Gaussian 1σ in each, mag.
PHOT_BANDS: tuple[str, ...] = HEADER_BANDS
PHOT_SIGMA: dict[str, float] = {"sdss_u": 0.05, "sdss_g": 0.02, "sdss_r": 0.02,
                                "sdss_i": 0.02, "sdss_z": 0.03, "ps1_g": 0.02, "ps1_r": 0.02,
                                "ps1_i": 0.02, "ps1_z": 0.03, "ps1_y": 0.03}
#: Bands each layout's header carries: image (DR7) MAGTYPE 'ugriz' MAG1..MAG5 (MAG6, MAG7 =
#: 99), COADD (DR9) MAG_PS_G..MAG_PS_Y.
LAYOUT_BANDS: dict[str, tuple[str, ...]] = {
    "image": ("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z"),
    "coadd": tuple(PS1_KEYS.values())}
#: LAMOST's "no magnitude"; fraction of stars with one band missing; one star in
#: ABSURD_EVERY has one band off by ±ABSURD_OFFSET mag.
MISSING_MAG, MISSING_FRACTION, ABSURD_EVERY, ABSURD_OFFSET = 99.0, 0.03, 200, 1.0
@dataclass(frozen=True)
class PhotProblem:
    """A header magnitude made wrong on purpose."""

    obsid: int
    band: str
    """Band name (:data:`PHOT_BANDS`)."""
    kind: str
    """``missing`` (written as 99.0) or ``absurd`` (off by ``offset``)."""
    offset: float | None
    """Magnitudes added (±ABSURD_OFFSET) for ``absurd``; None for ``missing``."""


@dataclass(frozen=True)
class _Photometry:
    """Photometry truth and header magnitudes of every star (arrays in star order)."""

    sed_params: NDArray[np.float64]
    """(n, 3) parameters of the true SED."""
    ebv: NDArray[np.float64]
    scale: NDArray[np.float64]
    true_ab: NDArray[np.float64]
    """(n, len(PHOT_BANDS)) AB."""
    catalog: NDArray[np.float64]
    """(n, len(PHOT_BANDS)) catalogue-system magnitudes, rounded to 0.01, 99 where missing."""
    sigma: dict[str, float]
    problems: list[tuple[int, str, str, float | None]]
    """(star index, band, kind, offset)."""


def draw_photometry(seed: int, params: NDArray[np.float64], layouts: list[str], noise: bool
                ) -> _Photometry:
    """The true SED of every star at ``params`` (n, 3) (moved to the nearest point the SED
    grid can evaluate), reddened, scaled to its drawn r, its AB magnitudes and its header
    magnitudes. Draws only from its own generator ``default_rng((seed, 1))``."""
    rng = np.random.default_rng((seed, 1))
    n = len(params)
    grid = load_sed_grid()
    par = grid.nearest_inside(params[:, 0], params[:, 1], params[:, 2])
    rel = grid(par[:, 0], par[:, 1], par[:, 2])[0]
    ebv = np.round(np.minimum(rng.exponential(EBV_MEAN, n), EBV_CAP), 4).astype(np.float64)
    r_obs = np.round(rng.uniform(*R_MAG_RANGE, n), 3)
    bands = load_bands(PHOT_BANDS)
    synth = SyntheticPhotometry.from_bands(bands)
    reddened = redden(rel, ebv, extinction_k(OUTPUT_GRID.wavelength, EXTINCTION_LAW,
                                             EXTINCTION_RV))
    scale = 10.0 ** (-0.4 * (r_obs - synth.ab_mags(reddened)[:, PHOT_BANDS.index("sdss_r")]))
    true_ab = synth.ab_mags(reddened * scale[:, None])
    sigma = {b: PHOT_SIGMA[b] if noise else 0.0 for b in PHOT_BANDS}
    offset = np.array([b.ab_offset for b in bands])
    noisy = (true_ab - offset + np.array(list(sigma.values()))
             * rng.standard_normal(true_ab.shape))
    n_missing = min(max(1, round(MISSING_FRACTION * n)), n)
    n_absurd = min(-(-n // ABSURD_EVERY), n - n_missing)
    stars = rng.choice(n, n_missing + n_absurd, replace=False)
    which = rng.integers(0, len(LAYOUT_BANDS["image"]), stars.size)
    sign = rng.choice([-1.0, 1.0], stars.size)
    problems: list[tuple[int, str, str, float | None]] = []
    for j, i in enumerate(stars.tolist()):
        band = LAYOUT_BANDS[layouts[i]][which[j]]
        col = PHOT_BANDS.index(band)
        if j < n_missing:
            noisy[i, col] = MISSING_MAG
            problems.append((i, band, "missing", None))
        else:
            noisy[i, col] += sign[j] * ABSURD_OFFSET
            problems.append((i, band, "absurd", float(sign[j] * ABSURD_OFFSET)))
    return _Photometry(par, ebv, scale, true_ab, np.round(noisy, 2), sigma, sorted(problems))


def mag_header(layout: str, mags: NDArray[np.float64]) -> dict[str, Any]:
    """The header's input-catalogue photometry (``mags`` in PHOT_BANDS order)."""
    val = {b: float(mags[PHOT_BANDS.index(b)]) for b in LAYOUT_BANDS[layout]}
    if layout == "coadd":
        return {k: val[b] for k, b in PS1_KEYS.items()}
    return {"MAGTYPE": "ugriz", **{f"MAG{i + 1}": val[b] for i, b in
                                   enumerate(LAYOUT_BANDS["image"])},
            "MAG6": MISSING_MAG, "MAG7": MISSING_MAG}


def true_flux(sed_params: NDArray[np.float64], scale: NDArray[np.float64],
              ebv: NDArray[np.float64]) -> NDArray[np.float64]:
    """True observed SEDs (n, 574) on OUTPUT_GRID, erg/s/cm²/Å, from the SED parameters
    (n, 3), the intrinsic scale (n,) and E(B−V) (n,)."""
    par = np.asarray(sed_params, np.float64).reshape(-1, 3)
    sed = load_sed_grid()(par[:, 0], par[:, 1], par[:, 2])[0]
    k = extinction_k(OUTPUT_GRID.wavelength, EXTINCTION_LAW, EXTINCTION_RV)
    return redden(sed * np.asarray(scale)[:, None], np.asarray(ebv), k)


def manifest_block(sigma: dict[str, float], problems: Sequence[PhotProblem]) -> dict[str, Any]:
    """What the demo manifest records about the photometry."""
    return {"bands": list(PHOT_BANDS), "sigma": sigma,
            "ab_offset": {b.name: b.ab_offset for b in load_bands(PHOT_BANDS)},
            "ebv": f"exponential, mean {EBV_MEAN}, capped at {EBV_CAP}",
            "extinction": f"{EXTINCTION_LAW}, R_V = {EXTINCTION_RV}",
            "r_mag_ab": f"SDSS r after extinction, uniform {R_MAG_RANGE[0]}-{R_MAG_RANGE[1]}",
            "sed_grid_sha256": load_sed_grid().provenance.get("sha256"),
            "problems": [asdict(p) for p in problems]}
