"""Accuracy metrics of predicted SEDs (paper eqs. 2–3, Figs. 2–5).

* relative residual (eq. 2): ``r = (F̂ − F) / F`` per pixel;
* RMSAE (eq. 3): ``sqrt(mean(r²))`` over the unmasked pixels of each spectrum;
* summaries as the paper reports them: the median and 1σ of r as functions of wavelength across
  a set of spectra (Figs. 2–3), "typical" values per band (the median over a band's pixels of
  those curves), and the same per bin of Teff or SNR;
* coverage: the fraction of residuals inside a predicted ±σ (0.683 for calibrated Gaussian σ).

1σ is given twice: ``sigma`` is the robust half-width (P84 − P16) / 2 and ``std`` the plain
standard deviation (ddof = 0); they agree for Gaussian residuals and part ways with outliers.
Statistics over an empty set are NaN (counts say why); masked pixels never enter any of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import BANDS, Band
from csstflux.spectra._common import BoolArray, FloatArray, as_batch, clean, like_flux, unbatch

__all__ = [
    "BinnedSummary",
    "Summary",
    "band_summary",
    "binned_summary",
    "coverage",
    "pixel_summary",
    "relative_residual",
    "rmsae",
]


@dataclass(frozen=True)
class Summary:
    """Median and 1σ of residuals; every field has the same shape (scalar or per pixel)."""

    median: FloatArray
    """Median of r."""
    sigma: FloatArray
    """Robust 1σ: half the 16th–84th percentile range."""
    std: FloatArray
    """Plain standard deviation (ddof = 0)."""
    count: NDArray[np.int64]
    """Number of unmasked values (per pixel: spectra; pooled: spectrum-pixels)."""


@dataclass(frozen=True)
class BinnedSummary:
    """Band summaries per bin of a per-spectrum quantity (Teff, SNR)."""

    edges: FloatArray
    """Bin edges (n_bins + 1,); bins are [lo, hi), the last one [lo, hi]."""
    count: NDArray[np.int64]
    """Spectra per bin (n_bins,)."""
    bands: tuple[str, ...]
    """Band names, the order of the last axis below."""
    median: FloatArray
    """(n_bins, n_bands) band medians (see :func:`band_summary`)."""
    sigma: FloatArray
    """(n_bins, n_bands) robust 1σ."""
    std: FloatArray
    """(n_bins, n_bands) plain standard deviation."""
    pixel_median: FloatArray
    """(n_bins, n_pix) median of r at each wavelength (Figs. 2–3, left)."""
    pixel_sigma: FloatArray
    """(n_bins, n_pix) robust 1σ of r at each wavelength (Figs. 2–3, right)."""

    def to_dict(self) -> dict[str, object]:
        """Plain dict of arrays, for stores and JSON (``.tolist()`` the arrays)."""
        return {
            "edges": self.edges,
            "count": self.count,
            "bands": list(self.bands),
            "median": self.median,
            "sigma": self.sigma,
            "std": self.std,
            "pixel_median": self.pixel_median,
            "pixel_sigma": self.pixel_sigma,
        }


def relative_residual(
    predicted: ArrayLike, truth: ArrayLike, mask: ArrayLike | None = None
) -> tuple[FloatArray, BoolArray]:
    """Relative residual of eq. (2), ``r = (F̂ − F) / F``.

    Parameters
    ----------
    predicted, truth : (n_pix,) or (n_spec, n_pix) float
        Predicted and true SEDs, same unit.
    mask : same shape, bool, optional
        True = pixel not compared.

    Returns
    -------
    r : same shape, float64
        Dimensionless; 0.0 where masked.
    mask : same shape, bool
        Input mask plus non-finite values and truth ≤ 0.
    """
    p2, squeeze = as_batch(predicted, "predicted")
    t2, _ = as_batch(truth, "truth")
    if p2.shape != t2.shape:
        raise ValueError(f"predicted has shape {p2.shape}, truth {t2.shape}")
    p2, _, bad = clean(p2, None, mask)
    t2, _, bad = clean(t2, None, bad)
    bad = bad | ~(t2 > 0)
    r = np.where(bad, 0.0, (p2 - t2) / np.where(bad, 1.0, t2))
    return unbatch(r, squeeze), unbatch(bad, squeeze)


def rmsae(residual: ArrayLike, mask: ArrayLike | None = None) -> FloatArray:
    """Root mean square relative error of eq. (3) per spectrum.

    Parameters
    ----------
    residual : (n_pix,) or (n_spec, n_pix) float
        Relative residuals r.
    mask : same shape, bool, optional

    Returns
    -------
    float64 array of shape () or (n_spec,); NaN for a spectrum with no unmasked pixel.
    """
    r2, squeeze = as_batch(residual, "residual")
    r2, _, bad = clean(r2, None, mask)
    n = (~bad).sum(axis=1)
    out = np.where(n > 0, np.sqrt((r2**2).sum(axis=1) / np.maximum(n, 1)), np.nan)
    return out[0, ...] if squeeze else out


def pixel_summary(residual: ArrayLike, mask: ArrayLike | None = None) -> Summary:
    """Median and 1σ of r at each pixel, across spectra.

    Parameters
    ----------
    residual : (n_spec, n_pix) float
    mask : same shape, bool, optional

    Returns
    -------
    Summary with (n_pix,) fields; NaN where no spectrum has the pixel unmasked.
    """
    r2, _ = as_batch(residual, "residual")
    r2, _, bad = clean(r2, None, mask)
    return _summarise(np.where(bad, np.nan, r2), axis=0)


def band_summary(
    residual: ArrayLike,
    wavelength: ArrayLike,
    mask: ArrayLike | None = None,
    bands: Mapping[str, Band] = BANDS,
    pooled: bool = False,
) -> dict[str, Summary]:
    """Median and 1σ of r per band.

    Parameters
    ----------
    residual : (n_pix,) or (n_spec, n_pix) float
    wavelength : (n_pix,) float
        Pixel centres, Å.
    mask : same shape as residual, bool, optional
    bands : mapping of name to :class:`~csstflux.grids.Band`
    pooled : bool
        False (the paper's "typical" values): compute median, sigma and std at each pixel across
        spectra, then take the median of each over the band's pixels; ``count`` is the number
        of band pixels with at least one value. Needs several spectra. True: pool every
        unmasked (spectrum, pixel) value of the band; ``count`` is the number of values.

    Returns
    -------
    dict band name → Summary of scalars (0-d arrays).
    """
    r2, _ = as_batch(residual, "residual")
    r2, _, bad = clean(r2, None, mask)
    w = np.asarray(wavelength, dtype=np.float64)
    if w.shape != (r2.shape[1],):
        raise ValueError(f"wavelength has shape {w.shape}, expected ({r2.shape[1]},)")
    vals = np.where(bad, np.nan, r2)
    per_pixel = None if pooled else _summarise(vals, axis=0)
    out: dict[str, Summary] = {}
    for name, band in bands.items():
        inband = band.mask(w)
        if pooled:
            out[name] = _summarise(vals[:, inband].ravel(), axis=0)
            continue
        assert per_pixel is not None
        have = inband & (per_pixel.count > 0)
        out[name] = Summary(
            median=_nanmedian(per_pixel.median[have]),
            sigma=_nanmedian(per_pixel.sigma[have]),
            std=_nanmedian(per_pixel.std[have]),
            count=np.asarray(int(have.sum()), dtype=np.int64),
        )
    return out


def binned_summary(
    residual: ArrayLike,
    wavelength: ArrayLike,
    values: ArrayLike,
    bins: ArrayLike,
    mask: ArrayLike | None = None,
    bands: Mapping[str, Band] = BANDS,
    pooled: bool = False,
) -> BinnedSummary:
    """:func:`band_summary` and :func:`pixel_summary` per bin of a per-spectrum quantity.

    Parameters
    ----------
    residual : (n_spec, n_pix) float
    wavelength : (n_pix,) float
        Pixel centres, Å.
    values : (n_spec,) float
        The binned quantity (Teff in K, SNR, ...); spectra outside every bin are left out.
    bins : (n_bins + 1,) float
        Increasing bin edges; bins are [lo, hi) except the last, [lo, hi].
    mask : same shape as residual, bool, optional
    bands, pooled
        As in :func:`band_summary`.

    Returns
    -------
    BinnedSummary
    """
    r2, _ = as_batch(residual, "residual")
    r2, _, bad = clean(r2, None, mask)
    v = np.asarray(values, dtype=np.float64)
    edges = np.asarray(bins, dtype=np.float64)
    if v.shape != (r2.shape[0],):
        raise ValueError(f"values has shape {v.shape}, expected ({r2.shape[0]},)")
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("bins must be at least two strictly increasing edges")
    n_bins, n_pix, names = edges.size - 1, r2.shape[1], tuple(bands)
    which = np.searchsorted(edges, v, side="right") - 1
    which[v == edges[-1]] = n_bins - 1
    which[~np.isfinite(v)] = -1
    count = np.zeros(n_bins, dtype=np.int64)
    stats = {k: np.full((n_bins, len(names)), np.nan) for k in ("median", "sigma", "std")}
    pix_med = np.full((n_bins, n_pix), np.nan)
    pix_sig = np.full((n_bins, n_pix), np.nan)
    for b in range(n_bins):
        rows = which == b
        count[b] = int(rows.sum())
        if count[b] == 0:
            continue
        per_pixel = _summarise(np.where(bad[rows], np.nan, r2[rows]), axis=0)
        pix_med[b], pix_sig[b] = per_pixel.median, per_pixel.sigma
        summ = band_summary(r2[rows], wavelength, bad[rows], bands, pooled)
        for i, name in enumerate(names):
            stats["median"][b, i] = summ[name].median
            stats["sigma"][b, i] = summ[name].sigma
            stats["std"][b, i] = summ[name].std
    return BinnedSummary(
        edges=edges,
        count=count,
        bands=names,
        median=stats["median"],
        sigma=stats["sigma"],
        std=stats["std"],
        pixel_median=pix_med,
        pixel_sigma=pix_sig,
    )


def coverage(
    residual: ArrayLike,
    sigma: ArrayLike,
    mask: ArrayLike | None = None,
    axis: int | None = None,
) -> FloatArray:
    """Fraction of residuals inside the predicted uncertainty, ``|r| < σ``.

    Parameters
    ----------
    residual : (n_pix,) or (n_spec, n_pix) float
    sigma : broadcastable to residual, float
        Predicted 1σ (same unit as r); non-finite or non-positive σ masks the pixel.
    mask : same shape as residual, bool, optional
    axis : None or int
        None: one fraction over all unmasked values; 0: per pixel across spectra (2-D input).

    Returns
    -------
    float64 array; NaN where nothing is unmasked. 0.683 expected for calibrated Gaussian σ.
    """
    inside, bad, squeeze = _inside(residual, sigma, mask)
    ax = None if axis is None else (axis if not squeeze else axis + 1)
    n = (~bad).sum(axis=ax)
    k = inside.sum(axis=ax)
    return np.asarray(np.where(n > 0, k / np.maximum(n, 1), np.nan))


def coverage_counts(residual: ArrayLike, sigma: ArrayLike, mask: ArrayLike | None = None
                    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per spectrum, how many unmasked pixels have ``|r| < σ`` and how many are unmasked (the
    numerator and denominator of :func:`coverage`, same masking), as two (n_spec,) arrays."""
    inside, bad, _ = _inside(residual, sigma, mask)
    return inside.sum(axis=1), (~bad).sum(axis=1)


def _inside(residual: ArrayLike, sigma: ArrayLike, mask: ArrayLike | None
            ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], bool]:
    """(n_spec, n_pix) ``|r| < σ`` on unmasked pixels, the mask (with the convention of
    :func:`clean`), and whether a single spectrum was given."""
    r2, squeeze = as_batch(residual, "residual")
    s = like_flux(np.broadcast_to(np.asarray(sigma, dtype=np.float64), np.shape(residual)),
                  (r2.shape[0], r2.shape[1]), "sigma")
    r2, s2, bad = clean(r2, s, mask)
    assert s2 is not None
    return (np.abs(r2) < s2) & ~bad, bad, squeeze


def _nanmedian(x: FloatArray) -> FloatArray:
    return np.asarray(np.median(x) if x.size else np.nan)


def _summarise(vals: FloatArray, axis: int) -> Summary:
    """Summary of ``vals`` (NaN = absent) along ``axis``."""
    good = np.isfinite(vals)
    n = good.sum(axis=axis)
    with warnings.catch_warnings():
        # all-NaN slices (no unmasked value) give NaN, which is the intended answer
        warnings.simplefilter("ignore", RuntimeWarning)
        p16, p50, p84 = np.nanpercentile(vals, [16.0, 50.0, 84.0], axis=axis)
    safe_n = np.maximum(n, 1)
    mean = np.where(good, vals, 0.0).sum(axis=axis) / safe_n
    dev = np.where(good, vals - np.expand_dims(mean, axis), 0.0)
    std = np.where(n > 0, np.sqrt((dev**2).sum(axis=axis) / safe_n), np.nan)
    return Summary(
        median=np.asarray(p50),
        sigma=np.asarray(0.5 * (p84 - p16)),
        std=np.asarray(std),
        count=np.asarray(n, dtype=np.int64),
    )
