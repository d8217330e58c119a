"""BOSZ synthetic spectra (Bohlin et al. 2017, AJ 153, 234; MAST HLSP ``bosz``).

Sources: the MAST HLSP page (archive.stsci.edu/prepds/bosz/) for the file naming and the two
formats, and readers that use the files (Subaru-PFS-GA ``ga_pfsspec_stellar``
``grid/bosz/io/boszspectrumreader.py``; JarronL ``webbpsf_ext/spectra.py``).

File names, e.g. ``amp00cp00op00t5750g45v20modrt0b2000rs.fits`` or ``....asc.bz2``:
``am`` + [M/H], ``c`` + [C/M], ``o`` + [α/M] (sign ``m``/``p`` and two digits of |value|·10,
rounded, so ``m03`` = −0.25, ``m08`` = −0.75, ``m13`` = −1.25: values are snapped back to the
0.25 dex grid), ``t`` Teff (K), ``g`` 10·log g, ``v`` 10·microturbulence (km/s), ``mod`` the
model type, ``rt`` rotation (km/s), ``b`` the instrumental resolving power R, ``rs`` resampled.
The MAST tree nests them as ``<fits|ascii>/insbroad_<R>/metal_<M/H>/carbon_<C/M>/alpha_<a/M>/``.

Formats: FITS, a binary table in HDU 1 with columns ``Wavelength`` (Å), ``SpecificIntensity``
and ``Continuum``; ASCII (bzip2), whitespace columns wavelength (Å), flux [, continuum]. The flux
is the Eddington flux H_λ (erg s⁻¹ cm⁻² Å⁻¹ sr⁻¹; the surface flux is F_λ = 4π H_λ) despite the
column name; it is returned as tabulated, since only the shape matters here
(``meta["flux_unit"]`` says so). The continuum goes to ``meta["continuum"]`` /
``extra["continuum"]``.

Wavelength medium: **vacuum** — SYNTHE computes on a vacuum log-λ grid (the pfsspec reader
rebuilds it from R = 300 000 starting at 100 nm), and Bohlin's own comparisons use the vacuum
STIS/CALSPEC wavelengths. ``medium=`` overrides.
"""

from __future__ import annotations

import bz2
import gzip
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import Resolution, SpectralLibrary, Spectrum
from csstflux.errors import InputFormatError
from csstflux.io.fits import decode as fd
from csstflux.io.formats._common import finish_spectrum, stack

FORMAT = "bosz"
NAME_RE = re.compile(
    r"^am(?P<m>[mp]\d\d)c(?P<c>[mp]\d\d)o(?P<o>[mp]\d\d)t(?P<t>\d{4,5})g(?P<g>\d\d)"
    r"v(?P<v>\d\d)(?P<mod>[a-z]*?)rt(?P<rt>\d+)b(?P<b>\d+)(?P<rs>rs)?"
    r"\.(?P<ext>fits|fits\.gz|asc|asc\.bz2|asc\.gz)$")
FLUX_UNIT = "H_lambda: Eddington flux, erg/s/cm2/A/sr (F_lambda = 4 pi H_lambda)"


def _abund(code: str) -> float:
    v = int(code[1:]) / 10.0
    return (-1.0 if code[0] == "m" else 1.0) * round(v * 4.0) / 4.0


def parse_name(name: str) -> dict[str, Any]:
    """Parameters encoded in a BOSZ file name (see module docstring); ValueError otherwise.

    Returns ``teff`` (K), ``logg``, ``mh`` ([M/H]), ``cm`` ([C/M]), ``am`` ([α/M]), ``vturb``
    and ``vrot`` (km/s), ``resolving_power``, ``model``, ``resampled``.
    """
    m = NAME_RE.match(Path(name).name)
    if m is None:
        raise ValueError(f"not a BOSZ file name: {name!r}")
    return {"teff": float(m["t"]), "logg": int(m["g"]) / 10.0, "mh": _abund(m["m"]),
            "cm": _abund(m["c"]), "am": _abund(m["o"]), "vturb": int(m["v"]) / 10.0,
            "vrot": float(m["rt"]), "resolving_power": float(m["b"]), "model": m["mod"],
            "resampled": m["rs"] is not None}


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a file with a BOSZ name (FITS with a ``Wavelength``/``SpecificIntensity`` table,
    or an ASCII variant), or a directory tree holding such files."""
    p = Path(path)
    try:
        if p.is_dir():
            return any(NAME_RE.match(q.name) for q in p.rglob("a*"))
        if not (p.is_file() and NAME_RE.match(p.name)):
            return False
        if ".fits" in p.name:
            hdus = fd.first_header(p)
            if not hdus:
                return False
            if len(hdus) < 2:
                return True      # truncated: read() will say so
            names = [c.upper() for c in fd.table_columns(hdus[1])]
            return "WAVELENGTH" in names and "SPECIFICINTENSITY" in names
        return True
    except OSError:
        return False


def _open_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.name.endswith(".bz2"):
            raw = bz2.decompress(raw)
        elif path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        return raw.decode("ascii")
    except (OSError, EOFError, ValueError) as exc:
        raise InputFormatError(f"cannot read/decompress BOSZ ASCII file ({exc})",
                               path=path) from exc


def _read_ascii(path: Path) -> tuple[NDArray[np.float64], ...]:
    text = _open_text(path)
    if not text.strip():
        raise InputFormatError("file is empty", path=path, expected="2 or 3 columns",
                               found="0 rows")
    try:
        data = np.loadtxt(text.splitlines(), ndmin=2)
    except ValueError as exc:
        raise InputFormatError(f"not a numeric table ({exc})", path=path,
                               expected="wavelength, flux[, continuum]") from exc
    if data.shape[1] not in (2, 3):
        raise InputFormatError("unexpected number of columns", path=path,
                               expected="2 or 3", found=data.shape[1])
    cont = data[:, 2] if data.shape[1] == 3 else np.full(data.shape[0], np.nan)
    return data[:, 0], data[:, 1], cont


def _read_fits(path: Path) -> tuple[NDArray[np.float64], ...]:
    raw, hdus = fd.load_fits_bytes(path)
    if len(hdus) < 2:
        raise InputFormatError("BOSZ FITS file has no table extension", path=path,
                               expected="binary table in HDU 1", found=f"{len(hdus)} HDU(s)")
    cols = fd.read_table(raw, hdus[1], path)
    for need in ("WAVELENGTH", "SPECIFICINTENSITY"):
        if need not in cols:
            raise InputFormatError(f"BOSZ table lacks column {need}", path=path, hdu=1,
                                   expected="Wavelength, SpecificIntensity, Continuum",
                                   found=", ".join(cols))
    wave = np.ravel(cols["WAVELENGTH"])
    cont = np.ravel(cols.get("CONTINUUM", np.full(wave.size, np.nan)))
    return wave, np.ravel(cols["SPECIFICINTENSITY"]), cont


def _read_one(path: Path, medium: str) -> Spectrum:
    try:
        par = parse_name(path.name)
    except ValueError as exc:
        raise InputFormatError("file name does not follow the BOSZ convention", path=path,
                               expected="e.g. amp00cp00op00t5750g45v20modrt0b2000rs.fits",
                               found=path.name) from exc
    wave, flux, cont = _read_fits(path) if ".fits" in path.name else _read_ascii(path)
    meta: dict[str, Any] = {"flux_unit": FLUX_UNIT, "library": "BOSZ (Bohlin et al. 2017)",
                            "continuum": np.asarray(cont, dtype=np.float64), **par}
    return finish_spectrum(wave, flux, path=path, fmt=FORMAT, medium=medium, meta=meta,
                           resolution=Resolution(resolving_power=par["resolving_power"]),
                           hdu=1 if ".fits" in path.name else None)


def read(path: str | os.PathLike[str], *, medium: str = "vacuum",
         resolving_power: float | None = None) -> Spectrum | SpectralLibrary:
    """Read one BOSZ file (→ :class:`Spectrum`) or a directory tree of them (→ library).

    Parameters
    ----------
    path : path-like
        A BOSZ ``.fits`` / ``.asc`` / ``.asc.bz2`` file, or a directory searched recursively.
    medium : {"vacuum", "air"}
        Medium of the tabulated wavelengths (see module docstring).
    resolving_power : float, optional
        For a directory holding several resolutions, the one to read (required then).

    Returns
    -------
    Spectrum or SpectralLibrary
        Library: wavelength (n_pix,) vacuum Å shared by all files (else
        :class:`GridMismatchError`), flux (n_star, n_pix) H_λ, error NaN, ``teff``, ``logg``,
        ``feh`` = [M/H]; ``extra``: ``alpha`` ([α/M]), ``carbon`` ([C/M]), ``vturb``, ``vrot``,
        ``continuum`` (n_star, n_pix). Sorted by [M/H], Teff, log g.
    """
    p = Path(path)
    if not p.is_dir():
        return _read_one(p, medium)
    files = sorted(q for q in p.rglob("a*") if q.is_file() and NAME_RE.match(q.name))
    if not files:
        raise InputFormatError("no BOSZ files in directory", path=p,
                               expected="amp00cp00op00t5750g45v20modrt0b2000rs.fits")
    rs = sorted({parse_name(f.name)["resolving_power"] for f in files})
    if resolving_power is None and len(rs) > 1:
        raise InputFormatError("directory mixes BOSZ resolutions; pass resolving_power=",
                               path=p, expected="one resolving power", found=rs)
    r = rs[0] if resolving_power is None else float(resolving_power)
    files = [f for f in files if parse_name(f.name)["resolving_power"] == r]
    if not files:
        raise InputFormatError("no BOSZ files at the requested resolution", path=p,
                               expected=r, found=rs)
    spectra = [_read_one(f, medium) for f in files]
    order = sorted(range(len(spectra)), key=lambda i: (spectra[i].meta["mh"],
                                                       spectra[i].meta["teff"],
                                                       spectra[i].meta["logg"], files[i].name))
    spectra = [spectra[i] for i in order]

    def col(key: str) -> NDArray[np.float64]:
        return np.array([s.meta[key] for s in spectra], dtype=np.float64)

    return stack(spectra, names=[Path(s.source).name.split(".")[0] for s in spectra], path=p,
                 fmt=FORMAT, teff=col("teff"), logg=col("logg"), feh=col("mh"),
                 extra={"alpha": col("am"), "carbon": col("cm"), "vturb": col("vturb"),
                        "vrot": col("vrot"),
                        "continuum": np.stack([s.meta["continuum"] for s in spectra])},
                 meta={"flux_unit": FLUX_UNIT, "library": "BOSZ (Bohlin et al. 2017)",
                       "resolving_power": r, "wavelength_medium_original": medium},
                 resolution=Resolution(resolving_power=r))
