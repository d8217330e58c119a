"""Shared pieces of the library readers: checks, medium conversion, stacking, parameter CSVs."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.airvac import to_vacuum
from csstflux.errors import GridMismatchError, InputFormatError
from csstflux.spectrum import Resolution, SpectralLibrary, Spectrum

MEDIA = ("air", "vacuum")


def check_medium(medium: str) -> str:
    """Normalise a medium name (``air``/``vacuum``/``vac``); ValueError otherwise."""
    m = str(medium).strip().lower()
    if m in ("vac", "vacuum"):
        return "vacuum"
    if m == "air":
        return "air"
    raise ValueError(f"unknown wavelength medium {medium!r}: expected 'air' or 'vacuum'")


def check_wavelength(wavelength: ArrayLike, path: str | os.PathLike[str],
                     hdu: int | str | None = None) -> NDArray[np.float64]:
    """Return ``wavelength`` (n_pix,) float64 after checking it is non-empty, finite, positive
    and strictly increasing; raises :class:`InputFormatError` naming the first bad pixel."""
    w = np.asarray(wavelength, dtype=np.float64).ravel()
    if w.size == 0:
        raise InputFormatError("spectrum has no pixels", path=path, hdu=hdu,
                               expected="at least 2 pixels", found="0")
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputFormatError("wavelength is not finite and positive", path=path, hdu=hdu,
                               expected="finite wavelengths > 0", found=f"{w[i]} at pixel {i}")
    steps = np.diff(w)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise InputFormatError("wavelength is not strictly increasing", path=path, hdu=hdu,
                               expected="strictly increasing",
                               found=f"{w[i]} then {w[i + 1]} at pixels {i}, {i + 1}")
    return w


def finish_spectrum(wavelength: ArrayLike, flux: ArrayLike, *, path: str | os.PathLike[str],
                    fmt: str, medium: str, error: ArrayLike | None = None,
                    mask: ArrayLike | None = None, meta: dict[str, Any] | None = None,
                    resolution: Resolution | None = None, hdu: int | str | None = None,
                    nonpositive_error: str = "raise") -> Spectrum:
    """Build a :class:`Spectrum` in vacuum Å from arrays as read.

    ``wavelength``, ``flux``, ``error``, ``mask``: (n_pix,); ``medium`` is the medium the file's
    wavelengths are in (converted with :func:`csstflux.airvac.to_vacuum`). Non-finite flux is
    masked. Errors: NaN means unknown; zero errors are masked; negative errors raise
    (``nonpositive_error="raise"``) or are masked (``"mask"``). An entirely masked spectrum is
    returned with a warning, not an error.
    """
    w = check_wavelength(wavelength, path, hdu)
    f = np.asarray(flux, dtype=np.float64).ravel()
    if f.shape != w.shape:
        raise InputFormatError("flux and wavelength differ in length", path=path, hdu=hdu,
                               expected=w.size, found=f.size)
    m = np.zeros(w.shape, bool) if mask is None else np.asarray(mask, bool).ravel().copy()
    m |= ~np.isfinite(f)
    if error is None:
        e = np.full(w.shape, np.nan)
    else:
        e = np.asarray(error, dtype=np.float64).ravel()
        if e.shape != w.shape:
            raise InputFormatError("error and wavelength differ in length", path=path, hdu=hdu,
                                   expected=w.size, found=e.size)
        neg = e < 0
        if neg.any() and nonpositive_error == "raise":
            i = int(np.argmax(neg))
            raise InputFormatError("negative flux error", path=path, hdu=hdu,
                                   expected="errors >= 0", found=f"{e[i]} at pixel {i}")
        m |= (e <= 0)
    medium = check_medium(medium)
    meta = dict(meta or {})
    meta["wavelength_medium_original"] = medium
    if m.all():
        warnings.warn(f"{os.fspath(path)}: every pixel is masked (no finite flux)",
                      stacklevel=3)
    return Spectrum(to_vacuum(w, medium), f, e, m, meta, resolution or Resolution(),
                    os.fspath(path), fmt)


def stack(spectra: Sequence[Spectrum], *, names: Sequence[str], path: str | os.PathLike[str],
          fmt: str, teff: ArrayLike | None = None, logg: ArrayLike | None = None,
          feh: ArrayLike | None = None, extra: dict[str, Any] | None = None,
          meta: dict[str, Any] | None = None, resolution: Resolution | None = None,
          rtol: float = 1e-9) -> SpectralLibrary:
    """Stack spectra that share one wavelength grid into a :class:`SpectralLibrary`.

    Raises :class:`GridMismatchError` naming the first file whose grid differs from the first
    spectrum's (``rtol`` relative tolerance per pixel).
    """
    if not spectra:
        raise InputFormatError("no spectra found", path=path)
    ref = spectra[0]
    for s in spectra[1:]:
        if s.wavelength.shape != ref.wavelength.shape or not np.allclose(
                s.wavelength, ref.wavelength, rtol=rtol, atol=0):
            raise GridMismatchError(
                "spectrum is not on the library's common wavelength grid", path=s.source,
                expected=f"{ref.n_pix} pixels {ref.wavelength[0]:.4f}-{ref.wavelength[-1]:.4f} Å"
                         f" (as {ref.source})",
                found=f"{s.n_pix} pixels {s.wavelength[0]:.4f}-{s.wavelength[-1]:.4f} Å")
    n = len(spectra)

    def col(v: ArrayLike | None) -> NDArray[np.float64]:
        return np.full(n, np.nan) if v is None else np.asarray(v, dtype=np.float64)

    return SpectralLibrary(
        wavelength=ref.wavelength, flux=np.stack([s.flux for s in spectra]),
        error=np.stack([s.error for s in spectra]), mask=np.stack([s.mask for s in spectra]),
        names=np.asarray(list(names), dtype=str), teff=col(teff), logg=col(logg), feh=col(feh),
        extra=dict(extra or {}), meta=dict(meta or {}),
        resolution=resolution or ref.resolution, source=os.fspath(path), format=fmt)


def norm_name(name: str) -> str:
    """Key used to match star names across files and tables: lower case, no spaces/_/-."""
    return "".join(ch for ch in str(name).lower() if ch not in " _-")


_ALIASES = {
    "teff": ("teff", "t_eff", "temperature"),
    "logg": ("logg", "log_g", "log g", "gravity"),
    "feh": ("feh", "[fe/h]", "fe_h", "mh", "[m/h]", "m_h", "metallicity"),
}


def read_params_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a CSV/ECSV of stellar parameters keyed by :func:`norm_name` of its ``name`` column.

    Columns (case-insensitive): ``name`` (required), ``teff``, ``logg``, ``feh`` (aliases
    ``[Fe/H]``, ``mh``...), and any further columns (e.g. ``ebv``, ``av``), kept as extras.
    """
    from astropy.io import ascii as ap_ascii
    from astropy.table import Table

    p = Path(path)
    if not p.is_file():
        raise InputFormatError("parameter table not found", path=p)
    try:
        fmt = "ascii.ecsv" if p.read_text(errors="replace").startswith("# %ECSV") else "ascii.csv"
        table = Table.read(p, format=fmt, **({"comment": "#"} if fmt == "ascii.csv" else {}))
    except (ValueError, ap_ascii.InconsistentTableError, OSError) as exc:
        raise InputFormatError(f"cannot parse parameter table ({exc})", path=p) from exc
    cols = {c.lower().strip(): c for c in table.colnames}
    if "name" not in cols:
        raise InputFormatError("parameter table lacks a 'name' column", path=p,
                               expected="name, teff, logg, feh", found=", ".join(table.colnames))
    rename: dict[str, str] = {}
    for key, aliases in _ALIASES.items():
        for a in aliases:
            if a in cols:
                rename[cols[a]] = key
                break
    out: dict[str, dict[str, Any]] = {}
    for row in table:
        rec: dict[str, Any] = {}
        for c in table.colnames:
            if c == cols["name"]:
                continue
            v = row[c]
            rec[rename.get(c, c.lower())] = None if np.ma.is_masked(v) else v
        out[norm_name(row[cols["name"]])] = rec
    return out


def params_for(names: Sequence[str], table: dict[str, dict[str, Any]],
               path: str | os.PathLike[str]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                      NDArray[np.float64], dict[str, Any]]:
    """(teff, logg, feh, extra) arrays (n_star,) for ``names`` from a :func:`read_params_csv`
    table; stars absent from the table get NaN and one warning lists them."""
    n = len(names)
    base = {k: np.full(n, np.nan) for k in ("teff", "logg", "feh")}
    extra_keys = sorted({k for rec in table.values() for k in rec} - set(base))
    extra: dict[str, Any] = {k: [None] * n for k in extra_keys}
    missing = []
    for i, name in enumerate(names):
        rec = table.get(norm_name(name))
        if rec is None:
            missing.append(str(name))
            continue
        for k in base:
            v = rec.get(k)
            base[k][i] = np.nan if v is None else float(v)
        for k in extra_keys:
            extra[k][i] = rec.get(k)
    if missing:
        warnings.warn(f"{os.fspath(path)}: no parameters for {len(missing)} star(s): "
                      f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
                      stacklevel=3)
    extra_arr: dict[str, Any] = {}
    for k, vals in extra.items():
        try:
            extra_arr[k] = np.array([np.nan if v is None else float(v) for v in vals])
        except (TypeError, ValueError):
            extra_arr[k] = np.array(["" if v is None else str(v) for v in vals])
    return base["teff"], base["logg"], base["feh"], extra_arr
