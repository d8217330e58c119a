"""Format-independent checks of whether a spectrum as read can be used, and of a predicted SED.

Arrays in, numbers and human-readable problems out; nothing here reads a file or a setting.

- :func:`coverage_problems`: the good pixels must cover the model input range (the pipeline
  flags ``COVERAGE``; ``csstflux inspect`` lists the problems).
- Arms. A LAMOST LRS spectrum is the blue and the red arm of the spectrograph joined at the
  dichroic, :data:`ARM_SPLIT` (observed frame). :func:`arm_snr` gives each arm's S/N inside
  :data:`ARM_RANGE` (the header's SNRG for the blue arm and SNRR for the red one, the median
  of flux/σ over the arm's good pixels where the header lacks them): the pipeline flags
  ``LOW_SNR_ARM`` when one is below its minimum. :func:`broken_arm_problems` compares the
  median fluxes in the :data:`JUNCTION_WIDTH` Å either side of the split: a ratio beyond
  :data:`MAX_JUNCTION_RATIO` either way, or an arm whose median flux is not positive, is a
  broken arm (``BAD_INPUT``). On the real DR6–DR9 files the ratio is 0.81–0.99.
- :func:`wcs_problems`: the wavelength row against the header WCS, measured by the reader
  (``meta["wcs_mismatch_pixels"]``); more than :data:`MAX_WCS_MISMATCH_PIXELS` is
  ``BAD_INPUT``. The real files agree to 0.0014 pixel (float32 rounding of the row).
- :func:`has_sky_position`: a catalogue row's RA in [0, 360) and Dec in [-90, 90].
- :func:`mask_nonpositive_sed`: SED pixels that are not positive become NaN, counted per star;
  the pipeline flags ``NEGATIVE_SED`` only when one lies inside a CSST band.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.containers import Spectrum
from csstflux.grids import BANDS, INPUT_GRID, OUTPUT_GRID, Band
from csstflux.stats import nanmedian_rows

#: Observed wavelength (Å) of the LAMOST dichroic: blue arm below, red arm above.
ARM_SPLIT = 5800.0
#: Observed range (Å) in which the arms are judged: the model input range.
ARM_RANGE: tuple[float, float] = (INPUT_GRID.start, INPUT_GRID.stop)
#: Width (Å) of the windows either side of :data:`ARM_SPLIT` whose median fluxes are compared.
JUNCTION_WIDTH = 100.0
#: Largest factor between those two medians (either way) of a sound spectrum.
MAX_JUNCTION_RATIO = 3.0
#: Fewest good pixels a window needs for its median to count (else the value is NaN).
MIN_WINDOW_PIXELS = 10
#: Largest disagreement between the wavelength row and the header WCS, in pixels.
MAX_WCS_MISMATCH_PIXELS = 0.1
#: Header keys (``meta`` names) of each arm's S/N, as LAMOST writes them.
ARM_SNR_KEYS = {"blue": "snrg", "red": "snrr"}


def coverage_problems(spectrum: Spectrum, lo: float = 4000.0, hi: float = 7000.0,
                      min_good_fraction: float = 0.8) -> list[str]:
    """Human-readable reasons why ``spectrum`` does not cover ``lo``–``hi``; empty if it does.

    Parameters
    ----------
    spectrum
        The spectrum to check: ``wavelength`` (n_pix,) vacuum Å, ``mask`` (n_pix,) True = bad.
    lo, hi
        Vacuum wavelength range (Å) that the good pixels must span.
    min_good_fraction
        Smallest acceptable fraction of the pixels inside ``lo``–``hi`` that are good.

    Returns
    -------
    list of str
        One sentence per problem: no good pixel at all, good pixels starting above ``lo`` or
        ending below ``hi``, no pixel inside the range, or too small a fraction of good pixels
        inside it.
    """
    return coverage_problems_batch(spectrum.wavelength, spectrum.mask, lo, hi,
                                   min_good_fraction)[0]


def coverage_problems_batch(wavelength: ArrayLike, mask: ArrayLike, lo: float = 4000.0,
                            hi: float = 7000.0, min_good_fraction: float = 0.8
                            ) -> list[list[str]]:
    """:func:`coverage_problems` of a batch: ``wavelength`` (n_pix,) or (n_spec, n_pix) Å,
    ``mask`` (n_spec, n_pix) (or (n_pix,), one spectrum); one list of problems per spectrum."""
    if not hi > lo:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    if not 0.0 <= min_good_fraction <= 1.0:
        raise ValueError(f"min_good_fraction must lie in [0, 1], got {min_good_fraction}")
    wave = np.atleast_2d(np.asarray(wavelength, dtype=np.float64))
    good = ~np.atleast_2d(np.asarray(mask, dtype=bool)) & np.isfinite(wave)
    any_good = np.asarray(good.any(axis=1))
    with np.errstate(invalid="ignore"):
        w_min = np.where(good, wave, np.inf).min(axis=1, initial=np.inf)
        w_max = np.where(good, wave, -np.inf).max(axis=1, initial=-np.inf)
        inside = np.broadcast_to((wave >= lo) & (wave <= hi), good.shape)
    n_inside = inside.sum(axis=1)
    n_good_inside = (good & inside).sum(axis=1)
    out: list[list[str]] = []
    for k in range(good.shape[0]):
        if not any_good[k]:
            out.append(["no good pixels"])
            continue
        problems: list[str] = []
        if w_min[k] > lo or w_max[k] < hi:
            problems.append(f"good pixels span {float(w_min[k]):.1f}-{float(w_max[k]):.1f} A, "
                            f"not the whole of {lo:.1f}-{hi:.1f} A")
        if n_inside[k] == 0:
            problems.append(f"no pixels inside {lo:.1f}-{hi:.1f} A")
        else:
            frac = float(n_good_inside[k]) / int(n_inside[k])
            if frac < min_good_fraction:
                problems.append(f"only {100 * frac:.1f}% of the {int(n_inside[k])} pixels in "
                                f"{lo:.1f}-{hi:.1f} A are good (need "
                                f"{100 * min_good_fraction:.0f}%)")
        out.append(problems)
    return out


# --- arms ------------------------------------------------------------------------------------

def window_median(wavelength: ArrayLike, values: ArrayLike, mask: ArrayLike, lo: float,
                  hi: float) -> NDArray[np.float64]:
    """Median of ``values`` over the good pixels with ``lo <= wavelength < hi``.

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Observed wavelength, Å, shared by the batch or one row per spectrum.
    values : (n_pix,) or (n_spec, n_pix) float
        Per-pixel values (flux, flux/σ...).
    mask : like ``values``, bool
        True = bad pixel; non-finite values count as bad too.
    lo, hi
        Window, Å.

    Returns
    -------
    ndarray of float64, shape () or (n_spec,)
        NaN where fewer than :data:`MIN_WINDOW_PIXELS` good pixels lie in the window. Each is
        what ``np.median`` of the spectrum's good pixels in the window gives, to the bit
        (:func:`~csstflux.stats.nanmedian_rows`).
    """
    w = np.asarray(wavelength, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    one = v.ndim == 1 and w.ndim == 1
    inside = (w >= lo) & (w < hi)
    cols = np.flatnonzero(inside if w.ndim == 1 else inside.any(axis=0))
    v = np.atleast_2d(v[..., cols])
    bad = np.atleast_2d(np.asarray(mask, dtype=bool)[..., cols]) | ~np.isfinite(v)
    if w.ndim == 2:
        bad |= ~inside[:, cols]
    n_good = (~bad).sum(axis=-1)
    med = np.where(n_good >= MIN_WINDOW_PIXELS, nanmedian_rows(v, bad), np.nan)
    return np.asarray(med[0] if one else med, dtype=np.float64)


def arm_windows(split: float = ARM_SPLIT, arm_range: tuple[float, float] = ARM_RANGE
                ) -> dict[str, tuple[float, float]]:
    """``{"blue": (lo, hi), "red": (lo, hi)}``: each arm's part of ``arm_range``, Å."""
    return {"blue": (arm_range[0], split), "red": (split, arm_range[1])}


def arm_snr_from_data(wavelength: ArrayLike, flux: ArrayLike, error: ArrayLike,
                      mask: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """Each arm's median flux/σ over its good pixels inside :data:`ARM_RANGE`.

    ``wavelength`` (n_pix,) observed Å; ``flux``, ``error`` (n_pix,) or (n_spec, n_pix) in
    any one unit (σ NaN where unknown); ``mask`` like ``flux``, True = bad. Returns
    ``{"blue": snr, "red": snr}``, each () or (n_spec,), NaN where an arm has too few good
    pixels.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(flux, dtype=np.float64) / np.asarray(error, dtype=np.float64)
    return {arm: window_median(wavelength, ratio, mask, lo, hi)
            for arm, (lo, hi) in arm_windows().items()}


@dataclass(frozen=True)
class ArmSNR:
    """S/N of each arm of one spectrum inside :data:`ARM_RANGE` and where it came from."""

    blue: float
    red: float
    blue_source: str
    """``"header SNRG"`` or ``"data"``."""
    red_source: str
    """``"header SNRR"`` or ``"data"``."""

    def low(self, min_snr: float) -> list[str]:
        """One sentence per arm whose S/N is below ``min_snr`` (NaN: unknown, not low)."""
        out = []
        for arm in ("blue", "red"):
            v, src = getattr(self, arm), getattr(self, f"{arm}_source")
            if np.isfinite(v) and v < min_snr:
                out.append(f"{arm} arm S/N {v:.1f} ({src}) below {min_snr:g}")
        return out


def arm_snr(spectrum: Spectrum) -> ArmSNR:
    """Each arm's S/N: the header's (``meta["snrg"]``, ``meta["snrr"]``) where the reader
    found it (a negative value, such as LASP's -9999, counts as missing), else
    :func:`arm_snr_from_data` on the spectrum's observed wavelengths."""
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    data: dict[str, NDArray[np.float64]] | None = None
    for arm, key in ARM_SNR_KEYS.items():
        v = spectrum.meta.get(key)
        if v is not None and np.isfinite(v) and v >= 0:
            values[arm], sources[arm] = float(v), f"header {key.upper()}"
            continue
        if data is None:
            data = arm_snr_from_data(spectrum.wavelength, spectrum.flux, spectrum.error,
                                     spectrum.mask)
        values[arm], sources[arm] = float(data[arm]), "data"
    return ArmSNR(values["blue"], values["red"], sources["blue"], sources["red"])


def junction_fluxes(wavelength: ArrayLike, flux: ArrayLike, mask: ArrayLike
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Median flux in the :data:`JUNCTION_WIDTH` Å below and above :data:`ARM_SPLIT`
    (shapes as in :func:`window_median`; NaN where a window has too few good pixels)."""
    return (window_median(wavelength, flux, mask, ARM_SPLIT - JUNCTION_WIDTH, ARM_SPLIT),
            window_median(wavelength, flux, mask, ARM_SPLIT, ARM_SPLIT + JUNCTION_WIDTH))


def broken_arm_problems(spectrum: Spectrum, max_ratio: float = MAX_JUNCTION_RATIO
                        ) -> list[str]:
    """Reasons to think one arm of ``spectrum`` is broken; empty when none is found.

    An arm whose median flux inside :data:`ARM_RANGE` is not positive, or median fluxes
    either side of the junction whose ratio (red / blue) is above ``max_ratio``, below
    ``1 / max_ratio`` or not positive. Windows with too few good pixels are not judged.
    """
    return broken_arm_problems_batch(spectrum.wavelength, spectrum.flux, spectrum.mask,
                                     max_ratio)[0]


def broken_arm_problems_batch(wavelength: ArrayLike, flux: ArrayLike, mask: ArrayLike,
                              max_ratio: float = MAX_JUNCTION_RATIO) -> list[list[str]]:
    """:func:`broken_arm_problems` of a batch: ``wavelength`` (n_pix,) or (n_spec, n_pix)
    observed Å, ``flux`` and ``mask`` (n_spec, n_pix) (or (n_pix,), one spectrum); one list
    of problems per spectrum."""
    if not max_ratio > 1:
        raise ValueError(f"max_ratio must be > 1, got {max_ratio}")
    f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    m = np.atleast_2d(np.asarray(mask, dtype=bool))
    levels = {arm: window_median(wavelength, f, m, lo, hi)
              for arm, (lo, hi) in arm_windows().items()}
    blue, red = junction_fluxes(wavelength, f, m)
    out: list[list[str]] = []
    for k in range(f.shape[0]):
        problems = []
        for arm, (lo, hi) in arm_windows().items():
            level = float(levels[arm][k])
            if level <= 0:
                problems.append(f"{arm} arm continuum not positive (median flux {level:.4g} in "
                                f"{lo:.0f}-{hi:.0f} A)")
        b, r = float(blue[k]), float(red[k])
        if np.isfinite(b) and np.isfinite(r) and not problems:
            ratio = r / b if b != 0 else np.inf
            if not 1 / max_ratio <= ratio <= max_ratio:
                problems.append(
                    f"broken arm: median flux {b:.4g} in {ARM_SPLIT - JUNCTION_WIDTH:.0f}-"
                    f"{ARM_SPLIT:.0f} A against {r:.4g} in {ARM_SPLIT:.0f}-"
                    f"{ARM_SPLIT + JUNCTION_WIDTH:.0f} A (red/blue {ratio:.3g}, allowed "
                    f"{1 / max_ratio:.3g}-{max_ratio:g})")
        out.append(problems)
    return out


def wcs_problems(spectrum: Spectrum, max_pixels: float = MAX_WCS_MISMATCH_PIXELS) -> list[str]:
    """The wavelength row disagreeing with the header WCS by more than ``max_pixels``, as the
    reader measured it (``meta["wcs_mismatch_pixels"]``, ``meta["wcs"]``: the keys used);
    nothing to say when the reader found no WCS."""
    mismatch = spectrum.meta.get("wcs_mismatch_pixels")
    if mismatch is None or not mismatch > max_pixels:
        return []
    return [f"wavelength row disagrees with the header WCS ({spectrum.meta.get('wcs')}) by up "
            f"to {mismatch:.3g} pixels (allowed {max_pixels:g})"]


def bad_input_problems(spectrum: Spectrum) -> list[str]:
    """Every reason why ``spectrum`` is inconsistent with itself: a broken arm
    (:func:`broken_arm_problems`) or a wavelength row against its WCS (:func:`wcs_problems`).
    """
    return [*wcs_problems(spectrum), *broken_arm_problems(spectrum)]


# --- catalogue rows ---------------------------------------------------------------------------

def has_sky_position(ra: ArrayLike, dec: ArrayLike) -> NDArray[np.bool_]:
    """True where ``ra`` is in [0, 360) and ``dec`` in [-90, 90] degrees (NaN fails): a
    catalogue row's position that can be indexed; other rows are flagged ``BAD_COORDS``."""
    r, d = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray((r >= 0) & (r < 360) & (d >= -90) & (d <= 90))


# --- predicted SEDs ----------------------------------------------------------------------------

def in_bands(wavelength: ArrayLike, bands: Iterable[Band] | Mapping[str, Band] = BANDS
             ) -> NDArray[np.bool_]:
    """True for each wavelength inside at least one of ``bands`` (default: GU, GV, GI)."""
    items = bands.values() if isinstance(bands, Mapping) else bands
    w = np.asarray(wavelength, dtype=np.float64)
    out = np.zeros(w.shape, dtype=bool)
    for band in items:
        out |= band.mask(w)
    return out


def mask_nonpositive_sed(sed: ArrayLike, sed_err: ArrayLike,
                         wavelength: ArrayLike = OUTPUT_GRID.wavelength
                         ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.int64],
                                    NDArray[np.bool_]]:
    """SED pixels that are finite but not positive, set to NaN in ``sed`` and ``sed_err``.

    Parameters
    ----------
    sed, sed_err : (n_star, n_wave) float
        Scaled SEDs and their 1σ (NaN where not predicted); not modified.
    wavelength : (n_wave,) float
        Their wavelengths, Å (default :data:`~csstflux.grids.OUTPUT_GRID`).

    Returns
    -------
    sed, sed_err : (n_star, n_wave), the input dtype
        Copies with those pixels NaN.
    n_masked : (n_star,) int64
        Pixels set to NaN per star.
    in_band : (n_star,) bool
        True where one of them lies inside GU, GV or GI (:data:`~csstflux.grids.BANDS`).
    """
    s, e = np.array(sed, copy=True), np.array(sed_err, copy=True)
    if s.shape != e.shape or s.ndim != 2:
        raise ValueError(f"sed and sed_err must be equal (n_star, n_wave), got {s.shape}, "
                         f"{e.shape}")
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(s) & (s <= 0)
    s[bad] = np.nan
    e[bad] = np.nan
    in_band = np.any(bad & in_bands(wavelength)[None, :], axis=1)
    return s, e, bad.sum(axis=1).astype(np.int64), in_band
