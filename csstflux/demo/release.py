"""The embedded demo release: a small LAMOST-like LRS data release made on the spot.

:func:`build_demo_release` writes, under ``root``, spectra in the real directory convention
(``{root}/{lmjd}/{planid}/spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits.gz``, as
:data:`csstflux.io.formats.lamost_catalog.DEFAULT_PATH_TEMPLATE` expects) and a LASP-style
``catalog.csv`` (obsid, ra, dec, snrg, teff, logg, feh, rv, class, lmjd, planid, spid, fiberid).

Sky. Six plates (16 spectrographs × 250 fibres each), stars uniform within 2.5° of each plate
centre; one field straddles RA = 0 and one is at Dec = +84°. The three older plates use the
DR1–7 image layout (``DATA_V = 'LAMOST DR7'``), the three newer ones the DR8+ COADD layout
(``'LAMOST DR9'``).

Spectra. Parameters are those of the shipped input emulator's training stars (all within
5000–9750 K), jittered by 1.5 % in Teff and 0.1 dex in log g and [Fe/H] and kept only where the
emulator says they are inside its domain. Each spectrum is the emulator's normalised R = 2000
spectrum (4000–7000 Å, rest frame; 1 beyond, with a 25 Å taper) times a Planck curve at Teff
times a gentle instrument response, on the LAMOST grid (log10 λ = 3.5682 + 1e-4 k, 3909
pixels, vacuum, stated in the header as LAMOST does: ``COEFF0``/``COEFF1`` and
``CRVAL1``/``CD1_1``/``DC-FLAG``), redshifted by ``Z = rv / c`` (written in the header), with
Gaussian noise (σ ∝ √flux; ``ivar = 1/σ²``) at the star's S/N in the fainter of the g
(4000–5500 Å) and r (5500–6900 Å) bands (regular stars have S/N 15–150 there, so both arms
have at least that). The header's SNRU…SNRZ are the median flux·√ivar of the data in the u,
g, r, i, z bands (as LAMOST measures them), and the catalogue's snrg is the header's. A few
pixels are masked (ANDMASK bits, ivar 0) at both ends and, for half the stars, in 5700–5900 Å
near the dichroic. About 3 % of stars have catalogue Teff outside 5000–9750 K (their spectrum
shape comes from the nearest in-domain training star; Planck curve at the catalogue Teff) and
are listed as ``outside_domain`` problems.

Photometry (``photometry=True``). Every star has a true SED: the shipped CK04 SED grid
(:mod:`csstflux.library.sed_grid`) at its model parameters (an outside-domain star at its
catalogue Teff with the model log g and [Fe/H]; parameters the grid cannot evaluate, e.g.
[Fe/H] < −2.5 or hot low-gravity points, move to the nearest point it can:
:meth:`~csstflux.library.sed_grid.SedGrid.nearest_inside`), reddened by a true E(B−V) drawn
from an exponential of mean 0.1 capped at 0.5 (mean 0.0993; F99, R_V = 3.1), scaled so that
its observed SDSS r is an AB magnitude drawn uniformly in 12–17.5. Its true AB magnitudes in
SDSS ugriz and PS1 grizy come from :class:`csstflux.photometry.synth.SyntheticPhotometry`;
the catalogue magnitudes are ``m_AB − ab_offset`` (SDSS u and z carry their AB offsets)
plus Gaussian noise of σ = 0.05 (u), 0.02 (g, r, i), 0.03 (z, y) mag, rounded to 0.01 as
LAMOST headers are. Image-layout (DR7) headers carry ``MAGTYPE = 'ugriz'``, ``MAG1``…``MAG5``
(SDSS u g r i z) and ``MAG6 = MAG7 = 99.0``; COADD (DR9) headers ``MAG_PS_G``…``MAG_PS_Y``.
3 % of the stars (rounded, at least one) have one of their header bands missing (99.0) and
one star in 200 (rounded up) one band off by ±1 mag; both are listed as
:attr:`DemoRelease.phot_problems`. The truth (:attr:`DemoRelease.sed_params`, ``true_ebv``,
``true_scale``, ``true_mag_ab``, ``phot_sigma``; :meth:`DemoRelease.true_flux`) is in the
manifest. The photometry draws from its own generator, ``default_rng((seed, 1))``, so the
spectra, the catalogue and the problems are those of a release built without it; only the
headers gain the magnitude keys (and the deliberately damaged ``truncated`` and ``bitflip``
files are cut or flipped relative to their now longer length).

Broken files (``broken=True``), one of each, listed in :attr:`DemoRelease.problems` with the
flag a pipeline must give them and, for unreadable files, the reader's exception: a truncated
``.gz``, a bit-flipped ``.gz``, an all-NaN flux, good pixels only below 6000 Å (no 4000–7000 Å
coverage), an empty file, a GALAXY, a star at S/N 3, a red arm at S/N 8 beside a blue arm at
S/N 80 (``LOW_SNR_ARM``), a red arm whose flux collapsed to a fifth (``BAD_INPUT``: the median
fluxes either side of 5800 Å differ fivefold) and a wavelength row 5 % off its header WCS
(``BAD_INPUT``: 212 pixels).

Speed: 2000 stars in 15 s of CPU on one core of a shared 2-core AMD EPYC (wall 16–27 s
while a training job ran beside it): the two emulator calls take 2 s (a Delaunay domain check
each), spectrum making ~1.5 ms per star and writing ~2.5 ms per gzipped file (CPU). The
photometry adds 0.1 s per 2000 stars, and 0.5 s of imports (speclite, dust_extinction);
re-measured side by side on that machine, without and with it: 7.2–8.9 s and 6.6–9.6 s of CPU
for 2000 stars (its load varied). The same ``seed`` gives byte-identical files.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux._version import __version__
from csstflux.constants import C_KMS
from csstflux.demo.photometry import (
    PhotProblem,
    draw_photometry,
    mag_header,
    manifest_block,
    true_flux,
)
from csstflux.flags import Flag
from csstflux.grids import INPUT_GRID, TEFF_DOMAIN
from csstflux.io.atomic import atomic_dir, discard_leftovers
from csstflux.io.fits.lamost_writer import write_lrs
from csstflux.io.validate import ARM_RANGE, ARM_SPLIT
from csstflux.library.emulator import InputEmulator, load_emulator
from csstflux.logs import Progress, fmt_path

log = logging.getLogger(__name__)

#: LAMOST LRS pixel grid: log10 λ = LOG10_START + LOG10_STEP · k, k < N_PIX (vacuum Å).
LOG10_START, LOG10_STEP, N_PIX = 3.5682, 1e-4, 3909
FIELD_RADIUS_DEG = 2.5
N_SPID, N_FIBER = 16, 250
#: (lmjd, ra, dec, layout) of the demo plates; plan ids are made from the centres.
PLATES: tuple[tuple[int, float, float, str], ...] = (
    (56210, 0.8, 25.0, "image"), (56633, 120.0, 30.0, "image"),
    (57401, 210.0, 60.0, "image"), (58792, 85.0, 84.0, "coadd"),
    (59130, 330.0, -2.0, "coadd"), (59512, 45.0, 15.0, "coadd"))
SNR_RANGE = (15.0, 150.0)
LOW_SNR = 3.0
#: The ``low_snr_arm`` star: red arm (above ARM_SPLIT) at this S/N, blue arm at LOW_ARM_BLUE.
LOW_ARM_SNR, LOW_ARM_BLUE = 8.0, 80.0
#: The ``broken_arm`` star's red arm is scaled by this; ``wcs_mismatch``'s row by WCS_SHIFT.
BROKEN_ARM_SCALE, WCS_SHIFT = 0.2, 1.05
#: Observed bands (Å) of the header's SNRU, SNRG, SNRR, SNRI, SNRZ.
SNR_BANDS = ((3700, 4000), (4000, 5500), (5500, 6900), (6900, 8500), (8500, 9100))
#: Bumped when the files a seed gives change (part of the cache folder's name).
RELEASE_VERSION = 3
OUTSIDE_FRACTION = 0.03
#: LAMOST mask bits used here.
NODATA, BADPROFILE, BRIGHTSKY = 1 << 5, 1 << 1, 1 << 3
_HC_OVER_K = 1.438777e8  # Å K
_TAPER_A = 25.0
MARKER = ".complete"
MANIFEST = "demo.json"
#: Problems of a broken release: (kind, flag, reader exception name or None).
BROKEN_KINDS: dict[str, tuple[Flag, str | None]] = {
    "truncated": (Flag.TRUNCATED, "TruncatedFileError"),
    "bitflip": (Flag.UNREADABLE, "InputFormatError"),
    "all_nan": (Flag.COVERAGE, None),
    "coverage": (Flag.COVERAGE, None),
    "empty": (Flag.UNREADABLE, "InputFormatError"),
    "not_star": (Flag.NOT_STAR, None),
    "low_snr": (Flag.LOW_SNR, None),
    "low_snr_arm": (Flag.LOW_SNR_ARM, None),
    "broken_arm": (Flag.BAD_INPUT, None),
    "wcs_mismatch": (Flag.BAD_INPUT, None),
}


@dataclass(frozen=True)
class Problem:
    """A demo star a pipeline must flag."""

    obsid: int
    path: str
    kind: str
    """``outside_domain`` or one of :data:`BROKEN_KINDS`."""
    flag: str
    """Name of the :class:`~csstflux.flags.Flag` expected."""
    error: str | None
    """Name of the exception :func:`csstflux.io.formats.lamost.read` raises (None: it reads)."""


@dataclass(frozen=True)
class DemoRelease:
    """A demo release on disk."""

    root: Path
    catalog: Path
    """``root / "catalog.csv"``."""
    n_stars: int
    seed: int
    problems: tuple[Problem, ...]
    model_params: dict[int, tuple[float, float, float]]
    """obsid → (Teff, log g, [Fe/H]) the emulator spectrum was made from."""
    sed_params: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    """obsid → (Teff, log g, [M/H]) of the true SED (the shipped SedGrid there); empty for a
    release without photometry."""
    true_ebv: dict[int, float] = field(default_factory=dict)
    """obsid → true E(B−V), mag."""
    true_scale: dict[int, float] = field(default_factory=dict)
    """obsid → absolute f_λ in SCALING_WINDOW before extinction, erg/s/cm²/Å: the factor
    that multiplies the relative SED (mean 1 there)."""
    true_mag_ab: dict[int, tuple[float, ...]] = field(default_factory=dict)
    """obsid → true AB magnitudes of the reddened, scaled SED in :data:`PHOT_BANDS` order
    (every band, also those its header does not carry; before noise and rounding)."""
    phot_sigma: dict[str, float] = field(default_factory=dict)
    """Band → 1σ of the Gaussian noise added to the header magnitudes (0: noise-free)."""
    phot_problems: tuple[PhotProblem, ...] = ()
    """Header magnitudes made missing or absurd."""

    @property
    def broken(self) -> tuple[Problem, ...]:
        """The deliberately broken files (not the outside-domain stars)."""
        return tuple(p for p in self.problems if p.kind in BROKEN_KINDS)

    def true_flux(self, obsids: list[int] | NDArray[np.int64]) -> NDArray[np.float64]:
        """True observed SEDs (n, 574) on OUTPUT_GRID, erg/s/cm²/Å: the shipped SedGrid at
        :attr:`sed_params`, times :attr:`true_scale`, reddened by :attr:`true_ebv`."""
        return true_flux(np.array([self.sed_params[int(o)] for o in obsids], np.float64),
                         np.array([self.true_scale[int(o)] for o in obsids]),
                         np.array([self.true_ebv[int(o)] for o in obsids]))


def lamost_wavelength() -> NDArray[np.float64]:
    """The demo's LAMOST pixel centres, (3909,) vacuum Å."""
    return np.asarray(10.0 ** (LOG10_START + LOG10_STEP * np.arange(N_PIX)))


def _plan_id(ra: float, dec: float, kind: str) -> str:
    h, rem = divmod(ra / 15.0 * 3600.0, 3600.0)
    sign = "N" if dec >= 0 else "S"
    d, drem = divmod(abs(dec) * 3600.0, 3600.0)
    return (f"HD{int(h):02d}{int(rem // 60):02d}{int(rem % 60):02d}{sign}{int(d):02d}"
            f"{int(drem // 60):02d}{int(drem % 60):02d}{kind}01")


def _field(rng: np.random.Generator, ra0: float, dec0: float, n: int
           ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Positions uniform on the sphere within FIELD_RADIUS_DEG of (ra0, dec0), degrees."""
    r = np.arccos(1 - rng.uniform(0, 1, n) * (1 - np.cos(np.radians(FIELD_RADIUS_DEG))))
    phi = rng.uniform(0, 2 * np.pi, n)
    d0 = np.radians(dec0)
    sin_dec = np.sin(d0) * np.cos(r) + np.cos(d0) * np.sin(r) * np.cos(phi)
    dec = np.arcsin(np.clip(sin_dec, -1, 1))
    dra = np.arctan2(np.sin(phi) * np.sin(r) * np.cos(d0), np.cos(r) - np.sin(d0) * sin_dec)
    return (ra0 + np.degrees(dra)) % 360.0, np.degrees(dec)


def _parameters(rng: np.random.Generator, emu: InputEmulator, n: int
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Model parameters (n, 3) inside the domain, catalogue parameters (n, 3), outside flags."""
    x = emu.gp.x_train * emu.gp.x_scale + emu.gp.x_mean
    x = x[(x[:, 0] >= TEFF_DOMAIN[0]) & (x[:, 0] <= TEFF_DOMAIN[1])]
    base = x[rng.integers(0, len(x), n)]
    jit = base + rng.normal(0, 1, (n, 3)) * np.array([0.015, 0.0, 0.0]) * base[:, :1]
    jit[:, 1:] += rng.normal(0, 0.1, (n, 2))
    ok = emu(jit[:, 0], jit[:, 1], jit[:, 2])[1] & (jit[:, 0] >= TEFF_DOMAIN[0]) & (
        jit[:, 0] <= TEFF_DOMAIN[1])
    model = np.where(ok[:, None], jit, base)
    outside = rng.uniform(size=n) < OUTSIDE_FRACTION
    cat = model.copy()
    cat[outside, 0] = np.where(rng.uniform(size=int(outside.sum())) < 0.5,
                               rng.uniform(4000, 4800, int(outside.sum())),
                               rng.uniform(10000, 12000, int(outside.sum())))
    near = np.argmin(np.abs(x[None, :, 0] - cat[outside, 0][:, None]), axis=1)
    model[outside] = x[near]
    return (np.asarray(np.round(model, 3), np.float64), np.asarray(np.round(cat, 3), np.float64),
            outside)


def _spectra(rng: np.random.Generator, norm: NDArray[np.float64], teff: NDArray[np.float64],
             z: NDArray[np.float64], snr: NDArray[np.float64], red_snr: NDArray[np.float64]
             ) -> tuple[NDArray[Any], ...]:
    """Flux, ivar (n, N_PIX) float32, andmask, ormask (n, N_PIX) int32 and S/N per band
    (n, 5) from the emulator's normalised spectra ``norm`` (n, 2238) on INPUT_GRID.

    ``snr``: S/N of the fainter of the g and r bands; ``red_snr`` (NaN: none) the S/N of the
    red arm (above ARM_SPLIT) instead."""
    n = len(norm)
    wave = lamost_wavelength()
    lo, hi = INPUT_GRID.wavelength[0], INPUT_GRID.wavelength[-1]
    flux = np.empty((n, N_PIX))
    for i in range(n):
        rest = wave / (1.0 + z[i])
        taper = np.clip((rest - lo) / _TAPER_A, 0, 1) * np.clip((hi - rest) / _TAPER_A, 0, 1)
        shape = 1.0 + (np.interp(rest, INPUT_GRID.wavelength, norm[i]) - 1.0) * taper
        planck = rest ** -5 / np.expm1(_HC_OVER_K / (rest * teff[i]))
        flux[i] = np.maximum(shape, 0.02) * planck
    tilt = rng.normal(0, 0.3, (n, 1))
    response = np.exp(-0.5 * ((wave - 5800.0) / 2600.0) ** 2) * (wave / 5500.0) ** tilt
    flux *= response
    g, r = ((wave >= a) & (wave < b) for a, b in SNR_BANDS[1:3])
    level = 10 ** rng.uniform(2, 3.5, (n, 1))
    flux *= level / np.median(flux[:, g], axis=1, keepdims=True)
    faint = np.minimum(level, np.median(flux[:, r], axis=1, keepdims=True))
    sigma = np.sqrt(flux * faint) / snr[:, None]
    red, judged = wave > ARM_SPLIT, (wave > ARM_SPLIT) & (wave < ARM_RANGE[1])
    for k in np.flatnonzero(np.isfinite(red_snr)):
        sigma[k, red] = np.sqrt(flux[k, red] * np.median(flux[k, judged])) / red_snr[k]
    flux = flux + sigma * rng.standard_normal(flux.shape)
    ivar = 1.0 / sigma**2
    andmask = np.zeros((n, N_PIX), np.int32)
    ends = rng.integers(2, 12, (n, 2))
    dichroic = np.flatnonzero((wave >= 5700) & (wave <= 5900))
    runs = rng.integers(3, 12, n)
    starts = rng.integers(dichroic[0], dichroic[-1] - 12, n)
    has_run = rng.uniform(size=n) < 0.5
    for i in range(n):
        andmask[i, :ends[i, 0]] = NODATA
        andmask[i, N_PIX - ends[i, 1]:] = NODATA
        if has_run[i]:
            andmask[i, starts[i]:starts[i] + runs[i]] = BADPROFILE
    ormask = andmask | np.where(np.abs(wave - 5578.5) < 2.5, BRIGHTSKY, 0)[None, :]
    ivar[andmask != 0] = 0.0
    ratio = np.where(ivar > 0, flux * np.sqrt(ivar), np.nan)
    snr_band = np.stack([np.nanmedian(ratio[:, (wave >= a) & (wave < b)], axis=1)
                         for a, b in SNR_BANDS], axis=1)
    return (flux.astype(np.float32), ivar.astype(np.float32), andmask, ormask,
            np.round(snr_band, 2))


def field_plates(n_stars: int, ra0: float, dec0: float) -> tuple[tuple[int, float, float, str],
                                                                   ...]:
    """Plates for a release whose stars are given (``sky``): one per 4000 stars, all centred
    on ``(ra0, dec0)``, layouts alternating image and COADD."""
    n = max(1, -(-n_stars // (N_SPID * N_FIBER)))
    return tuple((60000 + 7 * k, ra0, dec0, "image" if k % 2 == 0 else "coadd")
                 for k in range(n))


def _layout(n_stars: int, rng: np.random.Generator,
            sky: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
            ) -> list[dict[str, Any]]:
    """Plate, spectrograph and fibre of every star (stars spread evenly over the plates);
    positions drawn around each plate's centre, or ``sky`` (ra, dec) in star order."""
    plates = PLATES if sky is None else field_plates(n_stars, float(np.mean(sky[0])),
                                                     float(np.mean(sky[1])))
    plate = np.sort(np.arange(n_stars) % len(plates))
    rows: list[dict[str, Any]] = []
    for k, (lmjd, ra0, dec0, layout) in enumerate(plates):
        idx = np.flatnonzero(plate == k)
        slots = np.sort(rng.choice(N_SPID * N_FIBER, size=idx.size, replace=False))
        ra, dec = (_field(rng, ra0, dec0, idx.size) if sky is None
                   else (np.asarray(sky[0])[idx], np.asarray(sky[1])[idx]))
        planid = _plan_id(ra0, dec0, "B" if layout == "image" else "M")
        for j, s in enumerate(slots):
            spid, fiberid = int(s // N_FIBER) + 1, int(s % N_FIBER) + 1
            rows.append(dict(obsid=100_000_000 + k * 10_000 + int(s), ra=round(float(ra[j]), 6),
                             dec=round(float(dec[j]), 6), lmjd=lmjd, planid=planid, spid=spid,
                             fiberid=fiberid, layout=layout))
    return rows


def _header(row: dict[str, Any], snr_band: NDArray[Any], z: float, cls: str,
            mags: NDArray[np.float64] | None = None) -> dict[str, Any]:
    new = row["layout"] == "coadd"
    return {"OBSID": row["obsid"], "DATA_V": "LAMOST DR9" if new else "LAMOST DR7",
            "LMJD": row["lmjd"], "MJD": row["lmjd"] - 1, "PLANID": row["planid"],
            "RA": row["ra"], "DEC": row["dec"], "FIBERID": row["fiberid"], "SPID": row["spid"],
            "CLASS": cls, "SUBCLASS": "Non" if cls != "STAR" else "G0", "Z": z, "Z_ERR": 1e-5,
            **{f"SNR{b}": float(v) for b, v in zip("UGRIZ", snr_band, strict=True)},
            **({} if mags is None else mag_header(row["layout"], mags)),
            "AUTHOR": "csstflux demo (synthetic spectrum)", "COEFF0": LOG10_START,
            "COEFF1": LOG10_STEP}


def _break(path: Path, kind: str, rng: np.random.Generator) -> None:
    """Damage an already written .gz file in place."""
    raw = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "bitflip":
        b = bytearray(raw)
        b[len(b) // 2 + int(rng.integers(0, 64))] ^= 0x08
        path.write_bytes(bytes(b))
    elif kind == "empty":
        path.write_bytes(b"")


def build_demo_release(root: str | os.PathLike[str], n_stars: int = 2000, seed: int = 0,
                       broken: bool = True, emulator: InputEmulator | None = None,
                       photometry: bool = True, phot_noise: bool = True,
                       sky: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
                       ) -> DemoRelease:
    """Write a demo LAMOST LRS release under ``root`` (see the module docstring).

    Parameters
    ----------
    root
        Release directory (created; existing files with the same names are replaced).
    n_stars
        Number of spectra, >= 7 with ``broken`` (one per broken kind) and <= 6 × 4000.
    seed
        Seed of every random draw: the same seed gives the same files.
    broken
        Include the deliberately broken files of :data:`BROKEN_KINDS`.
    emulator
        Input emulator to use (default: the shipped one).
    photometry
        Write input-catalogue magnitudes into the headers and the photometry truth into the
        manifest. Off, the files differ only by those header keys (the photometry has its own
        random generator).
    sky
        Positions (ra, dec), degrees, one per star, for a field of one's own
        (:func:`csstflux.demo.field.build_field_release`): the plates are then
        :func:`field_plates` and ``n_stars`` may exceed 6 × 4000.
    phot_noise
        Add the Gaussian noise of :data:`PHOT_SIGMA` (False: header magnitudes are the truth
        rounded to 0.01, missing and absurd bands still made).

    Returns
    -------
    DemoRelease
        Also written to ``root/demo.json``.
    """
    n_broken = len(BROKEN_KINDS) if broken else 0
    if sky is not None:
        if np.shape(sky[0]) != (n_stars,) or np.shape(sky[1]) != (n_stars,):
            raise ValueError(f"sky must hold {n_stars} positions")
    elif not n_broken <= n_stars <= len(PLATES) * N_SPID * N_FIBER or n_stars < 1:
        raise ValueError(f"n_stars must be in {max(n_broken, 1)}..{len(PLATES) * 4000}, "
                         f"got {n_stars}")
    rng = np.random.default_rng(seed)
    emu = load_emulator() if emulator is None else emulator
    out = Path(root)
    rows = _layout(n_stars, rng, sky)
    model, cat, outside = _parameters(rng, emu, n_stars)
    rv = np.round(rng.normal(0, 40, n_stars), 2)
    z = np.array([float(f"{v / C_KMS:.9g}") for v in rv])
    snr = np.round(10 ** rng.uniform(np.log10(SNR_RANGE[0]), np.log10(SNR_RANGE[1]), n_stars), 2)
    kinds = [""] * n_stars
    if broken:  # spread over plates, so both layouts carry broken files
        for kind, i in zip(BROKEN_KINDS, rng.choice(n_stars, n_broken, replace=False),
                           strict=True):
            kinds[int(i)] = kind
            outside[i] = False
    snr[[i for i, k in enumerate(kinds) if k == "low_snr"]] = LOW_SNR
    red_snr = np.full(n_stars, np.nan)
    for i in (i for i, k in enumerate(kinds) if k == "low_snr_arm"):
        snr[i], red_snr[i] = LOW_ARM_BLUE, LOW_ARM_SNR
    cat[~outside, 0] = model[~outside, 0]
    # true SED at the model parameters; outside-domain stars at their catalogue Teff
    phot = (draw_photometry(seed, np.where(outside[:, None], np.c_[cat[:, :1], model[:, 1:]],
                                       model), [r["layout"] for r in rows], phot_noise)
            if photometry else None)
    # one emulator call for all stars: its domain check builds a Delaunay triangulation (0.7 s)
    norm_all = emu(model[:, 0], model[:, 1], model[:, 2])[0]
    wave = lamost_wavelength()
    problems: list[Problem] = []
    catalog_rows: list[list[Any]] = []
    with Progress("writing demo spectra", n_stars, unit="files", logger=log) as progress:
        for a in range(0, n_stars, 256):
            b = min(a + 256, n_stars)
            flux, ivar, andmask, ormask, snr_band = _spectra(rng, norm_all[a:b], cat[a:b, 0],
                                                             z[a:b], snr[a:b], red_snr[a:b])
            for j, i in enumerate(range(a, b)):
                row, kind = rows[i], kinds[i]
                cls = "GALAXY" if kind == "not_star" else "STAR"
                f, iv, row_wave = flux[j], ivar[j], wave
                if kind == "all_nan":
                    f = np.full_like(f, np.nan)
                elif kind == "coverage":
                    iv = np.where(wave > 6000.0, 0.0, iv).astype(np.float32)
                elif kind == "broken_arm":   # S/N kept: the arm's calibration, not its noise
                    f = np.where(wave > ARM_SPLIT, f * BROKEN_ARM_SCALE, f).astype(np.float32)
                    iv = np.where(wave > ARM_SPLIT, iv / BROKEN_ARM_SCALE**2, iv).astype(np.float32)
                elif kind == "wcs_mismatch":   # the header still states the LAMOST grid
                    row_wave = wave * WCS_SHIFT
                rel = (f"{row['lmjd']}/{row['planid']}/spec-{row['lmjd']}-{row['planid']}"
                       f"_sp{row['spid']:02d}-{row['fiberid']:03d}.fits.gz")
                path = out / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                write_lrs(path, row_wave, f, iv, andmask[j], ormask[j],
                          _header(row, snr_band[j], float(z[i]), cls,
                                  None if phot is None else phot.catalog[i]),
                          layout=row["layout"])
                _break(path, kind, rng)
                if kind:
                    flag, err = BROKEN_KINDS[kind]
                    problems.append(Problem(row["obsid"], str(path), kind, flag.name or "", err))
                elif outside[i]:
                    problems.append(Problem(row["obsid"], str(path), "outside_domain",
                                            Flag.OUTSIDE_DOMAIN.name or "", None))
                catalog_rows.append([row["obsid"], row["ra"], row["dec"], snr_band[j, 1], *cat[i],
                                     rv[i], cls, row["lmjd"], row["planid"], row["spid"],
                                     row["fiberid"]])
            progress.update(b - a)
    catalog = out / "catalog.csv"
    with open(catalog, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["obsid", "ra", "dec", "snrg", "teff", "logg", "feh", "rv", "class",
                         "lmjd", "planid", "spid", "fiberid"])
        writer.writerows(catalog_rows)
    obsid = [r["obsid"] for r in rows]
    truth: dict[str, Any] = {} if phot is None else dict(
        sed_params={o: _triple(phot.sed_params[i]) for i, o in enumerate(obsid)},
        true_ebv={o: float(phot.ebv[i]) for i, o in enumerate(obsid)},
        true_scale={o: float(phot.scale[i]) for i, o in enumerate(obsid)},
        true_mag_ab={o: tuple(round(float(v), 6) for v in phot.true_ab[i])
                     for i, o in enumerate(obsid)},
        phot_sigma=phot.sigma,
        phot_problems=tuple(PhotProblem(obsid[i], b, k, off) for i, b, k, off in phot.problems))
    release = DemoRelease(root=out, catalog=catalog, n_stars=n_stars, seed=seed,
                          problems=tuple(problems),
                          model_params={o: _triple(model[i]) for i, o in enumerate(obsid)},
                          **truth)
    _save_manifest(release, broken, emu)
    return release


def _triple(v: Any) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


#: Per-star photometry truth in the manifest (obsid → value).
_TRUTH = ("sed_params", "true_ebv", "true_scale", "true_mag_ab")


def _save_manifest(release: DemoRelease, broken: bool, emu: InputEmulator) -> None:
    doc: dict[str, Any] = {
        "n_stars": release.n_stars, "seed": release.seed, "broken": broken,
        "emulator_sha256": emu.provenance.get("sha256"),
        "problems": [{**asdict(p), "path": os.path.relpath(p.path, release.root)}
                     for p in release.problems],
        "model_params": {str(k): v for k, v in release.model_params.items()}}
    if release.true_ebv:
        doc["photometry"] = manifest_block(release.phot_sigma, release.phot_problems)
        for name in _TRUTH:
            doc[name] = {str(k): v for k, v in getattr(release, name).items()}
    (release.root / MANIFEST).write_text(json.dumps(doc), encoding="utf-8")


def load_demo_release(root: str | os.PathLike[str]) -> DemoRelease:
    """The :class:`DemoRelease` of a release written by :func:`build_demo_release`."""
    out = Path(root)
    doc = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    phot = doc.get("photometry", {})
    conv: dict[str, Callable[[Any], Any]] = {"sed_params": _triple, "true_ebv": float,
                                             "true_scale": float,
                                             "true_mag_ab": lambda v: tuple(map(float, v))}
    return DemoRelease(root=out, catalog=out / "catalog.csv", n_stars=int(doc["n_stars"]),
                       seed=int(doc["seed"]),
                       problems=tuple(Problem(**{**p, "path": str(out / p["path"])})
                                      for p in doc["problems"]),
                       model_params={int(k): _triple(v) for k, v in doc["model_params"].items()},
                       **{name: {int(k): conv[name](v) for k, v in doc.get(name, {}).items()}
                          for name in _TRUTH},
                       phot_sigma={k: float(v) for k, v in phot.get("sigma", {}).items()},
                       phot_problems=tuple(PhotProblem(**p) for p in phot.get("problems", [])))


def default_cache_dir() -> Path:
    """``$CSSTFLUX_CACHE`` if set, else ``~/.cache/csstflux``."""
    env = os.environ.get("CSSTFLUX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "csstflux"


def demo_release(cache_dir: str | os.PathLike[str] | None = None, n_stars: int = 2000,
                 seed: int = 0, broken: bool = True) -> DemoRelease:
    """The demo release, built once under ``cache_dir`` and reused afterwards.

    The release lives in ``{cache_dir}/demo-{version}-r{RELEASE_VERSION}-{n_stars}``
    (``-s{seed}`` appended for a seed other than 0, ``-clean`` without broken files);
    ``cache_dir`` defaults to :func:`default_cache_dir`. It is built in a temporary sibling
    directory whose completion marker is written last and then put in place
    (:func:`csstflux.io.atomic.atomic_dir`), so an interrupted build is never reused: it is
    rebuilt. Two processes building the same release at once are not guarded against.
    """
    base = default_cache_dir() if cache_dir is None else Path(cache_dir)
    name = (f"demo-{__version__}-r{RELEASE_VERSION}-{n_stars}" + (f"-s{seed}" if seed else "")
            + ("" if broken else "-clean"))
    root = base / name
    if (root / MARKER).is_file() and (root / MANIFEST).is_file():
        return load_demo_release(root)
    discard_leftovers(root)   # of interrupted builds (concurrent ones are not supported)
    log.info("building the demo release of %d stars in %s (once; reused afterwards)",
             n_stars, fmt_path(root))
    with atomic_dir(root) as tmp:
        build_demo_release(tmp, n_stars=n_stars, seed=seed, broken=broken)
        (tmp / MARKER).write_text("complete\n", encoding="utf-8")
    return load_demo_release(root)
