"""A compact model-atmosphere SED grid shipped with the package (CK04 ATLAS9, R = 200).

:class:`SedGrid` gives the scaled R = 200 SED on :data:`~csstflux.grids.OUTPUT_GRID` of any
(Teff, log g, [M/H]) inside the Castelli & Kurucz (2004) grid, without the grid itself: the
SEDs of the grid's nodes (Teff 3500–13000 K, log g 0–5, [M/H] −2.5…+0.5; 2712 of the 3432
nodes exist) were made exactly as the training set makes its grid targets (CK04 read by
:mod:`csstflux.io.formats.ck04`, degraded to R = 200 and resampled onto the output grid by
:func:`csstflux.spectra.prepare_target`, scaled to mean 1 in ``SCALING_WINDOW``), and ln F of
each node is stored as a mean plus a few dozen principal components (see
:mod:`csstflux.library.build_sed_grid`, which also says how to rebuild the shipped file and
how large its reconstruction error is).

Interpolation: the principal-component coefficients are interpolated trilinearly between the
eight nodes around a point (Teff, log g and [M/H] each linear); since the basis is fixed this
is trilinear interpolation of the reconstructed ln F. A corner of zero weight (a point on a
node, edge or face) need not exist; a point with a needed corner missing (CK04 has no
low-gravity hot models) or outside the axes is reported ``inside = False`` and gets NaN,
never an extrapolation. The result is re-scaled to mean 1 in ``SCALING_WINDOW``.

This interpolates ln of the *degraded* SEDs, while
:class:`~csstflux.library.grid_interp.GridInterpolator` (what the training set uses)
interpolates ln F at CK04's own sampling and degrades afterwards. Between nodes the two agree
to 0.5 % (3000–10500 Å) above 4000 K; for 3000 random points over the whole grid the median of
the per-point maximum difference is 0.26 %, its 99th percentile 0.46 %, the largest 2.3 % (a
3630 K dwarf, where the order of averaging matters in the molecular bands).

Speed: 2712 points in 17 ms.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import GridMismatchError, ModelFileError
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
from csstflux.io.stores.arrays import file_sha256, load_arrays, save_arrays

__all__ = ["DEFAULT_SED_GRID", "SedGrid", "default_sed_grid_path", "load_sed_grid",
           "median_ratio_to_grid", "save_sed_grid"]

#: The shipped grid, in ``csstflux/data`` (built by :mod:`csstflux.library.build_sed_grid`).
DEFAULT_SED_GRID = "sed_grid_ck04.npz"
_KIND = "csstflux-sed-grid"
_AXES = ("teff", "logg", "feh")

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class SedGrid:
    """Scaled R = 200 SEDs on the output grid from (Teff, log g, [M/H]) by trilinear
    interpolation of principal-component coefficients of ln F between grid nodes."""

    teff: FloatArray
    """(n_teff,) node values, K, increasing."""
    logg: FloatArray
    """(n_logg,) node values, dex (cgs), increasing."""
    feh: FloatArray
    """(n_feh,) node values of [M/H], dex, increasing."""
    components: NDArray[np.floating[Any]]
    """(k, 574) basis of ln F on OUTPUT_GRID (float32 as stored)."""
    coefficients: NDArray[np.floating[Any]]
    """(n_teff, n_logg, n_feh, k) coefficients of each node; NaN rows for missing nodes."""
    mean_log_flux: NDArray[np.floating[Any]]
    """(574,) mean ln F; a node's ln F is ``mean_log_flux + coefficients @ components``."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Source, selection, n_components, reconstruction errors; ``sha256`` and ``path`` of
    the file when loaded."""

    def __post_init__(self) -> None:
        k = self.components.shape[0]
        shape = (self.teff.size, self.logg.size, self.feh.size, k)
        if self.components.shape != (k, OUTPUT_GRID.n) or self.mean_log_flux.shape != (
                OUTPUT_GRID.n,):
            raise GridMismatchError("SED grid basis is not on the output grid",
                                    expected=OUTPUT_GRID.describe(),
                                    found=f"{self.components.shape[-1]} pixels")
        if self.coefficients.shape != shape:
            raise ValueError(f"coefficients have shape {self.coefficients.shape}, "
                             f"expected {shape}")
        for a in (self.teff, self.logg, self.feh):
            if a.ndim != 1 or a.size < 2 or not np.all(np.diff(a) > 0):
                raise ValueError("SED grid axes must be increasing with at least 2 nodes")

    @property
    def n_components(self) -> int:
        """Number of principal components k."""
        return int(self.components.shape[0])

    @property
    def exists(self) -> NDArray[np.bool_]:
        """(n_teff, n_logg, n_feh) True where the node exists."""
        return np.asarray(np.isfinite(self.coefficients[..., 0]))

    def __call__(self, teff: ArrayLike, logg: ArrayLike, feh: ArrayLike
                 ) -> tuple[FloatArray, NDArray[np.bool_]]:
        """Interpolate SEDs.

        Parameters
        ----------
        teff, logg, feh : float or (n,) float
            K, dex, dex (broadcast together).

        Returns
        -------
        sed : (n, 574) float64
            Relative f_λ on OUTPUT_GRID, mean 1 in SCALING_WINDOW; NaN rows where not inside.
        inside : (n,) bool
            The point lies inside the axes and every corner it needs exists.
        """
        pts = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.float64))
                                    for v in (teff, logg, feh)))
        m = pts[0].size
        lo, frac = [], []
        inside = np.ones(m, bool)
        for axis, v in zip((self.teff, self.logg, self.feh), pts, strict=True):
            v = v.ravel()
            i = np.clip(np.searchsorted(axis, v, side="right") - 1, 0, axis.size - 2)
            inside &= np.isfinite(v) & (v >= axis[0]) & (v <= axis[-1])
            lo.append(i)
            frac.append(np.clip((v - axis[i]) / (axis[i + 1] - axis[i]), 0.0, 1.0))
        coef = np.zeros((m, self.n_components))
        for corner in range(8):
            bits = [(corner >> a) & 1 for a in range(3)]
            w = np.ones(m)
            for a in range(3):
                w *= frac[a] if bits[a] else 1.0 - frac[a]
            c = self.coefficients[lo[0] + bits[0], lo[1] + bits[1], lo[2] + bits[2]]
            needed = w > 0
            inside &= ~needed | np.isfinite(c[:, 0])
            coef += w[:, None] * np.where(needed[:, None], c, 0.0)
        log_flux = self.mean_log_flux.astype(np.float64) + coef @ self.components.astype(
            np.float64)
        sed = np.exp(log_flux)
        sed /= sed[:, OUTPUT_GRID.window(*SCALING_WINDOW)].mean(axis=1, keepdims=True)
        sed[~inside] = np.nan
        return sed, inside

    def nearest_inside(self, teff: ArrayLike, logg: ArrayLike, feh: ArrayLike) -> FloatArray:
        """Parameters (n, 3) at which the grid can be evaluated, close to those given.

        A point inside is returned as it is; one outside the axes is first clipped onto them;
        if that is still not inside, the nearest existing node is taken, distance measured in
        node steps of each axis (fractional node index).
        """
        pts = np.stack(np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.float64)).ravel()
                                             for v in (teff, logg, feh))), axis=1)
        axes = (self.teff, self.logg, self.feh)
        out = np.stack([np.clip(pts[:, a], axes[a][0], axes[a][-1]) for a in range(3)], 1)
        _, ok = self(out[:, 0], out[:, 1], out[:, 2])
        if ok.all():
            return out
        nodes = np.argwhere(self.exists)  # (n_node, 3) integer indices
        bad = np.flatnonzero(~ok)
        idx = np.stack([np.interp(out[bad, a], axes[a], np.arange(axes[a].size))
                        for a in range(3)], axis=1)
        near = np.argmin(((idx[:, None, :] - nodes[None, :, :]) ** 2).sum(axis=2), axis=1)
        out[bad] = np.stack([axes[a][nodes[near, a]] for a in range(3)], axis=1)
        return out

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """Arrays to store (float32 basis and coefficients)."""
        return {"teff": np.asarray(self.teff, np.float64),
                "logg": np.asarray(self.logg, np.float64),
                "feh": np.asarray(self.feh, np.float64),
                "components": np.asarray(self.components, np.float32),
                "coefficients": np.asarray(self.coefficients, np.float32),
                "mean_log_flux": np.asarray(self.mean_log_flux, np.float32)}

    @classmethod
    def from_arrays(cls, a: dict[str, NDArray[Any]],
                    provenance: dict[str, Any] | None = None) -> SedGrid:
        return cls(teff=np.asarray(a["teff"], np.float64),
                   logg=np.asarray(a["logg"], np.float64),
                   feh=np.asarray(a["feh"], np.float64),
                   components=np.asarray(a["components"]),
                   coefficients=np.asarray(a["coefficients"]),
                   mean_log_flux=np.asarray(a["mean_log_flux"]),
                   provenance=dict(provenance or {}))


def median_ratio_to_grid(sed: FloatArray, mask: NDArray[np.bool_], teff: ArrayLike,
                         logg: ArrayLike, feh: ArrayLike, grid: SedGrid | None = None
                         ) -> tuple[FloatArray | None, int]:
    """Median over stars of (SED / CK04 SED at the star's parameters) − 1 per output pixel,
    and the number of stars inside the grid: how a library differs from the model atmospheres
    the network was pre-trained on (``csstflux verify-library`` and ``evaluate`` report it).
    Both SEDs scaled alike (mean 1 in ``SCALING_WINDOW``); masked pixels and stars outside
    the grid are left out; None where no star lies inside."""
    model, inside = (grid or load_sed_grid())(teff, logg, feh)
    if not inside.any():
        return None, 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(mask[inside], np.nan, sed[inside] / model[inside] - 1.0)
    has = np.isfinite(r).any(axis=0)
    med = np.full(r.shape[1], np.nan)
    med[has] = np.nanmedian(r[:, has], axis=0)
    return med, int(inside.sum())


def default_sed_grid_path() -> Path:
    """Path of the shipped SED grid."""
    return Path(str(resources.files("csstflux") / "data" / DEFAULT_SED_GRID))


def save_sed_grid(grid: SedGrid, path: str | os.PathLike[str]) -> Path:
    """Write ``grid`` (float32 arrays, output grid and provenance in the metadata)."""
    return save_arrays(path, grid.to_arrays(), {"kind": _KIND,
                                                "output_grid": OUTPUT_GRID.to_attrs(),
                                                "scaling_window": list(SCALING_WINDOW),
                                                "provenance": grid.provenance})


def load_sed_grid(path: str | os.PathLike[str] | None = None) -> SedGrid:
    """Load a grid written by :func:`save_sed_grid` (the shipped one when None).

    Loaded once per file (path, size and modification time) and process; the provenance
    gains the file's ``sha256`` and ``path``.

    Raises
    ------
    ModelFileError
        The shipped file is missing, or the file is not a SED grid.
    GridMismatchError
        The grid was built for another output grid or scaling window.
    """
    p = default_sed_grid_path() if path is None else Path(path)
    if not p.is_file():
        raise ModelFileError("no SED grid file; build one with `python -m "
                             "csstflux.library.build_sed_grid CK04_DIR OUT`", path=p)
    st = p.stat()
    return _load(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> SedGrid:
    arrays, meta = load_arrays(path)
    if meta.get("kind") != _KIND:
        raise ModelFileError("not a csstflux SED grid", path=path, expected=_KIND,
                             found=meta.get("kind"))
    if (not OUTPUT_GRID.matches_attrs(meta.get("output_grid", {}))
            or tuple(meta.get("scaling_window", ())) != tuple(SCALING_WINDOW)):
        raise GridMismatchError("SED grid was built for another output grid or scaling window",
                                path=path, expected=OUTPUT_GRID.describe(),
                                found=meta.get("output_grid"))
    prov = dict(meta.get("provenance", {}))
    prov.update(sha256=file_sha256(path), path=path)
    for a in arrays.values():  # shared by every caller of the cache
        a.setflags(write=False)
    return SedGrid.from_arrays(arrays, provenance=prov)
