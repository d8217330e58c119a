"""Synthetic stars shared by the tests: an exact Cannon-style truth for the domain model, and
small generic-FITS libraries of blackbody-like stars with absorption lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from csstflux.grids import INPUT_GRID
from csstflux.library.domain import N_TERMS


def domain_truth(rng: np.random.Generator, n_lines: int = 30, depth: float = 0.02
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth per-pixel coefficients (line depths varying with the labels) and a colour law."""
    w = INPUT_GRID.wavelength
    coeffs = np.zeros((N_TERMS, w.size))
    coeffs[0] = 1.0
    for k in range(1, N_TERMS):
        centres = rng.uniform(w[0], w[-1], n_lines)
        amp = rng.normal(0, depth / k ** 0.5, n_lines)
        coeffs[k] = (amp[:, None] * np.exp(-0.5 * ((w - centres[:, None]) / 2.0) ** 2)).sum(0)
    color = np.zeros(N_TERMS)
    color[:4] = [0.5, 0.3, 0.0, 0.02]
    return coeffs, color


def planck(lam_a: np.ndarray, teff: float) -> np.ndarray:
    """Planck f_λ shape at ``lam_a`` (Å)."""
    lam = lam_a * 1e-10
    return lam ** -5 / np.expm1(1.4388e-2 / (lam * teff))


def write_generic_library(folder: Path, stars: dict[str, float | None], *,
                          header_teff: bool = False, seed: int = 8) -> Path:
    """One generic FITS file per star, 3500–7500 Å at 1 Å, FWHM 2.5 Å, vacuum: a Planck shape
    at the star's Teff (7000 K where None) times 12 random absorption lines. With
    ``header_teff`` the stars with a Teff carry TEFF/LOGG/FEH keywords."""
    lam = 3500.0 + 1.0 * np.arange(4001)
    rng = np.random.default_rng(seed)
    for name, teff in stars.items():
        flux = planck(lam, teff or 7000.0)
        for centre in rng.uniform(3600, 7400, 12):
            flux *= 1 - rng.uniform(0.05, 0.4) * np.exp(-0.5 * ((lam - centre) / 3.0) ** 2)
        hdu = fits.PrimaryHDU((flux / flux.mean()).astype(np.float32))
        hdu.header.update({"CRVAL1": 3500.0, "CDELT1": 1.0, "CRPIX1": 1.0, "FWHM": 2.5,
                           "AIRORVAC": "vac"})
        if header_teff and teff is not None:
            hdu.header.update({"TEFF": teff, "LOGG": 4.0, "FEH": 0.0})
        hdu.writeto(folder / f"{name}.fits")
    return folder
