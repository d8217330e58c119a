"""Build the shipped :class:`~csstflux.library.sed_grid.SedGrid` from the CK04 ATLAS9 grid.

Rebuild the shipped file (from the repository root, about a minute of CPU)::

    python -m csstflux.library.build_sed_grid ../shared/data/ck04models \\
        csstflux/data/sed_grid_ck04.npz

Recipe.

1. Nodes: CK04 models with Teff 3500–13000 K, log g 0–5 and every [M/H] (−2.5…+0.5), read by
   :mod:`csstflux.io.formats.ck04` (2712 of the 39 × 11 × 8 = 3432 nodes exist).
2. Their SEDs exactly as the training set makes its grid targets
   (:func:`csstflux.library.trainset.build_grid_set`): the
   :class:`~csstflux.library.grid_interp.GridInterpolator` evaluated at each node (which
   returns the node's own model) and :func:`csstflux.spectra.prepare_target` with no source
   resolution (a model): R = 200, resampled onto OUTPUT_GRID, mean 1 in SCALING_WINDOW.
3. ln F of the nodes is fitted by a mean plus k principal components. A plain PCA minimises the
   summed squared error and leaves the largest errors on a few extreme nodes (cool giants with
   deep molecular bands); the nodes are therefore re-weighted over :data:`IRLS_PASSES` passes
   (weight × max error / median max error, the basis of the pass with the smallest maximum
   kept), which halves the maximum error at a given k. Coefficients are the projections of
   each node on the basis.
4. k is the smallest number of components whose float32-stored reconstruction of every node
   (the relative error of the re-scaled SED) stays below :data:`MAX_ERROR` (0.5 %) within
   :data:`ERROR_WINDOW` (3000–10500 Å); bisection between :data:`K_RANGE`.

Result (recorded in the file's provenance): k = 76 components, maximum reconstruction error
0.479 % in 3000–10500 Å and 1.26 % over the whole grid (2500–3000 Å of 3500 K models, whose
flux there is 10⁻⁶–10⁻³ of the 5556 Å one), a 0.95 MB file; 40 s of CPU to build. (A plain
PCA needs over 100 components for the same maximum error.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux._version import __version__
from csstflux.containers import SpectralLibrary
from csstflux.grids import OUTPUT_GRID, SCALING_WINDOW
from csstflux.io import read
from csstflux.library.grid_interp import GridInterpolator
from csstflux.library.sed_grid import SedGrid, save_sed_grid
from csstflux.library.trainset import tree_hash
from csstflux.spectra.prepare import prepare_target

#: Node selection (inclusive): Teff (K), log g (dex); every [M/H].
TEFF_RANGE, LOGG_RANGE = (3500.0, 13000.0), (0.0, 5.0)
#: Largest allowed |relative reconstruction error| of a node SED within ERROR_WINDOW (Å).
MAX_ERROR, ERROR_WINDOW = 0.005, (3000.0, 10500.0)
#: Range of the number of components searched.
K_RANGE = (20, 160)
#: Passes of node re-weighting towards the smallest maximum error.
IRLS_PASSES = 20

FloatArray = NDArray[np.float64]


def node_seds(lib: SpectralLibrary) -> FloatArray:
    """Scaled R = 200 SEDs (n_model, 574) of a CK04 library's models, made as grid targets."""
    interp = GridInterpolator.from_library(lib)
    flux, mask, ok = interp(lib.teff, lib.logg, lib.feh)
    if not ok.all():
        raise ValueError("a CK04 node could not be evaluated at its own parameters")
    sed, _, smask, _ = prepare_target(interp.wavelength, flux, None, mask, None)
    if smask.any() or not np.all(np.isfinite(sed) & (sed > 0)):
        raise ValueError("CK04 node SEDs have masked or non-positive pixels on the output grid")
    return np.asarray(sed, np.float64)


def _errors(log_sed: FloatArray, mean: FloatArray, basis: FloatArray, coef: FloatArray
            ) -> FloatArray:
    """(n_node, 574) |relative error| of the re-scaled reconstruction, float32 as stored."""
    m32, b32, c32 = (np.asarray(a, np.float32).astype(np.float64) for a in (mean, basis, coef))
    rec = np.exp(m32 + c32 @ b32)
    rec /= rec[:, OUTPUT_GRID.window(*SCALING_WINDOW)].mean(axis=1, keepdims=True)
    return np.asarray(np.abs(rec / np.exp(log_sed) - 1.0))


def fit_basis(log_sed: FloatArray, k: int, passes: int = IRLS_PASSES
              ) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Node-reweighted PCA of ln F (n_node, 574): (mean, basis (k, 574), coefficients
    (n_node, k), max error within ERROR_WINDOW) of the pass with the smallest maximum error."""
    win = OUTPUT_GRID.window(*ERROR_WINDOW)
    weight = np.ones(len(log_sed))
    best: tuple[FloatArray, FloatArray, FloatArray, float] | None = None
    for _ in range(passes + 1):
        mean = weight @ log_sed / weight.sum()
        x = log_sed - mean
        if len(x) < x.shape[1]:   # few nodes: the SVD of the weighted rows is cheaper
            basis = np.linalg.svd(x * np.sqrt(weight)[:, None], full_matrices=False)[2][:k]
        else:
            basis = np.linalg.eigh((x * weight[:, None]).T @ x)[1][:, ::-1][:, :k].T
        coef = x @ basis.T
        err = _errors(log_sed, mean, basis, coef)[:, win].max(axis=1)
        if best is None or err.max() < best[3]:
            best = (mean, basis, coef, float(err.max()))
        weight *= err / np.median(err)
        weight /= weight.mean()
    assert best is not None
    return best


def sed_grid_from_library(lib: SpectralLibrary, max_error: float = MAX_ERROR,
                          k_range: tuple[int, int] = K_RANGE, passes: int = IRLS_PASSES
                          ) -> SedGrid:
    """The :class:`SedGrid` of a CK04 library (see the module docstring): the fewest
    components in ``k_range`` whose maximum error in ERROR_WINDOW is below ``max_error``."""
    sed = node_seds(lib)
    log_sed = np.log(sed)
    lo, hi = k_range
    fits: dict[int, tuple[FloatArray, FloatArray, FloatArray, float]] = {}
    fits[hi] = fit_basis(log_sed, hi, passes)
    if fits[hi][3] >= max_error:
        raise ValueError(f"{hi} components still leave {fits[hi][3]:.4f} > {max_error}")
    while hi - lo > 1:   # invariant: hi passes, lo fails (or is the lower bound)
        mid = (lo + hi) // 2
        fits[mid] = fit_basis(log_sed, mid, passes)
        lo, hi = (lo, mid) if fits[mid][3] < max_error else (mid, hi)
    mean, basis, coef, err_win = fits[hi]
    err_all = float(_errors(log_sed, mean, basis, coef).max())
    axes = [np.unique(v) for v in (lib.teff, lib.logg, lib.feh)]
    cube = np.full((*(a.size for a in axes), hi), np.nan)
    pos = [np.searchsorted(a, v) for a, v in zip(axes, (lib.teff, lib.logg, lib.feh),
                                                 strict=True)]
    cube[pos[0], pos[1], pos[2]] = coef
    prov: dict[str, Any] = {
        "source": "Castelli & Kurucz 2004 ATLAS9 (STScI CDBS ck04models)",
        "source_path": lib.source, "source_sha256": tree_hash(lib.source),
        "selection": {"teff": list(TEFF_RANGE), "logg": list(LOGG_RANGE), "feh": "all"},
        "n_nodes": int(lib.n_star), "n_nodes_possible": int(np.prod(cube.shape[:3])),
        "targets": "GridInterpolator at the nodes + prepare_target (as build_grid_set)",
        "method": f"ln F, mean + k components, nodes re-weighted over {passes} passes",
        "n_components": int(hi), "error_window": list(ERROR_WINDOW),
        "max_error_limit": max_error, "max_reconstruction_error": err_win,
        "max_reconstruction_error_all": err_all,
        "csstflux_version": __version__,
    }
    return SedGrid(teff=axes[0], logg=axes[1], feh=axes[2], components=basis.astype(np.float32),
                   coefficients=cube.astype(np.float32), mean_log_flux=mean.astype(np.float32),
                   provenance=prov)


def read_nodes(ck04_dir: str | os.PathLike[str]) -> SpectralLibrary:
    """The CK04 models of the selection (TEFF_RANGE, LOGG_RANGE, every [M/H])."""
    lib = read(ck04_dir, format="ck04", teff_range=TEFF_RANGE, logg_range=LOGG_RANGE)
    assert isinstance(lib, SpectralLibrary)
    return lib


def build_sed_grid(ck04_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> SedGrid:
    """Read CK04 from ``ck04_dir``, build the grid and write it to ``out`` (``.npz``)."""
    grid = sed_grid_from_library(read_nodes(ck04_dir))
    save_sed_grid(grid, out)
    return grid


if __name__ == "__main__":  # pragma: no cover - regeneration of the shipped file
    if len(sys.argv) != 3:
        sys.exit("usage: python -m csstflux.library.build_sed_grid CK04_DIR OUT.npz")
    g = build_sed_grid(sys.argv[1], sys.argv[2])
    p = g.provenance
    sys.stdout.write(f"{Path(sys.argv[2])}: k = {p['n_components']}, max error "
                     f"{p['max_reconstruction_error']:.4%} in {p['error_window']} Å, "
                     f"{p['max_reconstruction_error_all']:.4%} overall\n")
