"""The CSST slitless focal plane: detectors, their layout and a TAN WCS per pointing.

What is adopted, and why
------------------------
The CSST survey camera tiles its focal plane with 30 detectors in a 6 × 5 mosaic: 18 carry
the imaging filters (NUV, u, g, r, i, z, y) and 12 carry the slitless gratings, 4 each for
GU, GV and GI; every detector is fixed to one filter or grating, so no detector takes direct
images (Zhan 2021, Chin. Sci. Bull. 66, 1290, Fig. 5; paper §1). Each detector has
9216 × 9232 pixels (x × y) of 10 µm at 0.074″ per pixel, so one detector spans
682″ × 683″ on the sky.

Sources, checked (issue 6):

- Chip → band. The CSST data-flow system's constants (GitHub
  ``astronomical-data-processing/csst-dfs-commons``, ``csst_dfs_commons/models/constants.py``,
  commit 1283b08) list the slitless detectors ``SLS_DECTECTORS = [1, 2, 3, 4, 5, 10, 21, 26,
  27, 28, 29, 30]`` with ``SLS_DECTECTORS2FILTER`` GI = {1, 10, 21, 30}, GV = {2, 5, 26, 29},
  GU = {3, 4, 27, 28}, and the 18 imaging detectors as the complement
  (``MBI_DECTECTORS``). :data:`SLITLESS_CHIPS` is that table.
- Format and plate scale. The CSST L1 data model of the slitless module
  (``hypergravity/csst-doc-msc``, ``docs/source/sls/data_model.md``) gives ``NAXIS1 = 9216``,
  ``NAXIS2 = 9232``; its pipeline notes (``docs/source/sls/algorithm.rst``) give 12
  slitless 9k × 9k detectors, 4 per band, 0.074″ per pixel and "660 × 660″" per detector
  (a rounded figure). The CESS emulator (Wen et al. 2024, MNRAS 528, 2770,
  ``emulator_parameters.json``) uses the same ``arcsecperpix = 0.074``.
- Positions. Chip ``c`` (1–30) lies in row ``(c − 1) mod 5`` and column ``5 − (c − 1) // 5``
  (0-based, x increasing with column); columns are separated by 534-pixel gaps, except that
  the outer columns and chips 10 and 21 sit a further 775 pixels outwards (1309-pixel gaps);
  rows are separated by 898-pixel gaps. This is the geometry of the CSST main-survey
  simulation's ``target_location_check.py`` as ported in ``Cirrus012/make_c9_star_cat``
  (``inverse_target_location.py``: ``XGAP1, XGAP2 = 534, 1309``, ``YGAP = 898``, the same
  row/column rule and the same chip 10/21 exceptions); :func:`chip_center` reproduces its
  centres to within its half-pixel edge convention. The official simulation code itself was
  not available to check, so the positions rest on that port, and the sense of the Y axis is
  unchecked (the port flags its own y axis as inverted; flipped, chips 1–5 would lie at +Y
  instead of −Y). Good enough to scatter stars over detectors, not for astrometry. Field
  distortion and detector rotations are not modelled; where the gratings put the dispersed
  light is :mod:`csstflux.flat.traces`.

Coordinates
-----------
Pixel coordinates are 0-based with pixel centres on integers (numpy convention; detector
image shape ``(n_y, n_x)``). Focal-plane coordinates ``(X, Y)`` are in pixels from the
boresight. On the sky, the focal-plane +Y axis points at position angle ``pa_deg`` (east of
north) and +X at ``pa_deg − 90°`` (with ``pa_deg = 0``: north up, east to the left).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

#: Detector format, pixels (x, y), and pixel pitch.
N_X, N_Y = 9216, 9232
PIXEL_SIZE_UM = 10.0
#: Plate scale, arcsec per pixel (CESS ``arcsecperpix``).
PIXEL_SCALE_ARCSEC = 0.074
#: Mosaic gaps, pixels: between columns, extra outer gap of the slitless columns, rows.
GAP_X, GAP_X_OUTER, GAP_Y = 534, 1309, 898
N_COLUMNS, N_ROWS = 6, 5
#: Slitless chip numbers per band (CSST main-survey simulation numbering).
SLITLESS_CHIPS: dict[str, tuple[int, ...]] = {
    "GU": (3, 4, 27, 28),
    "GV": (2, 5, 26, 29),
    "GI": (1, 10, 21, 30),
}


@dataclass(frozen=True)
class Detector:
    """One slitless detector."""

    chip: int
    """Chip number in the 30-detector mosaic (1–30)."""
    band: str
    """Grating band: ``"GU"``, ``"GV"`` or ``"GI"``."""
    x_center: float
    """Focal-plane X of the detector centre, pixels from the boresight."""
    y_center: float
    """Focal-plane Y of the detector centre, pixels from the boresight."""
    n_x: int = N_X
    """Pixels along x."""
    n_y: int = N_Y
    """Pixels along y."""
    pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC
    """Plate scale, arcsec per pixel."""
    pixel_size_um: float = PIXEL_SIZE_UM
    """Pixel pitch, µm."""

    def __post_init__(self) -> None:
        if self.band not in SLITLESS_CHIPS:
            raise ValueError(f"unknown slitless band {self.band!r}")
        if self.n_x < 1 or self.n_y < 1 or not self.pixel_scale_arcsec > 0:
            raise ValueError(f"invalid detector format {self.n_x}×{self.n_y}, "
                             f"{self.pixel_scale_arcsec}″/px")

    @property
    def name(self) -> str:
        """``"GU-03"`` style identifier."""
        return f"{self.band}-{self.chip:02d}"

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape in numpy order ``(n_y, n_x)``, as the polynomial fits take it."""
        return (self.n_y, self.n_x)

    @property
    def center_mm(self) -> tuple[float, float]:
        """Focal-plane position of the centre, mm."""
        k = self.pixel_size_um / 1000.0
        return (self.x_center * k, self.y_center * k)

    @property
    def footprint_arcsec(self) -> tuple[float, float]:
        """Size on the sky along x and y, arcsec (n × plate scale)."""
        return (self.n_x * self.pixel_scale_arcsec, self.n_y * self.pixel_scale_arcsec)

    def contains(self, x: ArrayLike, y: ArrayLike) -> NDArray[np.bool_]:
        """True for pixel coordinates that fall on the detector (edges −0.5 … n − 0.5)."""
        xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return (xa >= -0.5) & (xa < self.n_x - 0.5) & (ya >= -0.5) & (ya < self.n_y - 0.5)


def chip_center(chip: int) -> tuple[float, float]:
    """Focal-plane centre (X, Y), pixels, of mosaic chip ``chip`` (see module docstring)."""
    if not 1 <= chip <= N_COLUMNS * N_ROWS:
        raise ValueError(f"chip must be in 1..{N_COLUMNS * N_ROWS}, got {chip}")
    row = (chip - 1) % N_ROWS
    col = N_COLUMNS - 1 - (chip - 1) // N_ROWS
    x = (N_X + GAP_X) / 2.0 * (2 * col - (N_COLUMNS - 1))
    if col == N_COLUMNS - 1 or chip == 10:
        x += GAP_X_OUTER - GAP_X
    if col == 0 or chip == 21:
        x -= GAP_X_OUTER - GAP_X
    y = (N_Y + GAP_Y) * (row - N_ROWS // 2)
    return float(x), float(y)


@dataclass(frozen=True)
class FocalPlane:
    """The slitless detectors of the focal plane."""

    detectors: tuple[Detector, ...]
    """All detectors, by band then chip."""
    _by_name: dict[str, Detector] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {d.name: d for d in self.detectors})

    def band(self, band: str) -> tuple[Detector, ...]:
        """The detectors of one band."""
        if band not in SLITLESS_CHIPS:
            raise ValueError(f"unknown band {band!r}; expected one of {list(SLITLESS_CHIPS)}")
        return tuple(d for d in self.detectors if d.band == band)

    def __getitem__(self, name: str) -> Detector:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no detector {name!r}; have {sorted(self._by_name)}") from None

    def __len__(self) -> int:
        return len(self.detectors)


def slitless_focal_plane() -> FocalPlane:
    """The 12 slitless detectors (4 GU, 4 GV, 4 GI) at their adopted positions."""
    dets = [Detector(chip, band, *chip_center(chip))
            for band, chips in SLITLESS_CHIPS.items() for chip in chips]
    return FocalPlane(tuple(dets))


#: The adopted slitless focal plane.
SLITLESS_FOCAL_PLANE = slitless_focal_plane()


def detector_wcs(detector: Detector, ra0: float, dec0: float, pa_deg: float) -> WCS:
    """Gnomonic (TAN) WCS of one detector for a pointing.

    Parameters
    ----------
    detector : Detector
    ra0, dec0 : float
        Boresight (focal-plane origin) on the sky, degrees: the tangent point.
    pa_deg : float
        Position angle of the focal-plane +Y axis, degrees east of north.

    Returns
    -------
    astropy.wcs.WCS
        ``RA---TAN``/``DEC--TAN`` with a CD matrix; FITS 1-based CRPIX, so use ``origin=0``
        for 0-based pixels (as :func:`sky_to_pixel` does).
    """
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [float(ra0) % 360.0, float(dec0)]
    # boresight (X = Y = 0) in 0-based detector pixels, then FITS 1-based
    w.wcs.crpix = [(detector.n_x - 1) / 2.0 - detector.x_center + 1.0,
                   (detector.n_y - 1) / 2.0 - detector.y_center + 1.0]
    s = detector.pixel_scale_arcsec / 3600.0
    pa = np.radians(pa_deg)
    c, si = np.cos(pa), np.sin(pa)
    w.wcs.cd = [[-c * s, si * s], [si * s, c * s]]
    w.pixel_shape = (detector.n_x, detector.n_y)
    w.wcs.set()
    return w


def sky_to_pixel(detector: Detector, ra: ArrayLike, dec: ArrayLike, ra0: float, dec0: float,
                 pa_deg: float) -> tuple[Array, Array]:
    """Sky (degrees) → 0-based detector pixels ``(x, y)`` for a pointing; no bounds check."""
    w = detector_wcs(detector, ra0, dec0, pa_deg)
    x, y = w.wcs_world2pix(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float), 0)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def pixel_to_sky(detector: Detector, x: ArrayLike, y: ArrayLike, ra0: float, dec0: float,
                 pa_deg: float) -> tuple[Array, Array]:
    """0-based detector pixels → sky ``(ra, dec)`` in degrees (RA in [0, 360))."""
    w = detector_wcs(detector, ra0, dec0, pa_deg)
    ra, dec = w.wcs_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 0)
    return np.asarray(ra, dtype=float) % 360.0, np.asarray(dec, dtype=float)
