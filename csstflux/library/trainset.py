"""Build the training store from a :class:`~csstflux.library.sets.TrainsetConfig`.

Every set yields clean (input, target) pairs with masks and parameters; rows are split by star
(seeded, recorded) into train / test / validation; noise is not stored (training draws eq. 1
afresh). Provenance records for every set its kind, path, a hash of its files, what stood in for
what, the vetting outcome and every rejected star with its reason.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux._version import __version__
from csstflux.config import to_dict
from csstflux.containers import SpectralLibrary
from csstflux.grids import INPUT_GRID, OUTPUT_GRID, all_grids_attrs
from csstflux.io import read
from csstflux.io.stores.trainset import SPLITS, TrainingArrays, write_trainstore
from csstflux.library.emulator import InputEmulator, load_emulator
from csstflux.library.grid_interp import GridInterpolator
from csstflux.library.prepare import library_inputs, library_targets
from csstflux.library.sedfit import FIT_WINDOW, fit_teff
from csstflux.library.sets import STAND_INS, SetConfig, TrainsetConfig
from csstflux.library.vetting import vet
from csstflux.logs import fmt_path
from csstflux.spectra.prepare import prepare_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetResult:
    """Pairs from one set plus its provenance."""

    arrays: TrainingArrays
    provenance: dict[str, Any]
    rejected: list[tuple[str, str]]
    """(star, reason) of every star left out."""


def tree_hash(path: str | os.PathLike[str]) -> str:
    """sha256 over the relative names and bytes of every file under ``path`` (or the file)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def split_labels(n: int, ratio: tuple[int, int], validation_fraction: float,
                 rng: np.random.Generator) -> NDArray[np.int8]:
    """Split codes (0 train, 1 test, 2 validation) for ``n`` stars by a seeded permutation."""
    order = rng.permutation(n)
    n_test = int(round(n * ratio[1] / sum(ratio)))
    labels = np.zeros(n, np.int8)
    labels[order[:n_test]] = SPLITS["test"]
    train = order[n_test:]
    n_val = int(round(len(train) * validation_fraction))
    labels[train[:n_val]] = SPLITS["validation"]
    return labels


def _pairs(cfg: SetConfig, inputs: NDArray[np.float64], input_mask: NDArray[np.bool_],
           targets: NDArray[np.float64], target_mask: NDArray[np.bool_],
           teff: NDArray[np.float64], logg: NDArray[np.float64], feh: NDArray[np.float64],
           names: NDArray[np.str_], rng: np.random.Generator) -> TrainingArrays:
    n = len(teff)
    return TrainingArrays(
        inputs=inputs.astype(np.float32), input_mask=input_mask,
        targets=targets.astype(np.float32), target_mask=target_mask,
        teff=teff, logg=logg, feh=feh,
        split=split_labels(n, cfg.ratio, cfg.validation_fraction, rng),
        subset=np.full(n, cfg.subset), name=np.asarray(names, dtype=str))


def _usable(inputs_mask: NDArray[np.bool_], targets_mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Rows with a complete input and a target covering the scaling window region."""
    return np.asarray((~inputs_mask.any(axis=1)) & (~targets_mask).any(axis=1), dtype=bool)


def build_grid_set(cfg: SetConfig, emulator: InputEmulator, rng: np.random.Generator
                   ) -> SetResult:
    """Parameters drawn over the grid; targets interpolated; inputs emulated."""
    x = emulator.gp.x_train * emulator.gp.x_scale + emulator.gp.x_mean
    logg_range = cfg.logg_range or (float(x[:, 1].min()), float(x[:, 1].max()))
    feh_range = cfg.feh_range or (float(x[:, 2].min()), float(x[:, 2].max()))
    lib = read(cfg.path, format="ck04",
               teff_range=(cfg.teff_range[0] - 500, cfg.teff_range[1] + 500),
               logg_range=(logg_range[0] - 0.5, logg_range[1] + 0.5),
               feh_range=(feh_range[0] - 0.5, feh_range[1] + 0.5))
    assert isinstance(lib, SpectralLibrary)
    interp = GridInterpolator.from_library(lib)
    kept: list[tuple[NDArray[Any], ...]] = []
    n_have, n_drawn, n_emu_out, n_grid_out = 0, 0, 0, 0
    while n_have < cfg.n_samples and n_drawn < 50 * cfg.n_samples:
        m = min(4 * (cfg.n_samples - n_have) + 64, 20000)
        t = rng.uniform(*cfg.teff_range, m)
        g = rng.uniform(*logg_range, m)
        f = rng.uniform(*feh_range, m)
        n_drawn += m
        inp, ok_e, _ = emulator(t, g, f)
        flux, fmask, ok_g = interp(t, g, f)
        n_emu_out += int((~ok_e).sum())
        n_grid_out += int((ok_e & ~ok_g).sum())
        ok = ok_e & ok_g
        if not ok.any():
            continue
        sed, _, smask, _ = prepare_target(interp.wavelength, flux[ok], None, fmask[ok], None)
        good = ~np.isnan(sed).all(axis=1) & (~smask).any(axis=1)
        sel = np.flatnonzero(ok)[good]
        kept.append((inp[sel], sed[good], smask[good], t[sel], g[sel], f[sel]))
        n_have += int(good.sum())
    if not kept:
        raise ValueError(f"no parameter draw in {cfg.path} fell inside both the grid and the "
                         "emulator domain")
    cat = [np.concatenate(c)[: cfg.n_samples] for c in zip(*kept, strict=True)]
    inp, sed, smask, t, g, f = cat
    names = np.array([f"{cfg.subset}-{i:06d}" for i in range(len(t))])
    arrays = _pairs(cfg, inp, np.zeros(inp.shape, bool), sed, smask, t, g, f, names, rng)
    prov = {"n_drawn": n_drawn, "n_outside_emulator": n_emu_out,
            "n_outside_grid": n_grid_out, "n_models_read": lib.n_star,
            "logg_range": list(logg_range), "feh_range": list(feh_range),
            "stand_in": STAND_INS["grid"]}
    return SetResult(arrays, prov, [])


def _read_library(cfg: SetConfig) -> SpectralLibrary:
    opts: dict[str, Any] = {}
    fmt = {"miles": "miles", "pickles": "pickles", "ngsl": "ngsl", "bosz": "bosz"}.get(cfg.kind)
    if cfg.params is not None:
        key = "table_path" if (cfg.kind == "pickles" and not cfg.params.endswith(".csv")) \
            else "params"
        opts[key] = cfg.params
    lib = read(cfg.path, format=fmt, **opts)
    if not isinstance(lib, SpectralLibrary):
        raise ValueError(f"{cfg.path} is a single spectrum, not a library")
    return lib


def _teff_from_sed(lib: SpectralLibrary, sed: NDArray[np.float64], smask: NDArray[np.bool_]
                   ) -> tuple[SpectralLibrary, dict[str, Any]]:
    """The library with each star's Teff replaced by that of its own SED (where it fits)."""
    fit = fit_teff(sed, smask, lib.logg, lib.feh)
    ok = np.isfinite(fit.teff) & np.isfinite(lib.logg) & np.isfinite(lib.feh)
    teff = np.where(ok, fit.teff, lib.teff)
    d = teff[ok] - lib.teff[ok]
    prov = {"method": "csstflux.library.sedfit.fit_teff", "window_A": list(FIT_WINDOW),
            "n_fitted": int(ok.sum()),
            "median_change_K": float(np.nanmedian(d)) if d.size else None,
            "median_abs_change_K": float(np.nanmedian(np.abs(d))) if d.size else None,
            "median_rms_lnF": float(np.nanmedian(fit.rms[ok])) if ok.any() else None,
            "catalogue_teff": {str(n): round(float(t), 1) for n, t, k in
                               zip(lib.names, lib.teff, ok, strict=True) if k}}
    return dataclasses.replace(lib, teff=teff), prov


def build_library_set(cfg: SetConfig, emulator: InputEmulator, rng: np.random.Generator
                      ) -> SetResult:
    """MILES, BOSZ (real inputs) or Pickles, NGSL, generic (emulated inputs)."""
    lib = _read_library(cfg)
    sed, smask, notes_t = library_targets(lib)
    reasons = np.full(lib.n_star, "", dtype=object)
    prov: dict[str, Any] = {"n_input": lib.n_star, "resolution_notes": notes_t}
    if cfg.teff_from_sed:
        lib, prov["teff_from_sed"] = _teff_from_sed(lib, sed, smask)
    if cfg.vet and cfg.kind != "bosz":
        res = vet(lib.teff, lib.logg, lib.feh, sed, smask, rmsae_cut=cfg.rmsae_cut,
                  teff_range=cfg.teff_range)
        reasons[:] = res.reason
        prov["vetting"] = {"hyperparameters": res.hyper.to_dict(), "n_kept": res.n_kept,
                           "passes": res.passes, "cuts": res.cuts,
                           "median_rmsae_kept": float(np.nanmedian(res.rmsae[res.kept]))}
    else:
        t = lib.teff
        bad = ~np.isfinite(t) | (t < cfg.teff_range[0]) | (t > cfg.teff_range[1])
        reasons[bad] = f"Teff outside {cfg.teff_range[0]:g}-{cfg.teff_range[1]:g} K or unknown"
    if cfg.kind in ("miles", "bosz"):
        inp, imask, notes_i = library_inputs(lib)
        prov["resolution_notes"] = sorted(set(notes_t) | set(notes_i))
    else:
        inp, ok, _ = emulator(lib.teff, lib.logg, lib.feh)
        imask = np.zeros(inp.shape, bool)
        reasons[(reasons == "") & ~ok] = "parameters outside the emulator domain"
        prov["stand_in"] = STAND_INS.get(cfg.kind, "inputs from the emulator (Appendix C)")
    unusable = ~_usable(imask, smask)
    reasons[(reasons == "") & unusable] = "input or target not usable (masked)"
    keep = reasons == ""
    rejected = [(str(n), str(r)) for n, r in zip(lib.names, reasons, strict=True) if r]
    prov["n_kept"] = int(keep.sum())
    prov["rejections"] = dict(Counter(str(r) for r in reasons if r))
    arrays = _pairs(cfg, inp[keep], imask[keep], sed[keep], smask[keep], lib.teff[keep],
                    lib.logg[keep], lib.feh[keep], lib.names[keep], rng)
    return SetResult(arrays, prov, rejected)


def build_trainset(cfg: TrainsetConfig) -> tuple[Path, dict[str, Any]]:
    """Build every set, concatenate, write the store; returns (path, summary)."""
    emulator = load_emulator(cfg.emulator)
    rng = np.random.default_rng(cfg.seed)
    parts, sets_prov = [], []
    for n, s in enumerate(cfg.sets, 1):
        log.info("set %d of %d: %s (%s, %s)", n, len(cfg.sets), s.subset, s.kind,
                 fmt_path(s.path))
        res = (build_grid_set(s, emulator, rng) if s.kind == "grid"
               else build_library_set(s, emulator, rng))
        log.info("set %s: %d rows, %d rejected", s.subset, len(res.arrays), len(res.rejected))
        counts = {k: int((res.arrays.split == v).sum()) for k, v in SPLITS.items()}
        sets_prov.append({"subset": s.subset, "kind": s.kind, "path": str(Path(s.path)),
                          "files_sha256": tree_hash(s.path), "config": to_dict(s),
                          "n_rows": len(res.arrays), "split_counts": counts,
                          "rejected": res.rejected, **res.provenance})
        parts.append(res.arrays)
    attrs = {
        **all_grids_attrs(),
        "kind": "csstflux-training-store",
        "csstflux_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "emulator": {k: emulator.provenance.get(k) for k in
                     ("sha256", "path", "n_train", "n_components", "hyperparameters")},
        "sets": sets_prov,
        "noise": "not stored; drawn at training time (eq. 1 or LAMOST-like, per the training job)",
    }
    data = TrainingArrays.concatenate(parts, attrs)
    log.info("writing %s: %d rows", fmt_path(cfg.out), len(data))
    path = write_trainstore(cfg.out, data, overwrite=cfg.overwrite)
    summary = {"out": str(path), "n_rows": len(data),
               "sets": [{k: p[k] for k in ("subset", "kind", "n_rows", "split_counts")}
                        for p in sets_prov]}
    assert INPUT_GRID.n == data.inputs.shape[1] and OUTPUT_GRID.n == data.targets.shape[1]
    return path, summary
