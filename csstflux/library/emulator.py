"""The R=2000 input emulator (paper, Appendix C).

A GP, trained on vetted library stars (MILES), maps (Teff, log g, [Fe/H]) to a normalised
R=2000 spectrum on the model input grid (4000–7000 Å). It stands in for real inputs wherever a
library or grid has no R=2000 spectrum of its own (the CK04 stand-in for BOSZ, Pickles for NGSL)
and makes the embedded demo release.

Compact form: the normalised spectra are projected onto their leading principal components and
the GP (one shared kernel, so a GP on the coefficients equals the GP on the spectra projected
onto the same basis) keeps only its weights in that basis. The stored product is the
components, the mean spectrum, the GP weights and the training parameters: a few hundred kB
of float32, with no library spectrum in it.

Parameters are flagged outside the domain when they lie outside the convex hull of the training
stars in z-scored parameter space, or when the GP's predictive standard deviation exceeds
``std_limit`` times the signal standard deviation σ_f.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.grids import INPUT_GRID
from csstflux.io.stores.arrays import load_input_product, save_input_product
from csstflux.library.gpr import GaussianProcess, fit_gp

Array = NDArray[np.float64]


@dataclass(frozen=True)
class InputEmulator:
    """Normalised R=2000 spectra on :data:`~csstflux.grids.INPUT_GRID` from parameters."""

    gp: GaussianProcess
    """GP from z-scored parameters to principal-component coefficients."""
    components: NDArray[np.floating[Any]]
    """(k, 2238) orthonormal principal components."""
    mean_spectrum: NDArray[np.floating[Any]]
    """(2238,) mean normalised spectrum of the training stars."""
    std_limit: float = 0.5
    """Predictive σ / σ_f above which a prediction is flagged."""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.components.shape[1] != INPUT_GRID.n or self.mean_spectrum.shape != (INPUT_GRID.n,):
            raise ValueError("emulator is not on the model input grid")

    def __call__(self, teff: Array, logg: Array, feh: Array
                 ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
        """Emulate spectra.

        Returns ``flux_norm`` (m, 2238), ``ok`` (m,) (False outside the domain) and the relative
        predictive standard deviation σ/σ_f (m,).
        """
        x = np.stack([np.atleast_1d(teff), np.atleast_1d(logg), np.atleast_1d(feh)],
                     axis=1).astype(np.float64)
        coef, std = self.gp.predict(x)
        flux = self.mean_spectrum + coef @ self.components
        rel_std = std / self.gp.hyper.sigma_f
        ok = self.gp.in_hull(x) & (rel_std <= self.std_limit) & np.all(np.isfinite(x), axis=1)
        return flux.astype(np.float64), ok, rel_std

    def to_arrays(self) -> dict[str, Any]:
        out = {f"gp_{k}": v for k, v in self.gp.to_arrays().items()}
        out["gp_weights"] = out["gp_weights"].astype(np.float32)
        out.update(components=np.asarray(self.components, np.float32),
                   mean_spectrum=np.asarray(self.mean_spectrum, np.float32),
                   std_limit=np.array(self.std_limit))
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, Any], provenance: dict[str, Any] | None = None
                    ) -> InputEmulator:
        gp = GaussianProcess.from_arrays({k[3:]: v for k, v in a.items() if k.startswith("gp_")})
        return cls(gp=gp, components=np.asarray(a["components"], np.float64),
                   mean_spectrum=np.asarray(a["mean_spectrum"], np.float64),
                   std_limit=float(a["std_limit"]), provenance=dict(provenance or {}))


def build_emulator(teff: Array, logg: Array, feh: Array, flux_norm: Array, *,
                   n_components: int = 40, std_limit: float = 0.5, seed: int = 0,
                   provenance: dict[str, Any] | None = None) -> InputEmulator:
    """Train the emulator on normalised spectra ``flux_norm`` (n, 2238) with no masked pixel.

    ``n_components`` principal components are kept (fewer if there are fewer stars).
    """
    flux_norm = np.asarray(flux_norm, dtype=np.float64)
    INPUT_GRID.check(INPUT_GRID.wavelength if flux_norm.shape[1] == INPUT_GRID.n
                     else np.arange(flux_norm.shape[1], dtype=np.float64),
                     what="emulator training spectra")
    if not np.all(np.isfinite(flux_norm)):
        raise ValueError("emulator training spectra must be finite (drop masked stars first)")
    mean = flux_norm.mean(axis=0)
    _, _, vt = np.linalg.svd(flux_norm - mean, full_matrices=False)
    k = min(n_components, vt.shape[0])
    comps = vt[:k]
    coef = (flux_norm - mean) @ comps.T
    x = np.stack([teff, logg, feh], axis=1).astype(np.float64)
    gp = fit_gp(x, coef, seed=seed, restarts=2)
    prov = dict(provenance or {})
    prov.update(n_train=int(len(x)), n_components=int(k),
                hyperparameters=gp.hyper.to_dict())
    return InputEmulator(gp=gp, components=comps, mean_spectrum=mean, std_limit=std_limit,
                         provenance=prov)


#: The compact emulator shipped inside the package (built by ``csstflux build-emulator``).
DEFAULT_EMULATOR = "emulator_miles.npz"
_KIND = "csstflux-input-emulator"


def default_emulator_path() -> Path:
    """Path of the shipped compact emulator."""
    return Path(str(resources.files("csstflux") / "data" / DEFAULT_EMULATOR))


def save_emulator(emu: InputEmulator, path: str | os.PathLike[str]) -> Path:
    """Write the compact emulator (float32 arrays + provenance) to ``path`` (``.npz``)."""
    return save_input_product(path, emu.to_arrays(), _KIND, emu.provenance)


def load_emulator(path: str | os.PathLike[str] | None = None) -> InputEmulator:
    """Load an emulator written by :func:`save_emulator` (the shipped one when None)."""
    arrays, _, prov = load_input_product(path, default_emulator_path(), _KIND,
                                         "input emulator", "csstflux build-emulator")
    return InputEmulator.from_arrays(arrays, provenance=prov)
