"""Train the input emulator on a vetted library and measure it on stars it never saw."""

from __future__ import annotations

from typing import Any

import numpy as np

from csstflux.containers import SpectralLibrary
from csstflux.grids import INPUT_GRID, TEFF_DOMAIN
from csstflux.library.emulator import InputEmulator, build_emulator
from csstflux.library.prepare import library_inputs, library_targets
from csstflux.library.vetting import vet

#: Wavelengths (Å) at which the held-out residual RMS is reported.
REPORT_WAVELENGTHS = (4000.0, 5000.0, 6000.0, 7000.0)


def emulator_from_library(lib: SpectralLibrary, *, seed: int = 0, n_components: int = 40,
                          do_vet: bool = True, rmsae_cut: float = 0.05,
                          teff_range: tuple[float, float] = TEFF_DOMAIN,
                          holdout_fraction: float = 0.2) -> tuple[InputEmulator, dict[str, Any]]:
    """Vet ``lib``, measure an emulator on a held-out split, then train on all kept stars.

    Returns the emulator trained on every kept star and a report: the vetting outcome, the
    held-out residual RMS (emulated − real normalised spectrum) against wavelength and at
    :data:`REPORT_WAVELENGTHS`, and the GP hyperparameters.
    """
    inputs, imask, notes = library_inputs(lib)
    report: dict[str, Any] = {"n_input": lib.n_star, "resolution_notes": notes}
    if do_vet:
        sed, smask, _ = library_targets(lib)
        res = vet(lib.teff, lib.logg, lib.feh, sed, smask, rmsae_cut=rmsae_cut,
                  teff_range=teff_range)
        keep = res.kept.copy()
        report["vetting_hyperparameters"] = res.hyper.to_dict()
    else:
        t = lib.teff
        keep = np.isfinite(t) & (t >= teff_range[0]) & (t <= teff_range[1])
        keep &= np.isfinite(lib.logg) & np.isfinite(lib.feh)
    keep &= ~imask.any(axis=1)
    idx = np.flatnonzero(keep)
    report["n_kept"] = int(idx.size)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(idx)
    n_hold = int(round(holdout_fraction * idx.size))
    hold, train = perm[:n_hold], perm[n_hold:]
    if n_hold:
        trial = build_emulator(lib.teff[train], lib.logg[train], lib.feh[train], inputs[train],
                               n_components=n_components, seed=seed)
        pred, ok, rel_std = trial(lib.teff[hold], lib.logg[hold], lib.feh[hold])
        resid = pred - inputs[hold]
        rms = np.sqrt(np.mean(resid**2, axis=0))
        rms_in = (np.sqrt(np.mean(resid[ok] ** 2, axis=0)) if ok.any()
                  else np.full(INPUT_GRID.n, np.nan))
        w = INPUT_GRID.wavelength
        at = [int(np.argmin(np.abs(w - lam))) for lam in REPORT_WAVELENGTHS]
        report["holdout"] = {
            "n_train": int(train.size), "n_test": int(n_hold), "n_test_in_domain": int(ok.sum()),
            "n_test_outside_hull": int((~trial.gp.in_hull(np.stack(
                [lib.teff[hold], lib.logg[hold], lib.feh[hold]], 1))).sum()),
            "rms_at": {f"{lam:g}": float(rms[i]) for lam, i in zip(REPORT_WAVELENGTHS, at,
                                                                  strict=True)},
            "rms_at_in_domain": {f"{lam:g}": float(rms_in[i]) for lam, i in
                                 zip(REPORT_WAVELENGTHS, at, strict=True)},
            "median_rms": float(np.median(rms)),
            "rms_by_wavelength": rms.astype(float).round(6).tolist(),
        }
    emu = build_emulator(lib.teff[idx], lib.logg[idx], lib.feh[idx], inputs[idx],
                         n_components=n_components, seed=seed,
                         provenance={"library": lib.source, "format": lib.format,
                                     "stars": lib.names[idx].tolist(), "vetted": do_vet})
    report["hyperparameters"] = emu.gp.hyper.to_dict()
    report["n_components"] = int(emu.components.shape[0])
    return emu, report
