"""Writers of the 3D flat-field cubes (λ, y, x) per detector: FITS and Zarr.

FITS (``PREFIX.fits``, and ``PREFIX_sigma.fits`` with the 1σ errors in the same layout): an
empty primary HDU carrying the provenance, then one ``ImageHDU`` per detector, ``EXTNAME`` the
detector name, data ``(n_band, n_gy, n_gx)`` float32. The WCS of each HDU:

- axes 1 and 2 (``DETX``/``DETY``): 0-based detector pixels of the coarse grid, linear,
  ``CRVAL = grid[0]``, ``CDELT = grid step``;
- axis 3 (``WAVE-LOG``, FITS WCS paper III log-linear spectral axis): the band's pixels of
  :data:`csstflux.grids.OUTPUT_GRID`, ``λ = CRVAL3 · exp(CDELT3 · (p − CRPIX3) / CRVAL3)`` with
  ``CRVAL3`` the first band pixel and ``CDELT3 = CRVAL3 · Δlnλ``, vacuum Å
  (``astropy.wcs.WCS(header).spectral`` reproduces the grid).

Provenance keywords (primary and every image HDU): ``CSSTFVER`` package version, ``MODELID``
model of the predictions store, ``STORE`` its path, ``NEXPOSUR`` exposures used (FITS keywords
have at most 8 characters), ``NSTARS`` matched sources used, ``ORDER`` polynomial order,
``STARSCAL`` the star-scale mode.

Zarr (``PREFIX.zarr``): one subgroup per detector with ``flat`` and ``sigma``
(dims ``wavelength, y, x``), ``wavelength``, ``grid_x``, ``grid_y``, ``reduced_chi2`` and
``n_stars`` per wavelength, and the provenance in the root attributes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from astropy.io import fits
from numpy.typing import NDArray

from csstflux.errors import InputFormatError
from csstflux.grids import OUTPUT_GRID, all_grids_attrs
from csstflux.io.atomic import atomic_dir, atomic_write

Array = NDArray[np.float64]
_FITS_KEYS = {"csstflux_version": "CSSTFVER", "model_id": "MODELID", "store": "STORE",
              "n_exposures": "NEXPOSUR", "n_stars": "NSTARS", "order": "ORDER",
              "star_scale": "STARSCAL"}


def _grid_step(g: Array) -> float:
    return float(g[1] - g[0]) if g.size > 1 else 1.0


def cube_header(wavelength: Array, grid_x: Array, grid_y: Array) -> fits.Header:
    """WCS cards of one detector's cube (module docstring)."""
    h = fits.Header()
    for i, (name, g) in enumerate((("DETX", grid_x), ("DETY", grid_y)), start=1):
        h[f"CTYPE{i}"] = (name, "0-based detector pixel")
        h[f"CRPIX{i}"] = 1.0
        h[f"CRVAL{i}"] = float(g[0])
        h[f"CDELT{i}"] = _grid_step(np.asarray(g, float))
        h[f"CUNIT{i}"] = "pixel"
    lam0 = float(wavelength[0])
    h["CTYPE3"] = ("WAVE-LOG", "log-linear vacuum wavelength")
    h["CRPIX3"] = 1.0
    h["CRVAL3"] = lam0
    h["CDELT3"] = (lam0 * OUTPUT_GRID.dlnlambda, "CRVAL3 * dln(lambda)")
    h["CUNIT3"] = "Angstrom"
    h["SPECSYS"] = "TOPOCENT"
    h["DLNLAM"] = (OUTPUT_GRID.dlnlambda, "step in ln(lambda) of the output grid")
    return h


def _provenance_cards(prov: dict[str, Any]) -> list[tuple[str, Any]]:
    cards = []
    for k, key in _FITS_KEYS.items():
        v = prov.get(k)
        if v is not None:
            cards.append((key, v if isinstance(v, int | float) else str(v)[:68]))
    return cards


def write_flat_fits(path: str | os.PathLike[str], cubes: dict[str, Array],
                    wavelengths: dict[str, Array], grid_x: Array, grid_y: Array,
                    provenance: dict[str, Any]) -> Path:
    """One ImageHDU per detector (``cubes``: name → (n_band, n_gy, n_gx)), written atomically
    (:func:`csstflux.io.atomic.atomic_write`)."""
    p = Path(path)
    primary = fits.PrimaryHDU()
    for key, v in _provenance_cards(provenance):
        primary.header[key] = v
    hdus: list[Any] = [primary]
    for name, cube in cubes.items():
        hdu = fits.ImageHDU(np.asarray(cube, dtype=np.float32), name=name)
        hdu.header.update(cube_header(np.asarray(wavelengths[name]), np.asarray(grid_x),
                                      np.asarray(grid_y)))
        hdu.header["DETECTOR"] = name
        for key, v in _provenance_cards(provenance):
            hdu.header[key] = v
        hdus.append(hdu)
    with atomic_write(p) as fh:
        fits.HDUList(hdus).writeto(fh, checksum=True)
    return p


def write_flat_zarr(path: str | os.PathLike[str], flats: dict[str, Array],
                    sigmas: dict[str, Array], wavelengths: dict[str, Array],
                    grid_x: Array, grid_y: Array,
                    extra: Mapping[str, Mapping[str, NDArray[Any]]],
                    provenance: dict[str, Any]) -> Path:
    """Per detector subgroup with flat/sigma (wavelength, y, x) and ``extra`` 1D arrays.

    Built beside ``path`` and put in its place when complete
    (:func:`csstflux.io.atomic.atomic_dir`): an existing cube is replaced only then."""
    p = Path(path)
    dims = ("wavelength", "y", "x")
    with atomic_dir(p) as tmp:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in flats:
            sub = g.create_group(name)
            sub.create_array("flat", data=np.asarray(flats[name], np.float32),
                             dimension_names=dims)
            sub.create_array("sigma", data=np.asarray(sigmas[name], np.float32),
                             dimension_names=dims)
            sub.create_array("wavelength", data=np.asarray(wavelengths[name], float),
                             dimension_names=("wavelength",)).attrs.update(units="Angstrom")
            sub.create_array("grid_x", data=np.asarray(grid_x, float), dimension_names=("x",))
            sub.create_array("grid_y", data=np.asarray(grid_y, float), dimension_names=("y",))
            for k, v in extra.get(name, {}).items():
                sub.create_array(k, data=np.asarray(v), dimension_names=("wavelength",))
        g.attrs.update({**provenance, **all_grids_attrs(), "format": "csstflux-flat-cube",
                        "detectors": list(flats)})
    return p


def read_flat_zarr(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Array]],
                                                           dict[str, Any]]:
    """Read :func:`write_flat_zarr`'s store: ``{detector: {array name: values}}``, attributes."""
    p = Path(path)
    try:
        g = zarr.open_group(str(p), mode="r", zarr_format=3)
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a non-store
        raise InputFormatError(f"not a Zarr v3 group ({exc})", path=p) from exc
    attrs = dict(g.attrs)
    if attrs.get("format") != "csstflux-flat-cube":
        raise InputFormatError("not a csstflux flat cube", path=p,
                               expected="csstflux-flat-cube", found=attrs.get("format"))
    out: dict[str, dict[str, Array]] = {}
    for name in attrs["detectors"]:  # type: ignore[union-attr]
        sub: Any = g[str(name)]
        out[str(name)] = {k: np.asarray(v[...]) for k, v in sub.arrays()}
    return out, attrs
