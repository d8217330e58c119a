"""A field dense enough for a flat: demo stars on the slitless detectors of one pointing.

A flat needs hundreds of standards on every detector; a detector covers 11′ × 11′, and the
slitless detectors lie in the outer columns of CSST's focal plane (0.3–0.6° from the
boresight, :mod:`csstflux.flat.detectors`), so the demo release's plates (2.5° fields of 2000
stars in all) put almost none there. :func:`field_positions` draws ``per_detector`` stars
uniformly over each chosen detector's footprint for a pointing at ``(ra, dec)`` (PA 0),
inside a margin that keeps them on the detector under the dithers of ``csstflux
simulate-exposures``; :func:`build_field_release` writes them as a LAMOST-format demo release
(:func:`csstflux.demo.release.build_demo_release` with ``sky``), which ``csstflux
demo-field`` then predicts into a real predictions store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from csstflux.demo.release import DemoRelease, build_demo_release
from csstflux.errors import ConfigError
from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE, pixel_to_sky

#: Stars are kept this many pixels inside a detector's edges (a 20″ dither is 270 pixels).
MARGIN_PX = 300
#: One detector per band, as ``simulate-exposures`` uses by default.
DEFAULT_FIELD_DETECTORS: tuple[str, ...] = tuple(SLITLESS_FOCAL_PLANE.band(b)[0].name
                                                 for b in ("GU", "GV", "GI"))


def field_positions(ra: float, dec: float, per_detector: int,
                    detectors: Sequence[str] = DEFAULT_FIELD_DETECTORS, seed: int = 0
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(ra, dec) degrees of ``per_detector`` stars on each detector's footprint."""
    if per_detector < 1:
        raise ConfigError(f"need at least one star per detector, got {per_detector}")
    if not (0 <= ra < 360 and -90 <= dec <= 90):
        raise ConfigError(f"field centre outside the sky: RA {ra}, Dec {dec}")
    rng = np.random.default_rng((seed, 2))
    ras, decs = [], []
    for name in detectors:
        try:
            det = SLITLESS_FOCAL_PLANE[name]
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        x = rng.uniform(MARGIN_PX, det.n_x - MARGIN_PX, per_detector)
        y = rng.uniform(MARGIN_PX, det.n_y - MARGIN_PX, per_detector)
        r, d = pixel_to_sky(det, x, y, ra, dec, 0.0)
        ras.append(np.asarray(r) % 360.0)
        decs.append(np.asarray(d))
    ra_all, dec_all = np.concatenate(ras), np.concatenate(decs)
    return np.round(ra_all, 6), np.round(dec_all, 6)


def build_field_release(root: str | os.PathLike[str], ra: float, dec: float,
                        per_detector: int = 400,
                        detectors: Sequence[str] = DEFAULT_FIELD_DETECTORS,
                        seed: int = 0) -> DemoRelease:
    """A clean demo release (no broken files) of the stars of :func:`field_positions`."""
    sky = field_positions(ra, dec, per_detector, detectors, seed)
    return build_demo_release(Path(root), n_stars=sky[0].size, seed=seed, broken=False, sky=sky)
