"""Describe any input file: format, wavelength range, pixel count, metadata and problems.

A file is unusable (``ok`` False, and ``csstflux inspect`` exits 1) when no reader can read
it or, for a spectrum, when it has no good pixel at all. Other problems are listed with the
file still ``ok``: its good pixels not covering the model input range, and for a spectrum
with a LAMOST-like header a broken arm or a wavelength row against its header WCS (the
pipeline predicts none of these; see :mod:`csstflux.io.validate`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.containers import SpectralLibrary, Spectrum
from csstflux.errors import CsstFluxError
from csstflux.grids import INPUT_GRID
from csstflux.io.registry import identify, reader_for

#: Metadata keys worth showing when a reader provides them.
_KEY_META = ("obsid", "ra", "dec", "class", "subclass", "snrg", "snrr", "z", "mjd", "data_v",
             "name", "teff", "logg", "feh", "flux_unit", "wavelength_medium_original", "wcs",
             "wcs_mismatch_pixels")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def inspect_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Report on one file or library directory; never raises for bad input.

    Returns a dict with ``path``, ``ok`` (False when the file cannot be used at all),
    ``format``, ``kind`` (``"spectrum"`` or ``"library"``), ``n_pix``, ``wavelength_range``
    (vacuum Å, of the good pixels), ``metadata`` and ``problems`` (human-readable strings).
    """
    from csstflux.io.validate import arm_snr, bad_input_problems, coverage_problems

    p = Path(path)
    report: dict[str, Any] = {"path": str(p), "ok": False, "format": None, "kind": None,
                              "n_pix": None, "wavelength_range": None, "metadata": {},
                              "problems": []}
    try:
        fmt = identify(p)
        report["format"] = fmt
        obj = reader_for(fmt).read(p)
    except CsstFluxError as exc:
        report["problems"].append(str(exc))
        return report
    report["ok"] = True
    report["n_pix"] = int(obj.wavelength.shape[-1])
    if isinstance(obj, Spectrum):
        report["kind"] = "spectrum"
        good = obj.good
        if good.any():
            w = obj.wavelength[good]
            report["wavelength_range"] = [float(w.min()), float(w.max())]
        report["metadata"] = {k: _plain(obj.meta[k]) for k in _KEY_META if k in obj.meta}
        report["metadata"]["masked_fraction"] = float(obj.mask.mean()) if obj.n_pix else 1.0
        coverage = coverage_problems(obj, INPUT_GRID.start, INPUT_GRID.stop)
        report["problems"].extend(coverage)
        if not good.any():
            report["ok"] = False
            return report
        arms = arm_snr(obj)
        report["metadata"].update(snr_blue_arm=_plain(arms.blue), snr_red_arm=_plain(arms.red))
        report["problems"].extend(bad_input_problems(obj))
    elif isinstance(obj, SpectralLibrary):
        report["kind"] = "library"
        report["wavelength_range"] = [float(obj.wavelength.min()), float(obj.wavelength.max())]
        report["metadata"] = {
            "n_star": obj.n_star,
            "with_teff": int(np.isfinite(obj.teff).sum()),
            "with_logg": int(np.isfinite(obj.logg).sum()),
            "with_feh": int(np.isfinite(obj.feh).sum()),
            "resolution": obj.resolution.to_attrs(),
        }
        bad = ~np.any(~obj.mask, axis=1)
        if bad.any():
            report["problems"].append(f"{int(bad.sum())} spectra have no good pixel")
    return report
