"""Wavelength grids and bands: the one source of truth.

Every module imports its grids from here and every output writes ``grid.to_attrs()`` into its
attributes, so a grid can never be defined twice and drift. All wavelengths are in vacuum, in Å.

The two model grids follow Table 1 of Yang et al. (UaRA-net): the network input is a LAMOST-like
R=2000 spectrum on 4000–7000 Å, log-uniform with Δlnλ = 1/4000 (2238 pixels); the network output
is a CSST-like R=200 SED on 2500–10500 Å, log-uniform with Δlnλ = 1/400 (574 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.errors import GridMismatchError


@dataclass(frozen=True)
class LogGrid:
    """A log-uniform wavelength grid of pixel centres, vacuum Å.

    Pixel ``k`` has centre ``start * exp(k * dlnlambda)``; its edges lie half a step either side
    in ln λ. ``stop`` is the nominal upper end of the range and the grid has
    ``floor(ln(stop / start) / dlnlambda)`` pixels, the number of whole steps in the range: this
    is how the paper's Table 1 counts 2238 input and 574 output pixels.
    """

    name: str
    """Short identifier written into outputs (``"input"``, ``"output"``)."""
    start: float
    """Centre of the first pixel, vacuum Å."""
    stop: float
    """Nominal upper end of the range, vacuum Å."""
    dlnlambda: float
    """Step in natural-log wavelength."""
    resolution: float
    """Nominal resolving power R = λ/FWHM of spectra on this grid."""
    n: int = field(init=False)
    """Number of pixels, derived from start, stop and dlnlambda."""

    def __post_init__(self) -> None:
        if not (self.start > 0 and self.stop > self.start and self.dlnlambda > 0):
            raise ValueError(f"invalid grid {self.name!r}: start={self.start}, stop={self.stop}, "
                             f"dlnlambda={self.dlnlambda}")
        n = int(np.floor(np.log(self.stop / self.start) / self.dlnlambda + 1e-9))  # whole steps
        object.__setattr__(self, "n", n)

    @cached_property
    def wavelength(self) -> NDArray[np.float64]:
        """Pixel centres, shape (n,), vacuum Å."""
        return self.start * np.exp(self.dlnlambda * np.arange(self.n))

    @cached_property
    def edges(self) -> NDArray[np.float64]:
        """Pixel edges, shape (n + 1,), vacuum Å."""
        return self.start * np.exp(self.dlnlambda * (np.arange(self.n + 1) - 0.5))

    def window(self, lo: float, hi: float) -> NDArray[np.bool_]:
        """Boolean mask (n,) of the pixels whose centres lie in [lo, hi] Å."""
        w = self.wavelength
        return (w >= lo) & (w <= hi)

    def check(self, wavelength: NDArray[np.floating[Any]], *, what: str = "array",
              rtol: float = 1e-7) -> None:
        """Raise :class:`~csstflux.errors.GridMismatchError` unless ``wavelength`` equals this
        grid."""
        wavelength = np.asarray(wavelength, dtype=float)
        if wavelength.shape != (self.n,) or not np.allclose(wavelength, self.wavelength,
                                                            rtol=rtol, atol=0):
            found = (f"{wavelength.size} pixels" if wavelength.size == 0 else
                     f"{wavelength.size} pixels, {wavelength.min():.3f}–{wavelength.max():.3f} Å")
            raise GridMismatchError(f"{what} is not on the {self.name} grid",
                                    expected=self.describe(), found=found)

    def describe(self) -> str:
        """One-line human summary."""
        return (f"{self.n} pixels, {self.wavelength[0]:.3f}–{self.wavelength[-1]:.3f} Å, "
                f"Δlnλ={self.dlnlambda:g}")

    def to_attrs(self) -> dict[str, Any]:
        """JSON-serialisable description for output attributes and ``csstflux info``."""
        return {"name": self.name, "n": self.n, "start": self.start, "stop": self.stop,
                "dlnlambda": self.dlnlambda, "resolution": self.resolution,
                "medium": "vacuum", "unit": "Angstrom"}

    def matches_attrs(self, attrs: dict[str, Any]) -> bool:
        """True when ``attrs`` (as written by :meth:`to_attrs`) describe this grid."""
        try:
            return bool(int(attrs["n"]) == self.n
                    and np.isclose(float(attrs["start"]), self.start, rtol=1e-9)
                    and np.isclose(float(attrs["dlnlambda"]), self.dlnlambda, rtol=1e-9))
        except (KeyError, TypeError, ValueError):
            return False


@dataclass(frozen=True)
class Band:
    """A wavelength band, vacuum Å."""

    name: str
    """Band name (``"GU"``, ``"GV"``, ``"GI"``)."""
    lo: float
    """Lower edge, Å."""
    hi: float
    """Upper edge, Å."""

    def __post_init__(self) -> None:
        if not self.hi > self.lo > 0:
            raise ValueError(f"invalid band {self.name!r}: {self.lo}–{self.hi} Å")

    def mask(self, wavelength: NDArray[np.floating[Any]]) -> NDArray[np.bool_]:
        """Boolean mask of ``wavelength`` values inside the band."""
        wavelength = np.asarray(wavelength)
        return (wavelength >= self.lo) & (wavelength <= self.hi)

    def to_attrs(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}


#: Network input: LAMOST-like normalised spectra, R=2000, 4000–7000 Å (2238 pixels).
INPUT_GRID = LogGrid(name="input", start=4000.0, stop=7000.0, dlnlambda=1.0 / 4000.0,
                     resolution=2000.0)
#: Network output: CSST-like SEDs, R=200, 2500–10500 Å (574 pixels).
OUTPUT_GRID = LogGrid(name="output", start=2500.0, stop=10500.0, dlnlambda=1.0 / 400.0,
                      resolution=200.0)

#: CSST slitless bands (first order), vacuum Å.
BANDS: dict[str, Band] = {
    "GU": Band("GU", 2550.0, 4200.0),
    "GV": Band("GV", 4000.0, 6500.0),
    "GI": Band("GI", 6200.0, 10000.0),
}

#: Resolving power of the CSST slitless spectra in each band (first order), λ/FWHM. From the
#: CESS emulator parameter file (Wen et al. 2024, MNRAS 528, 2770: ``gu_Res``, ``gv_Res``,
#: ``gi_Res``); the model's SEDs are at ``OUTPUT_GRID.resolution`` (200) instead, and
#: :func:`csstflux.spectra.degrade.match_band_resolution` brings observed spectra down to it.
BAND_RESOLUTION: dict[str, float] = {"GU": 225.0, "GV": 250.0, "GI": 250.0}

#: SED scaling window: targets are divided by their mean flux here (free of strong lines).
SCALING_WINDOW: tuple[float, float] = (5526.0, 5586.0)

#: Continuum normalisation: moving-average window in pixels and the edge rule's half-width.
CONTINUUM_WINDOW: int = 51

#: Stellar parameter domain used for training and prediction (Teff, K).
TEFF_DOMAIN: tuple[float, float] = (5000.0, 9750.0)

#: Continuum colour of an input spectrum: ln(median f_λ in the blue window / median f_λ in the
#: red window), rest-frame vacuum Å, inside the input range. The windows hold Hδ, Hγ and Hα;
#: medians over 400 Å make their effect small but resolution-dependent: an R=200 SED reads
#: 0.01 (5000-7000 K) to 0.04 (below 5000 K) redder than the same star at R=2000.
COLOR_WINDOWS: tuple[tuple[float, float], tuple[float, float]] = ((4100.0, 4500.0),
                                                                   (6300.0, 6700.0))

#: Signal-to-noise ratios of the paper's training augmentation and its test set.
TRAIN_SNRS: tuple[float, ...] = (20.0, 25.0, 30.0, 35.0, 40.0)
TEST_SNRS: tuple[float, ...] = (20.0, 25.0, 30.0, 35.0, 40.0, 80.0)

#: Wavelengths (Å) at which the paper compares predicted σ with the empirical 1σ (Figs. 4–5).
SIGMA_CHECK_WAVELENGTHS: tuple[float, ...] = (3205.0, 3429.0, 4252.0, 7206.0, 9207.0)

#: Wavelengths (Å) at which library verification reports 1σ (paper §4.3).
VERIFY_WAVELENGTHS: tuple[float, ...] = (3600.0, 4500.0, 5000.0, 6000.0, 7000.0)


def all_grids_attrs() -> dict[str, Any]:
    """Everything a product needs to record about grids and bands."""
    return {
        "input_grid": INPUT_GRID.to_attrs(),
        "output_grid": OUTPUT_GRID.to_attrs(),
        "bands": {k: b.to_attrs() for k, b in BANDS.items()},
        "band_resolution": dict(BAND_RESOLUTION),
        "scaling_window": list(SCALING_WINDOW),
        "continuum_window": CONTINUUM_WINDOW,
        "color_windows": [list(w) for w in COLOR_WINDOWS],
    }
