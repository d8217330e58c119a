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
from csstflux.containers import Resolution, SpectralLibrary, Spectrum
from csstflux.errors import GridMismatchError, InputFormatError

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
          rtol: float = 1e-9, per_star_grid: bool = False) -> SpectralLibrary:
    """Stack spectra into a :class:`SpectralLibrary`.

    Spectra on one wavelength grid (within ``rtol`` per pixel) give a library on that grid.
    Otherwise ``per_star_grid=False`` raises :class:`GridMismatchError` naming the first file
    whose grid differs from the first spectrum's, and ``per_star_grid=True`` keeps each
    star's own grid (see :class:`SpectralLibrary`: the shorter grids are continued and the
    extra pixels masked). Stars whose resolutions differ get ``star_resolution``.
    """
    if not spectra:
        raise InputFormatError("no spectra found", path=path)
    ref = spectra[0]
    differs = [s for s in spectra[1:] if s.wavelength.shape != ref.wavelength.shape
               or not np.allclose(s.wavelength, ref.wavelength, rtol=rtol, atol=0)]
    if differs and not per_star_grid:
        s = differs[0]
        raise GridMismatchError(
            "spectrum is not on the library's common wavelength grid", path=s.source,
            expected=f"{ref.n_pix} pixels {ref.wavelength[0]:.4f}-{ref.wavelength[-1]:.4f} Å"
                     f" (as {ref.source})",
            found=f"{s.n_pix} pixels {s.wavelength[0]:.4f}-{s.wavelength[-1]:.4f} Å")
    n = len(spectra)
    extra = dict(extra or {})
    if differs:
        n_pix = max(s.n_pix for s in spectra)
        wavelength = np.stack([extend_grid(s.wavelength, n_pix) for s in spectra])

        def padded(a: NDArray[Any], fill: Any) -> NDArray[Any]:
            return np.concatenate([a, np.full(n_pix - a.size, fill, dtype=a.dtype)])

        flux = np.stack([padded(s.flux, 0.0) for s in spectra])
        error = np.stack([padded(s.error, np.nan) for s in spectra])
        mask = np.stack([padded(s.mask, True) for s in spectra])
        extra["n_pix"] = np.array([s.n_pix for s in spectra])
    else:
        wavelength = ref.wavelength
        flux = np.stack([s.flux for s in spectra])
        error = np.stack([s.error for s in spectra])
        mask = np.stack([s.mask for s in spectra])
    per_star = tuple(s.resolution for s in spectra)
    shared = resolution is not None or all(r == per_star[0] for r in per_star)

    def col(v: ArrayLike | None) -> NDArray[np.float64]:
        return np.full(n, np.nan) if v is None else np.asarray(v, dtype=np.float64)

    return SpectralLibrary(
        wavelength=wavelength, flux=flux, error=error, mask=mask,
        names=np.asarray(list(names), dtype=str), teff=col(teff), logg=col(logg), feh=col(feh),
        extra=extra, meta=dict(meta or {}), resolution=resolution or ref.resolution,
        source=os.fspath(path), format=fmt, star_resolution=None if shared else per_star)


def extend_grid(wavelength: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """``wavelength`` (m,) continued to ``n`` ≥ m pixels with its last step ratio."""
    w = np.asarray(wavelength, dtype=np.float64)
    if n <= w.size:
        return w
    ratio = w[-1] / w[-2] if w.size > 1 else 1.0 + 1e-4
    return np.concatenate([w, w[-1] * ratio ** np.arange(1, n - w.size + 1)])


#: Shortest run of exact zeros inside a spectrum that is taken for padding (at either end,
#: a run of any length is).
ZERO_RUN = 3


def zero_padding(flux: ArrayLike, min_run: int = ZERO_RUN) -> NDArray[np.bool_]:
    """True where ``flux`` (n_pix,) holds padding: exact zeros running from either end, or a
    run of at least ``min_run`` exact zeros inside. A lone zero inside is kept as data."""
    f = np.asarray(flux).ravel()
    zero = f == 0
    out = np.zeros(f.shape, bool)
    if not zero.any():
        return out
    # runs of zeros: starts and stops from the edges of the padded indicator
    d = np.diff(np.concatenate([[0], zero.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
        if a == 0 or b == f.size or b - a >= min_run:
            out[a:b] = True
    return out


#: Header keywords (or table meta keys, case-insensitive) holding stellar parameters.
PARAM_KEYWORDS: dict[str, tuple[str, ...]] = {
    "teff": ("TEFF", "T_EFF"),
    "logg": ("LOGG", "LOG_G"),
    "feh": ("FEH", "FE_H", "MH", "M_H"),
}
#: Keywords giving the constant FWHM of the line-spread function (in the wavelength unit).
FWHM_KEYWORDS = ("FWHM",)
#: Keywords giving the resolving power R = λ/FWHM.
R_KEYWORDS = ("SPEC_RES", "RESOLUTN", "R")


def _number(value: Any) -> float | None:
    try:
        v = float(str(value).strip().strip("'").replace("D", "E"))
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def params_from_keywords(get: Any) -> dict[str, float]:
    """``{"teff", "logg", "feh"}`` (NaN when absent) from ``get(KEY)`` → value or None."""
    out = {}
    for key, names in PARAM_KEYWORDS.items():
        vals = (_number(get(k)) for k in names)
        out[key] = next((v for v in vals if v is not None), np.nan)
    return out


def resolution_from_keywords(get: Any, unit_scale: float = 1.0
                             ) -> tuple[Resolution, str] | None:
    """(Resolution, keyword) from ``get(KEY)``: a positive FWHM (× ``unit_scale`` to Å) or
    resolving power; None when no such keyword holds a positive number."""
    for key in FWHM_KEYWORDS + R_KEYWORDS:
        v = _number(get(key))
        if v is not None and v > 0:
            return (Resolution(fwhm=v * unit_scale) if key in FWHM_KEYWORDS
                    else Resolution(resolving_power=v)), key
    return None


def sampling_resolution(wavelength: ArrayLike) -> Resolution:
    """The default line-spread function of a spectrum that states none: Nyquist sampling,
    FWHM = 2 pixels, as a constant FWHM (2 × the median step) on a linear grid or a constant
    R = 1 / (2 × the median step in ln λ) on a logarithmic one (whichever steps vary less).
    ``wavelength``: (n_pix,) Å, strictly increasing; fewer than 2 pixels give ``Resolution()``."""
    w = np.asarray(wavelength, dtype=np.float64)
    if w.size < 2:
        return Resolution()
    d_lin, d_ln = np.diff(w), np.diff(np.log(w))
    if np.ptp(d_ln) / np.mean(d_ln) < np.ptp(d_lin) / np.mean(d_lin):
        return Resolution(resolving_power=float(1.0 / (2.0 * np.median(d_ln))))
    return Resolution(fwhm=float(2.0 * np.median(d_lin)))


def warn_guesses(spectra: Sequence[Spectrum], path: str | os.PathLike[str]) -> None:
    """One warning per quantity a library's files leave to a default (medium, resolution),
    naming how many files and what was assumed. Reads ``meta["wavelength_medium_source"]``
    and ``meta["resolution_source"]`` (``"default"`` = guessed)."""
    for key, what, how in (
            ("wavelength_medium_source", "no wavelength medium (AIRORVAC, VACUUM, CTYPE1 "
             "AWAV/WAVE)", "vacuum assumed; give medium= (--medium air|vacuum)"),
            ("resolution_source", "no resolution (FWHM, SPEC_RES, RESOLUTN, R)",
             "FWHM = 2 pixels assumed; give resolution= (--fwhm or --resolution)")):
        guessed = [s for s in spectra if s.meta.get(key) == "default"]
        if guessed:
            warnings.warn(f"{os.fspath(path)}: {len(guessed)} of {len(spectra)} file(s) state "
                          f"{what}: {how}", stacklevel=3)


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
