"""Evaluation of a model on rows of a training store: the paper's Figs. 2–5 as tables (§4.2).

For each SNR every row's clean input receives eq. (1) noise (:func:`~csstflux.model.data.
noisy_inputs`, a generator seeded by ``(seed, SNR)``, so the draws at SNR 20 do not depend on
which other SNRs are asked for), the predictor maps it to an SED ``F̂`` and its error, and the
relative residual ``r = (F̂ − F) / F`` (eq. 2) is formed against the row's target ``F``; masked
target pixels never enter any statistic. The predicted relative σ of a pixel is
``σ_rel = sed_err / |sed|``, i.e. the network's σ with the card's calibration applied
(``sqrt((s σ)² + τ²)``, :mod:`csstflux.model.calibrate`).

Tables (:class:`Evaluation`):

- per Teff bin × band × SNR: median, robust 1σ (half the 16th–84th percentile range) and std of
  r, as the paper's "typical" values (the statistic at each pixel across the bin's spectra, then
  its median over the band's pixels; :func:`~csstflux.spectra.metrics.binned_summary`), Figs. 2–3;
- per band × SNR over all rows: the same typical values;
- per Teff bin × SNR at the five :data:`~csstflux.grids.SIGMA_CHECK_WAVELENGTHS` (nearest output
  pixel): the predicted σ (median of σ_rel over the bin's spectra) against the empirical robust
  1σ and std of r there, Figs. 4–5;
- coverage, the fraction of ``|r| < σ_rel`` (0.683 for calibrated Gaussian errors), per band, per
  SNR and over all SNRs, overall and per subset.

Teff bins are ``teff_bin`` wide and centred on its multiples (default 4750–5250, 5250–5750, …,
9250–9750 K), so the 6000 K and 8000 K values the paper quotes are compared with the bins
5750–6250 and 7750–8250 K (:data:`PAPER_TEST_SIGMA`, :meth:`Evaluation.paper_comparison`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.grids import (
    BANDS,
    OUTPUT_GRID,
    SIGMA_CHECK_WAVELENGTHS,
    TEFF_DOMAIN,
    VERIFY_WAVELENGTHS,
)
from csstflux.io.stores.trainset import TrainingArrays
from csstflux.library.sed_grid import median_ratio_to_grid
from csstflux.model.data import noisy_inputs
from csstflux.spectra.metrics import (
    BinnedSummary,
    band_summary,
    binned_summary,
    coverage,
    coverage_counts,
    pixel_summary,
    relative_residual,
)

__all__ = ["BIAS_WAVELENGTHS", "PAPER_SNRS", "PAPER_TEST_SIGMA", "Evaluation", "PredictorLike",
           "Residuals", "band_coverage", "band_coverage_interval", "evaluate_rows",
           "nearest_reference_sed", "predict_residuals", "subset_rows", "teff_bin_edges"]

FloatArray = NDArray[np.float64]

#: The paper's typical 1σ on its BOSZ test set (§4.2): Teff (K) → band → (SNR 20, 40, 80).
PAPER_TEST_SIGMA: dict[float, dict[str, tuple[float, float, float]]] = {
    6000.0: {"GU": (0.0425, 0.0207, 0.0151), "GV": (0.0025, 0.0013, 0.0011),
             "GI": (0.0029, 0.0015, 0.0011)},
    8000.0: {"GU": (0.0117, 0.0064, 0.0052), "GV": (0.0016, 0.0008, 0.0007),
             "GI": (0.0024, 0.0014, 0.0012)},
}
#: SNRs of the paper's test-set values.
PAPER_SNRS: tuple[float, float, float] = (20.0, 40.0, 80.0)
#: Wavelengths (Å) of the per-set bias and library-against-CK04 tables: the library check's
#: wavelengths and one each in the ultraviolet and near infrared.
BIAS_WAVELENGTHS: tuple[float, ...] = (3000.0, *VERIFY_WAVELENGTHS, 8500.0)


class PredictorLike(Protocol):
    """What evaluation needs of a model: ``(flux_norm, flux_err) -> (sed, sed_err)``."""

    def __call__(self, flux_norm: ArrayLike, flux_err: ArrayLike
                 ) -> tuple[NDArray[Any], NDArray[Any]]: ...


@dataclass(frozen=True)
class Residuals:
    """Residuals of a set of rows at one SNR; arrays (n_rows, 574) on the output grid."""

    snr: float
    """Signal-to-noise ratio of the eq. (1) noise."""
    residual: FloatArray
    """Relative residual r (eq. 2); 0 where masked."""
    sigma: FloatArray
    """Predicted relative 1σ, ``sed_err / |sed|`` (inf where the SED is 0)."""
    mask: NDArray[np.bool_]
    """True where the target (or the prediction) is unusable."""


def predict_residuals(predictor: PredictorLike, data: TrainingArrays,
                      snrs: Sequence[float], seed: int = 0) -> list[Residuals]:
    """Noisy inputs, predictions and residuals of ``data`` at each SNR.

    Parameters
    ----------
    predictor : callable
        ``(flux_norm (n, 2238), flux_err (n, 2238)) -> (sed (n, 574), sed_err (n, 574))``.
    data : TrainingArrays
        Clean inputs and targets.
    snrs : sequence of float
        One evaluation per SNR.
    seed : int
        The noise at SNR ``s`` comes from ``default_rng([seed, round(1000 s)])``.

    Returns
    -------
    list of Residuals, one per SNR, in the order of ``snrs``.
    """
    out = []
    for snr in snrs:
        rng = np.random.default_rng([int(seed), int(round(1000 * float(snr)))])
        x, e = noisy_inputs(data.inputs, data.input_mask, np.full(len(data), float(snr)), rng)
        sed, sed_err = predictor(x, e)
        sed = np.asarray(sed, dtype=np.float64)
        sed_err = np.asarray(sed_err, dtype=np.float64)
        r, bad = relative_residual(sed, data.targets, data.target_mask)
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = np.where(np.abs(sed) > 0, sed_err / np.abs(sed), np.inf)
        out.append(Residuals(float(snr), r, sigma, bad))
    return out


def band_coverage(residuals: Sequence[Residuals], rows: NDArray[np.bool_] | None = None,
                  scale: ArrayLike | None = None, floor: ArrayLike | None = None
                  ) -> dict[str, float]:
    """Coverage ``|r| < sqrt((s σ_rel)² + τ²)`` per band, pooled over the given SNRs.

    Parameters
    ----------
    residuals : sequence of Residuals
    rows : (n_rows,) bool, optional
        Rows to use (default all).
    scale : (574,) float, optional
        Factors ``s`` applied to σ (default 1).
    floor : (574,) float, optional
        Floors ``τ`` added in quadrature, relative units (default 0).

    Returns
    -------
    dict band name → fraction (NaN when the band has no unmasked value); key ``"all"``: every
    output pixel.
    """
    s = np.ones(OUTPUT_GRID.n) if scale is None else np.asarray(scale, dtype=np.float64)
    sel = slice(None) if rows is None else np.asarray(rows, dtype=bool)
    r = np.concatenate([x.residual[sel] for x in residuals])
    sig = np.concatenate([x.sigma[sel] for x in residuals]) * s
    if floor is not None:
        sig = np.sqrt(sig * sig + np.asarray(floor, dtype=np.float64) ** 2)
    bad = np.concatenate([x.mask[sel] for x in residuals])
    out = {}
    wl = OUTPUT_GRID.wavelength
    for name, band in {**BANDS, "all": None}.items():
        pix = np.ones(wl.size, bool) if band is None else band.mask(wl)
        out[name] = float(coverage(r[:, pix], sig[:, pix], bad[:, pix])) if r.size else np.nan
    return out


def band_coverage_interval(residuals: Sequence[Residuals], rows: NDArray[np.bool_] | None = None,
                           *, n_boot: int = 2000, level: float = 0.683, seed: int = 0,
                           floor: ArrayLike | None = None) -> dict[str, list[float | None]]:
    """Bootstrap interval of :func:`band_coverage` (central ``level``), resampling stars.

    The pixels of one star share its residual shape, and its SNR copies its input, so a set
    of n stars measures coverage about as well as n independent draws, not n × pixels × SNRs
    (for the 20 Pickles test stars the interval is about ±0.05). Each bootstrap draw takes
    the rows with replacement and pools their pixels over the SNRs as :func:`band_coverage`
    does (``floor``: added to σ in quadrature, as there). Returns band → [low, high] (None
    where the band has no unmasked value).
    """
    if floor is not None:
        residuals = [Residuals(x.snr, x.residual, np.hypot(x.sigma, np.asarray(floor, float)),
                               x.mask) for x in residuals]
    sel = np.ones(len(residuals[0].residual), bool) if rows is None else np.asarray(rows, bool)
    n = int(sel.sum())
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) if n else None
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out: dict[str, list[float | None]] = {}
    wl = OUTPUT_GRID.wavelength
    for name, band in {**BANDS, "all": None}.items():
        pix = np.ones(wl.size, bool) if band is None else band.mask(wl)
        hits, valid = np.zeros(n), np.zeros(n)
        for x in residuals:
            h, v = coverage_counts(x.residual[sel][:, pix], x.sigma[sel][:, pix],
                                   x.mask[sel][:, pix])
            hits += h
            valid += v
        if weights is None or not valid.any():
            out[name] = [None, None]
            continue
        tot = weights @ valid
        cov = (weights @ hits)[tot > 0] / tot[tot > 0]
        out[name] = [float(v) for v in np.quantile(cov, q)]
    return out


def teff_bin_edges(teff: ArrayLike, width: float = 500.0) -> FloatArray:
    """Edges of ``width``-K bins centred on multiples of ``width``, covering the Teff domain and
    every finite value of ``teff`` (bins [lo, hi), the last one [lo, hi])."""
    t = np.asarray(teff, dtype=np.float64)
    t = t[np.isfinite(t)]
    lo = min(TEFF_DOMAIN[0], t.min()) if t.size else TEFF_DOMAIN[0]
    hi = max(TEFF_DOMAIN[1], t.max()) if t.size else TEFF_DOMAIN[1]
    first = np.floor(lo / width - 0.5)
    last = max(np.ceil(hi / width - 0.5), first + 1)
    return width * (np.arange(first, last + 0.5) + 0.5)


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate_rows`; SNR axes follow ``snrs``, band axes ``bands``."""

    snrs: tuple[float, ...]
    """The SNRs evaluated."""
    bands: tuple[str, ...]
    """Band names."""
    teff_edges: FloatArray
    """Teff bin edges (n_bins + 1,), K."""
    n_rows: int
    """Rows evaluated (each at every SNR)."""
    subset_counts: dict[str, int]
    """Rows per subset."""
    binned: tuple[BinnedSummary, ...]
    """Per SNR: band and per-pixel statistics per Teff bin (Figs. 2–3)."""
    typical: dict[str, FloatArray]
    """``"median"``, ``"sigma"``, ``"std"``: (n_snr, n_bands) typical values over all rows."""
    check_wavelengths: FloatArray
    """(5,) requested wavelengths of Figs. 4–5, Å."""
    check_pixels: NDArray[np.int64]
    """(5,) nearest output pixels."""
    predicted_sigma: FloatArray
    """(n_snr, n_bins, 5) median predicted relative σ of each bin's spectra."""
    empirical_sigma: FloatArray
    """(n_snr, n_bins, 5) robust 1σ of r."""
    empirical_std: FloatArray
    """(n_snr, n_bins, 5) standard deviation of r."""
    coverage: dict[str, dict[str, float]]
    """Coverage per band (and ``"all"`` pixels): key ``"all"`` pools the SNRs, key ``"20"``,
    ``"40"``, … one SNR each."""
    coverage_by_subset: dict[str, dict[str, float]]
    """Subset → band → coverage, pooled over SNRs."""
    pixel_coverage: FloatArray
    """(n_snr, 574) coverage at each pixel across rows."""
    pixel_sigma_predicted: FloatArray
    """(n_snr, 574) median predicted relative σ at each pixel over all rows."""
    median_by_subset: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Subset → wavelength (Å, as text; :data:`BIAS_WAVELENGTHS`) → median relative residual
    pooled over the SNRs (the bias of each set), None where the set has no flux there."""
    median_by_subset_snr: dict[str, dict[str, dict[str, float | None]]] = field(
        default_factory=dict)
    """Subset → SNR (as text) → wavelength → median relative residual at that SNR alone: a
    bias that grows as the noise grows is the network's, not the set's."""
    grid_ratio_by_subset: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Subset → wavelength → median of (target / CK04 at the row's parameters) − 1
    (:func:`~csstflux.library.sed_grid.median_ratio_to_grid`): how each set differs from the
    model atmospheres; None outside its flux or the grid."""
    coverage_interval_by_subset: dict[str, dict[str, list[float | None]]] = field(
        default_factory=dict)
    """Subset → band → central 68.3 % bootstrap interval of the coverage, resampling stars
    (:func:`band_coverage_interval`): how well the set's size pins the coverage down."""
    coverage_with_reference_by_subset: dict[str, dict[str, float]] = field(
        default_factory=dict)
    """Subset → band → coverage of ``hypot(σ, ρ)`` with the predictor's reference term ``ρ``
    (:func:`~csstflux.model.calibrate.fit_reference_sigma`); empty when it has none."""
    coverage_with_reference_interval_by_subset: dict[str, dict[str, list[float | None]]] = \
        field(default_factory=dict)
    """Its bootstrap intervals, as :attr:`coverage_interval_by_subset`."""
    baseline_by_subset: dict[str, Any] = field(default_factory=dict)
    """Subset → the model-free check of :func:`nearest_reference_sed` (empty when not asked):
    at each :data:`BIAS_WAVELENGTHS`, the median and robust 1σ of the baseline's relative
    residual and of the network's minus the baseline's (``"median"``, ``"sigma"``,
    ``"network_minus_baseline"``, ``"network_minus_baseline_sigma"``), with ``"reference"``
    and ``"k"``. A set whose median residual is the same for both differs from the reference
    library itself, not through the network."""

    @property
    def teff_centres(self) -> FloatArray:
        return 0.5 * (self.teff_edges[1:] + self.teff_edges[:-1])

    def paper_comparison(self) -> list[dict[str, Any]]:
        """Typical robust 1σ of the bins holding 6000 K and 8000 K beside the paper's values.

        One row per Teff × SNR (of 20, 40, 80 that were evaluated) × band: ``teff``, ``bin``
        ([lo, hi) K), ``n`` (spectra in the bin), ``snr``, ``band``, ``sigma``, ``std``,
        ``paper``.
        """
        rows = []
        for teff, bands in PAPER_TEST_SIGMA.items():
            b = int(np.searchsorted(self.teff_edges, teff, side="right") - 1)
            if not 0 <= b < self.teff_edges.size - 1:
                continue
            for k, snr in enumerate(self.snrs):
                if snr not in PAPER_SNRS:
                    continue
                summ = self.binned[k]
                for j, band in enumerate(self.bands):
                    if band not in bands:
                        continue
                    rows.append({"teff": teff,
                                 "bin": [float(self.teff_edges[b]), float(self.teff_edges[b + 1])],
                                 "n": int(summ.count[b]), "snr": snr, "band": band,
                                 "sigma": _num(summ.sigma[b, j]), "std": _num(summ.std[b, j]),
                                 "paper": bands[band][PAPER_SNRS.index(snr)]})
        return rows

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: typical values per SNR × band, coverage, the paper comparison."""
        typical = {_key(snr): {band: {stat: _num(self.typical[stat][k, j])
                                      for stat in ("median", "sigma", "std")}
                               for j, band in enumerate(self.bands)}
                   for k, snr in enumerate(self.snrs)}
        return {"n_rows": self.n_rows, "subsets": dict(self.subset_counts),
                "snrs": list(self.snrs), "teff_edges": self.teff_edges.tolist(),
                "typical": typical, "coverage": self.coverage,
                "coverage_by_subset": self.coverage_by_subset,
                "coverage_interval_by_subset": self.coverage_interval_by_subset,
                "coverage_with_reference_by_subset": self.coverage_with_reference_by_subset,
                "coverage_with_reference_interval_by_subset":
                    self.coverage_with_reference_interval_by_subset,
                "baseline_by_subset": self.baseline_by_subset,
                "median_by_subset": self.median_by_subset,
                "median_by_subset_snr": self.median_by_subset_snr,
                "grid_ratio_by_subset": self.grid_ratio_by_subset,
                "paper_comparison": self.paper_comparison()}


def _key(snr: float) -> str:
    return f"{snr:g}"


def _num(x: Any) -> float | None:
    v = float(x)
    return v if np.isfinite(v) else None


def _check_stats(res: Residuals, rows: NDArray[np.bool_], pix: NDArray[np.int64]
                 ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Predicted σ median, robust 1σ and std of r at pixels ``pix`` over ``rows``."""
    if not rows.any():
        nan = np.full(pix.size, np.nan)
        return nan, nan, nan
    bad = res.mask[rows][:, pix]
    summ = pixel_summary(res.residual[rows][:, pix], bad)
    sig = res.sigma[rows][:, pix]
    pred = np.full(pix.size, np.nan)
    for i in range(pix.size):
        ok = ~bad[:, i] & np.isfinite(sig[:, i])
        if ok.any():
            pred[i] = np.median(sig[ok, i])
    return pred, np.asarray(summ.sigma, float), np.asarray(summ.std, float)


def evaluate_rows(predictor: PredictorLike, data: TrainingArrays,
                  snrs: Sequence[float] = (20.0, 40.0, 80.0), seed: int = 0,
                  teff_bin: float = 500.0,
                  check_wavelengths: Sequence[float] = SIGMA_CHECK_WAVELENGTHS,
                  reference_sigma: ArrayLike | None = None,
                  baseline: TrainingArrays | None = None, baseline_k: int = 5,
                  baseline_name: str = "") -> Evaluation:
    """Evaluate a predictor on training-store rows (see the module docstring).

    Parameters
    ----------
    predictor : callable
        ``(flux_norm, flux_err) -> (sed, sed_err)``, e.g. a loaded
        :class:`~csstflux.model.predictor.Predictor`.
    data : TrainingArrays
        Rows with clean inputs and targets (e.g. the test split).
    snrs : sequence of float
        SNRs of the eq. (1) noise.
    seed : int
        Noise seed (see :func:`predict_residuals`).
    teff_bin : float
        Width of the Teff bins, K (bins centred on its multiples).
    check_wavelengths : sequence of float
        Wavelengths (Å) of the predicted-vs-empirical σ table.
    reference_sigma : (574,) float, optional
        The predictor's reference term ``ρ`` (e.g. ``Predictor.reference_sigma``): coverage
        per subset is also reported with ``hypot(σ, ρ)``.
    baseline : TrainingArrays, optional
        Rows of a reference library (e.g. the training split of MILES): every row is also
        predicted without the network, by :func:`nearest_reference_sed` with ``baseline_k``
        neighbours, and :attr:`Evaluation.baseline_by_subset` compares the two
        (``baseline_name`` names the library there).

    Returns
    -------
    Evaluation
    """
    if len(data) == 0:
        raise ValueError("no rows to evaluate")
    snrs = tuple(float(s) for s in snrs)
    wl = OUTPUT_GRID.wavelength
    edges = teff_bin_edges(data.teff, teff_bin)
    n_bins = edges.size - 1
    which = np.searchsorted(edges, data.teff, side="right") - 1
    which[data.teff == edges[-1]] = n_bins - 1      # the last bin is closed (binned_summary)
    check = np.asarray(check_wavelengths, dtype=np.float64)
    pix = np.array([int(np.argmin(np.abs(wl - w))) for w in check], dtype=np.int64)
    res = predict_residuals(predictor, data, snrs, seed)
    bands = tuple(BANDS)
    typical = {k: np.full((len(snrs), len(bands)), np.nan) for k in ("median", "sigma", "std")}
    shape = (len(snrs), n_bins, pix.size)
    pred, emp, emp_std = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    binned = []
    pix_cov = np.full((len(snrs), wl.size), np.nan)
    pix_pred = np.full((len(snrs), wl.size), np.nan)
    cov: dict[str, dict[str, float]] = {"all": band_coverage(res)}
    for k, x in enumerate(res):
        binned.append(binned_summary(x.residual, wl, data.teff, edges, x.mask))
        for band, summ in band_summary(x.residual, wl, x.mask).items():
            j = bands.index(band)
            typical["median"][k, j], typical["sigma"][k, j] = summ.median, summ.sigma
            typical["std"][k, j] = summ.std
        for b in range(n_bins):
            pred[k, b], emp[k, b], emp_std[k, b] = _check_stats(x, which == b, pix)
        cov[_key(x.snr)] = band_coverage([x])
        pix_cov[k] = coverage(x.residual, x.sigma, x.mask, axis=0)
        pix_pred[k] = _masked_median(x.sigma, x.mask)
    subsets = {str(s): int(n) for s, n in zip(*np.unique(data.subset, return_counts=True),
                                              strict=True)}
    by_subset = {s: band_coverage(res, data.subset == s) for s in subsets}
    by_subset_ci = {s: band_coverage_interval(res, data.subset == s, seed=seed) for s in subsets}
    with_ref, with_ref_ci = {}, {}
    if reference_sigma is not None:
        rho = np.asarray(reference_sigma, dtype=np.float64)
        with_ref = {s: band_coverage(res, data.subset == s, floor=rho) for s in subsets}
        with_ref_ci = {s: band_coverage_interval(res, data.subset == s, seed=seed, floor=rho)
                       for s in subsets}
    bias_pix = {f"{w:g}": int(np.argmin(np.abs(wl - w))) for w in BIAS_WAVELENGTHS}
    med_by, med_by_snr, ratio_by = {}, {}, {}
    for s in subsets:
        rows = np.asarray(data.subset == s)
        per_snr = [np.where(x.mask[rows], np.nan, x.residual[rows]) for x in res]
        r = np.concatenate(per_snr)
        med_by[s] = {k: _nanmedian(r[:, i]) for k, i in bias_pix.items()}
        med_by_snr[s] = {_key(x.snr): {k: _nanmedian(rs[:, i]) for k, i in bias_pix.items()}
                         for x, rs in zip(res, per_snr, strict=True)}
        ratio, _ = median_ratio_to_grid(np.asarray(data.targets[rows], np.float64),
                                        np.asarray(data.target_mask[rows]), data.teff[rows],
                                        data.logg[rows], data.feh[rows])
        ratio_by[s] = {k: (None if ratio is None else _num(ratio[i]))
                       for k, i in bias_pix.items()}
    base_by = {}
    if baseline is not None:
        sed_b, bad_b = nearest_reference_sed(baseline, data, baseline_k)
        r_b, m_b = relative_residual(sed_b, data.targets, data.target_mask | bad_b)
        r_b = np.where(m_b, np.nan, r_b)
        for s in subsets:
            rows = np.asarray(data.subset == s)
            net = np.concatenate([np.where(x.mask[rows], np.nan, x.residual[rows]) for x in res])
            base = np.tile(r_b[rows], (len(res), 1))
            base_by[s] = {"reference": baseline_name, "k": int(baseline_k),
                          **{key: {w: _robust(v[:, i], stat) for w, i in bias_pix.items()}
                             for key, v, stat in (
                                 ("median", r_b[rows], 50), ("sigma", r_b[rows], None),
                                 ("network_minus_baseline", net - base, 50),
                                 ("network_minus_baseline_sigma", net - base, None))}}
    return Evaluation(snrs=snrs, bands=bands, teff_edges=edges, n_rows=len(data),
                      subset_counts=subsets, binned=tuple(binned), typical=typical,
                      check_wavelengths=check, check_pixels=pix, predicted_sigma=pred,
                      empirical_sigma=emp, empirical_std=emp_std, coverage=cov,
                      coverage_by_subset=by_subset, coverage_interval_by_subset=by_subset_ci,
                      pixel_coverage=pix_cov,
                      pixel_sigma_predicted=pix_pred, median_by_subset=med_by,
                      median_by_subset_snr=med_by_snr,
                      grid_ratio_by_subset=ratio_by,
                      coverage_with_reference_by_subset=with_ref,
                      coverage_with_reference_interval_by_subset=with_ref_ci,
                      baseline_by_subset=base_by)


def _robust(values: FloatArray, percentile: float | None) -> float | None:
    """The ``percentile`` of the finite values (None: half their 16–84th percentile range),
    None when there are none."""
    v = values[np.isfinite(values)]
    if not v.size:
        return None
    if percentile is not None:
        return float(np.percentile(v, percentile))
    p16, p84 = np.percentile(v, [16, 84])
    return float(0.5 * (p84 - p16))


def nearest_reference_sed(reference: TrainingArrays, data: TrainingArrays, k: int = 5
                          ) -> tuple[FloatArray, NDArray[np.bool_]]:
    """A prediction without the network: each row's SED as the per-pixel median of the
    targets of the ``k`` reference rows whose clean normalised inputs are nearest.

    Nearest: the smallest mean squared difference of the inputs over the pixels unmasked in
    both. It asks only what the reference library's stars with the same normalised spectrum
    look like, so a set whose residual against this baseline matches its residual against
    the network differs from the reference library itself.

    Returns
    -------
    sed : (n_rows, 574) float64
        0 where no neighbour has flux.
    mask : (n_rows, 574) bool
        True where no neighbour has flux.
    """
    if not 1 <= k <= len(reference):
        raise ValueError(f"k must be between 1 and the {len(reference)} reference rows, got {k}")
    w_ref = (~np.asarray(reference.input_mask)).astype(np.float64)
    x_ref = np.where(w_ref > 0, np.asarray(reference.inputs, np.float64), 0.0)
    w = (~np.asarray(data.input_mask)).astype(np.float64)
    x = np.where(w > 0, np.asarray(data.inputs, np.float64), 0.0)
    both = w @ w_ref.T                                              # pixels valid in both
    sq = (x * x) @ w_ref.T + w @ (x_ref * x_ref).T - 2.0 * x @ x_ref.T
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(both > 0, sq / both, np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    targets = np.where(np.asarray(reference.target_mask), np.nan,
                       np.asarray(reference.targets, np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)             # all-NaN pixels
        sed = np.nanmedian(targets[nearest], axis=1)
    bad = ~np.isfinite(sed)
    return np.where(bad, 0.0, sed), bad


def _nanmedian(values: FloatArray) -> float | None:
    return _num(np.nanmedian(values)) if np.isfinite(values).any() else None


def _masked_median(values: FloatArray, mask: NDArray[np.bool_]) -> FloatArray:
    """Median along axis 0 of the unmasked, finite values; NaN where none."""
    v = np.where(mask | ~np.isfinite(values), np.nan, values)
    out = np.full(v.shape[1], np.nan)
    have = np.isfinite(v).any(axis=0)
    if have.any():
        out[have] = np.nanmedian(v[:, have], axis=0)
    return out


def subset_rows(data: TrainingArrays, limits: Mapping[str, int], seed: int = 0
                ) -> TrainingArrays:
    """At most ``limits[subset]`` rows of each subset, drawn at random (seeded), in row order;
    subsets not named keep all their rows."""
    rng = np.random.default_rng(seed)
    keep = np.ones(len(data), bool)
    for name, limit in limits.items():
        idx = np.flatnonzero(data.subset == name)
        if idx.size > limit:
            keep[idx] = False
            keep[rng.choice(idx, size=int(limit), replace=False)] = True
    return data.take(keep)
