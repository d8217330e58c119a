"""Castelli & Kurucz (2004) ATLAS9 flux grid in the STScI CDBS layout (``grid/ck04models``).

Layout (CDBS ``AA_README`` of the folder): ``catalog.fits`` is a binary table (INDEX
``"teff,[M/H],logg"``, FILENAME ``"ckp00/ckp00_5750.fits[g45]"``); each
``ck{m,p}XX/ck{m,p}XX_TEFF.fits`` holds one binary table with WAVELENGTH (Å) and eleven FLAM
columns ``g00``...``g50`` (10·log g) of surface flux in erg s⁻¹ cm⁻² Å⁻¹; a column filled with
zeros is a model that does not exist, and is skipped. 1221 wavelengths from 90.9 Å to 160 µm
(10 Å steps below 2900 Å, 20 Å to 1 µm, coarser beyond). Metallicities [M/H] -2.5...+0.5,
Teff 3500-50000 K.

Wavelength medium: the CDBS README and headers say only "Wavelength is in Angstrom". The
ATLAS9 fluxes are averages over the opacity-distribution-function bins, whose edges Kurucz
defines in vacuum, and STScI synphot uses them unconverted next to vacuum HST spectra. This
reader therefore takes them as **vacuum** (``medium="vacuum"``, overridable). At this sampling
the difference (≈1.4 Å at 5000 Å) is under a tenth of a pixel. Model spectra:
``Resolution()`` (sampling-limited).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.airvac import to_vacuum
from csstflux.containers import Resolution, SpectralLibrary
from csstflux.errors import GridMismatchError, InputFormatError
from csstflux.io.fits import decode as fd
from csstflux.io.formats._common import check_medium, check_wavelength

FORMAT = "ck04"
_FILE_RE = re.compile(r"^ck([mp])(\d\d)_(\d{4,5})\.fits$")
_DIR_RE = re.compile(r"^ck[mp]\d\d$")
_COL_RE = re.compile(r"^G(\d\d)$")


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding ``catalog.fits`` and ``ck[mp]XX`` sub-folders."""
    p = Path(path)
    try:
        return (p.is_dir() and (p / "catalog.fits").is_file()
                and any(d.is_dir() and _DIR_RE.match(d.name) for d in p.iterdir()))
    except OSError:
        return False


def _in(value: float, rng: tuple[float, float] | None) -> bool:
    return rng is None or (rng[0] - 1e-9 <= value <= rng[1] + 1e-9)


def _catalog(directory: Path) -> list[tuple[float, float, float, str, str]]:
    """(teff, feh, logg, relative file, column) rows of ``catalog.fits``."""
    path = directory / "catalog.fits"
    raw, hdus = fd.load_fits_bytes(path)
    if len(hdus) < 2:
        raise InputFormatError("catalog has no table extension", path=path,
                               expected="2 HDUs", found=len(hdus))
    cols = fd.read_table(raw, hdus[1], path)
    if "INDEX" not in cols or "FILENAME" not in cols:
        raise InputFormatError("catalog lacks INDEX/FILENAME columns", path=path, hdu=1,
                               expected="INDEX, FILENAME", found=", ".join(cols))
    rows = []
    for index, fname in zip(cols["INDEX"], cols["FILENAME"], strict=True):
        try:
            teff, feh, logg = (float(v) for v in index.split(","))
            rel, col = fname.rstrip("]").split("[")
        except ValueError as exc:
            raise InputFormatError("unparsable catalog row", path=path, hdu=1,
                                   expected="'teff,[M/H],logg' and 'dir/file.fits[gNN]'",
                                   found=f"{index!r}, {fname!r}") from exc
        rows.append((teff, feh, logg, rel, col.upper()))
    return rows


def read(path: str | os.PathLike[str], *, teff_range: tuple[float, float] | None = None,
         logg_range: tuple[float, float] | None = None,
         feh_range: tuple[float, float] | None = None,
         medium: str = "vacuum") -> SpectralLibrary:
    """Read the CK04 grid, or the part of it inside the given parameter ranges.

    Parameters
    ----------
    path : path-like
        The ``ck04models`` directory.
    teff_range, logg_range, feh_range : (lo, hi), optional
        Inclusive ranges (K, dex, dex) applied to ``catalog.fits`` before any model file is
        opened, so that only the files needed are read.
    medium : {"vacuum", "air"}
        Medium the tabulated wavelengths are taken to be in (see module docstring).

    Returns
    -------
    SpectralLibrary
        ``wavelength`` (1221,) vacuum Å; ``flux`` (n_model, 1221) surface flux
        erg s⁻¹ cm⁻² Å⁻¹ (float32 values widened); ``error`` NaN; ``names`` like
        ``ckp00_5750_g45``; ``teff``, ``logg``, ``feh`` = [M/H] from the catalog. Models whose
        column is all zeros are excluded. Sorted by [M/H], Teff, log g.
    """
    medium = check_medium(medium)
    root = Path(path)
    if not identify(root):
        raise InputFormatError("not a CK04 grid directory", path=root,
                               expected="catalog.fits and ck[mp]XX folders")
    wanted: dict[str, list[tuple[float, float, float, str]]] = {}
    for teff, feh, logg, rel, col in _catalog(root):
        if _in(teff, teff_range) and _in(logg, logg_range) and _in(feh, feh_range):
            wanted.setdefault(rel, []).append((teff, feh, logg, col))
    names: list[str] = []
    params: list[tuple[float, float, float]] = []
    fluxes: list[NDArray[np.float64]] = []
    wave_ref: NDArray[np.float64] | None = None
    ref_file = ""
    for rel in sorted(wanted):
        fpath = root / rel
        if not fpath.is_file():
            raise InputFormatError("model file listed in catalog.fits is missing", path=fpath)
        raw, hdus = fd.load_fits_bytes(fpath)
        if len(hdus) < 2:
            raise InputFormatError("model file has no table extension", path=fpath,
                                   expected="2 HDUs", found=len(hdus))
        cols = fd.read_table(raw, hdus[1], fpath)
        if "WAVELENGTH" not in cols:
            raise InputFormatError("model table lacks WAVELENGTH", path=fpath, hdu=1,
                                   expected="WAVELENGTH, g00..g50", found=", ".join(cols))
        wave = check_wavelength(cols["WAVELENGTH"], fpath, 1)
        if wave_ref is None:
            wave_ref, ref_file = wave, os.fspath(fpath)
        elif wave.shape != wave_ref.shape or not np.array_equal(wave, wave_ref):
            raise GridMismatchError("CK04 model file has a different wavelength grid",
                                    path=fpath, expected=f"{wave_ref.size} points as {ref_file}",
                                    found=f"{wave.size} points")
        for teff, feh, logg, col in wanted[rel]:
            if col not in cols:
                raise InputFormatError(f"model column {col} missing", path=fpath, hdu=1,
                                       expected=col, found=", ".join(cols))
            flux = cols[col]
            if not np.any(flux != 0):
                continue          # all-zero column: model not computed
            names.append(f"{fpath.stem}_{col.lower()}")
            params.append((teff, logg, feh))
            fluxes.append(flux)
    if wave_ref is None or not fluxes:
        raise InputFormatError("no CK04 models match the selection", path=root,
                               expected={"teff": teff_range, "logg": logg_range,
                                         "feh": feh_range}, found="0 models")
    order = sorted(range(len(names)), key=lambda i: (params[i][2], params[i][0], params[i][1]))
    flux_arr = np.stack([fluxes[i] for i in order])
    par = np.array([params[i] for i in order])
    mask = ~np.isfinite(flux_arr)
    meta: dict[str, Any] = {"flux_unit": "erg/s/cm2/A (surface flux, FLAM)",
                            "library": "Castelli & Kurucz 2004 (ATLAS9, CDBS)",
                            "wavelength_medium_original": medium,
                            "selection": {"teff": teff_range, "logg": logg_range,
                                          "feh": feh_range}}
    return SpectralLibrary(
        wavelength=to_vacuum(wave_ref, medium), flux=flux_arr, error=np.full(flux_arr.shape,
                                                                          np.nan),
        mask=mask, names=np.array([names[i] for i in order]), teff=par[:, 0],
        logg=par[:, 1], feh=par[:, 2], extra={}, meta=meta, resolution=Resolution(),
        source=os.fspath(root), format=FORMAT)
