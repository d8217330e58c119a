"""The flat-fit settings, declared once: ``build-flat``'s options, the nightly job's
``[nightly.flat]`` table and :func:`csstflux.pipeline.flats.build_flat` all take a
:class:`FlatSettings`; and the coarse detector grid the flat is given on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import ConfigError
from csstflux.flat.polyfit2d import DEFAULT_ORDER

if TYPE_CHECKING:
    from csstflux.flat.detectors import Detector

StarScaleMode = Literal["median", "known", "anchored"]
#: The ``star_scale`` modes (:mod:`csstflux.flat.equations`: the predicted spectrum each
#: ratio divides by).
STAR_SCALES: tuple[str, ...] = ("median", "known", "anchored")


@dataclass(frozen=True)
class FlatSettings:
    """How the 3D flat is fitted from matched exposure sources."""

    order: int = DEFAULT_ORDER
    """Total order of the 2D polynomial per detector and wavelength."""
    grid: int = 9
    """Points per axis of the coarse output grid."""
    radius_arcsec: float = 1.0
    """Cross-match radius, arcsec."""
    star_scale: StarScaleMode = "median"
    """median: a per-star grey term (the chromatic flat only); known: the absolute fluxes and
    E(B-V) recorded in simulated exposures; anchored: the store's absolute SEDs from
    csstflux anchor."""
    nsigma: float = 3.0
    """Sigma-clipping threshold."""
    max_iter: int = 6
    """Clipping passes (0: none; the loop stops earlier once no ratio changes status)."""

    def __post_init__(self) -> None:
        if self.star_scale not in STAR_SCALES:
            raise ValueError(f"star_scale must be one of {', '.join(STAR_SCALES)}, "
                             f"not {self.star_scale!r}")
        if self.order < 0 or self.grid < 2 or not self.radius_arcsec > 0 \
                or not self.nsigma > 0 or self.max_iter < 0:
            raise ValueError("need order >= 0, grid >= 2, radius_arcsec > 0, nsigma > 0 and "
                             f"max_iter >= 0; got {self.order}, {self.grid}, "
                             f"{self.radius_arcsec}, {self.nsigma}, {self.max_iter}")


def coarse_grid(det: Detector, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``n`` × ``n`` grid points spanning the detector's pixel centres, (grid_x, grid_y),
    pixels."""
    if n < 2:
        raise ConfigError(f"the coarse grid needs at least 2 points per axis, got {n}")
    return np.linspace(0.0, det.n_x - 1.0, n), np.linspace(0.0, det.n_y - 1.0, n)
