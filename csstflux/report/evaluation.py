"""CSV tables and PNG figures of evaluations, calibrations and library verifications.

The I/O edge of :mod:`csstflux.model.evaluate`, :mod:`~csstflux.model.calibrate` and
:mod:`~csstflux.model.verify`: those compute, these functions write. Figures use matplotlib's
Agg backend (no display needed).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.grids import BANDS, OUTPUT_GRID
from csstflux.io.atomic import atomic_write
from csstflux.model.calibrate import ReferenceSigma, SigmaCalibration
from csstflux.model.evaluate import PAPER_SNRS, PAPER_TEST_SIGMA, Evaluation
from csstflux.model.verify import Verification

__all__ = ["write_calibration", "write_evaluation", "write_reference", "write_verification"]


def _csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with atomic_write(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, float | np.floating) else v for v in row])
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade_bands(ax: Any) -> None:
    for band, colour in zip(BANDS.values(), ("#ddeeff", "#e8ffe8", "#fff0dd"), strict=False):
        ax.axvspan(band.lo, band.hi, color=colour, zorder=0, lw=0)


def write_evaluation(ev: Evaluation, out_dir: str | Path) -> list[Path]:
    """Write the tables and Figs. 2–5 of an evaluation into ``out_dir``; return the paths.

    Files: ``band_stats.csv`` (per SNR × Teff bin × band: n, median, sigma, std),
    ``pixel_stats.csv`` (per SNR × Teff bin × pixel: median and robust 1σ of r),
    ``sigma_check.csv`` (predicted vs empirical σ at the five wavelengths), ``coverage.csv`` (per
    set with its 68 % bootstrap interval over stars),
    ``paper_comparison.csv``; ``residuals.png`` (median and 1σ against λ per Teff bin, one row
    per SNR, Figs. 2–3), ``band_sigma.png`` (typical 1σ against Teff per band and SNR),
    ``sigma_check.png`` (Figs. 4–5), ``coverage.png`` (coverage against λ per SNR).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    edges, wl = ev.teff_edges, OUTPUT_GRID.wavelength
    nb = edges.size - 1
    paths = [
        _csv(out / "band_stats.csv", ["snr", "teff_lo", "teff_hi", "n", "band", "median",
                                      "sigma", "std"],
             ((s, edges[b], edges[b + 1], int(ev.binned[k].count[b]), band,
               ev.binned[k].median[b, j], ev.binned[k].sigma[b, j], ev.binned[k].std[b, j])
              for k, s in enumerate(ev.snrs) for b in range(nb)
              for j, band in enumerate(ev.bands))),
        _csv(out / "pixel_stats.csv", ["snr", "teff_lo", "teff_hi", "wavelength", "median",
                                       "sigma"],
             ((s, edges[b], edges[b + 1], wl[p], ev.binned[k].pixel_median[b, p],
               ev.binned[k].pixel_sigma[b, p])
              for k, s in enumerate(ev.snrs) for b in range(nb) if ev.binned[k].count[b]
              for p in range(wl.size))),
        _csv(out / "sigma_check.csv", ["snr", "teff_lo", "teff_hi", "n", "wavelength",
                                       "pixel_wavelength", "predicted_sigma",
                                       "empirical_sigma", "empirical_std"],
             ((s, edges[b], edges[b + 1], int(ev.binned[k].count[b]), w, wl[ev.check_pixels[i]],
               ev.predicted_sigma[k, b, i], ev.empirical_sigma[k, b, i],
               ev.empirical_std[k, b, i])
              for k, s in enumerate(ev.snrs) for b in range(nb)
              for i, w in enumerate(ev.check_wavelengths))),
        _csv(out / "coverage.csv", ["group", "snr", "band", "coverage", "low_68", "high_68"],
             [("all", snr, band, c, None, None) for snr, d in ev.coverage.items()
              for band, c in d.items()]
             + [(sub, "all", band, c,
                 *ev.coverage_interval_by_subset.get(sub, {}).get(band, [None, None]))
                for sub, d in ev.coverage_by_subset.items() for band, c in d.items()]
             + [(f"{sub} with reference term", "all", band, c,
                 *ev.coverage_with_reference_interval_by_subset.get(sub, {}).get(
                     band, [None, None]))
                for sub, d in ev.coverage_with_reference_by_subset.items()
                for band, c in d.items()]),
        _csv(out / "paper_comparison.csv", ["teff", "teff_lo", "teff_hi", "n", "snr", "band",
                                            "sigma", "std", "paper"],
             ((r["teff"], r["bin"][0], r["bin"][1], r["n"], r["snr"], r["band"], r["sigma"],
               r["std"], r["paper"]) for r in ev.paper_comparison())),
    ]
    plt = _pyplot()
    cmap = plt.get_cmap("coolwarm")
    colours = [cmap(i / max(nb - 1, 1)) for i in range(nb)]
    # Figs. 2-3: median and 1σ against wavelength, one line per Teff bin, one row per SNR
    fig, axes = plt.subplots(len(ev.snrs), 2, figsize=(11, 2.6 * len(ev.snrs)), sharex=True,
                             squeeze=False)
    for k, s in enumerate(ev.snrs):
        bs = ev.binned[k]
        for b in range(nb):
            if bs.count[b]:
                label = f"{edges[b]:.0f}–{edges[b + 1]:.0f} K"
                axes[k, 0].plot(wl, bs.pixel_median[b], color=colours[b], lw=0.8, label=label)
                axes[k, 1].plot(wl, bs.pixel_sigma[b], color=colours[b], lw=0.8)
        axes[k, 0].set_ylabel(f"median r, SNR {s:g}")
        axes[k, 1].set_ylabel(f"1σ of r, SNR {s:g}")
        axes[k, 1].set_yscale("log")
        for ax in axes[k]:
            _shade_bands(ax)
    axes[0, 0].legend(fontsize=6, ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("wavelength (Å)")
    paths.append(_save(plt, fig, out / "residuals.png"))
    # typical 1σ against Teff per band
    fig, axes = plt.subplots(1, len(ev.bands), figsize=(4 * len(ev.bands), 3.2), squeeze=False)
    centres = ev.teff_centres
    for j, band in enumerate(ev.bands):
        ax = axes[0, j]
        for k, s in enumerate(ev.snrs):
            ax.plot(centres, ev.binned[k].sigma[:, j], "o-", ms=3, label=f"SNR {s:g}")
        for teff, d in PAPER_TEST_SIGMA.items():
            for snr, val in zip(PAPER_SNRS, d.get(band, ()), strict=False):
                if snr in ev.snrs:
                    ax.plot([teff], [val], "k*", ms=6)
        ax.set_title(f"{band} (★ paper)")
        ax.set_xlabel("Teff (K)")
        ax.set_yscale("log")
    axes[0, 0].set_ylabel("typical 1σ of r")
    axes[0, 0].legend(fontsize=7)
    paths.append(_save(plt, fig, out / "band_sigma.png"))
    # Figs. 4-5: predicted σ against the empirical 1σ
    fig, axes = plt.subplots(1, len(ev.check_wavelengths),
                             figsize=(3.2 * len(ev.check_wavelengths), 3.2), squeeze=False)
    for i, w in enumerate(ev.check_wavelengths):
        ax = axes[0, i]
        for k, s in enumerate(ev.snrs):
            ax.scatter(ev.empirical_sigma[k, :, i], ev.predicted_sigma[k, :, i], s=10,
                       label=f"SNR {s:g}")
        vals = np.concatenate([ev.empirical_sigma[:, :, i].ravel(),
                               ev.predicted_sigma[:, :, i].ravel()])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            lim = [vals.min() / 1.5, vals.max() * 1.5]
            ax.plot(lim, lim, "k--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(f"{w:g} Å")
        ax.set_xlabel("empirical 1σ")
    axes[0, 0].set_ylabel("predicted σ (median)")
    axes[0, 0].legend(fontsize=7)
    paths.append(_save(plt, fig, out / "sigma_check.png"))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for k, s in enumerate(ev.snrs):
        ax.plot(wl, ev.pixel_coverage[k], lw=0.8, label=f"SNR {s:g}")
    ax.axhline(0.683, color="k", ls="--", lw=0.8)
    _shade_bands(ax)
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("fraction |r| < σ")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out / "coverage.png"))
    return paths


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path


def write_reference(ref: ReferenceSigma, out_dir: str | Path) -> list[Path]:
    """Write ``reference_sigma.csv`` (wavelength, ρ, and the ρ fitted without each group)
    and ``reference_sigma.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wl = OUTPUT_GRID.wavelength
    columns = {"wavelength": wl, "reference_sigma": ref.sigma} | {
        f"without_{g}": v for g, v in ref.fold_sigma.items()}
    paths = [_csv(out / "reference_sigma.csv", list(columns),
                  zip(*columns.values(), strict=True))]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(wl, ref.sigma, lw=1.2, color="C0", label="all groups")
    for (g, v), colour in zip(ref.fold_sigma.items(), ("C1", "C2", "C3", "C4"), strict=False):
        ax.plot(wl, v, lw=0.8, color=colour, ls="--", label=f"without {g}")
    _shade_bands(ax)
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("reference term ρ (relative)")
    ax.set_title(f"reference: {', '.join(ref.reference)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "reference_sigma.png"
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return [*paths, path]


def write_calibration(cal: SigmaCalibration, out_dir: str | Path) -> list[Path]:
    """Write ``sigma_scale.csv`` (wavelength, factor, and the floor and the SED factor when
    fitted) and ``sigma_scale.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wl = OUTPUT_GRID.wavelength
    columns = {"wavelength": wl, "sigma_scale": cal.scale, "sigma_floor": cal.sigma_floor,
               "sed_factor": cal.sed_factor}
    columns = {k: v for k, v in columns.items() if v is not None}
    paths = [_csv(out / "sigma_scale.csv", list(columns),
                  zip(*columns.values(), strict=True))]
    plt = _pyplot()
    panels = [(cal.scale, "σ factor", 1.0), (cal.sigma_floor, "σ floor (relative)", None),
              (cal.sed_factor, "SED factor", 1.0)]
    panels = [p for p in panels if p[0] is not None]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), sharex=True,
                             squeeze=False)
    for (values, label, unity), ax, colour in zip(panels, axes[:, 0], ("C0", "C1", "C2"),
                                                  strict=False):
        ax.plot(wl, values, lw=1, color=colour)
        if unity is not None:
            ax.axhline(unity, color="k", ls="--", lw=0.8)
        _shade_bands(ax)
        ax.set_ylabel(label)
    axes[-1, 0].set_xlabel("wavelength (Å)")
    paths.append(_save(plt, fig, out / "sigma_scale.png"))
    return paths


def write_verification(v: Verification, out_dir: str | Path) -> list[Path]:
    """Write ``stars.csv`` (per-star RMSAE and coverage), ``pixels.csv`` (per-pixel statistics)
    and ``residuals.png`` (r of every star against λ, median and ±1σ, Fig. 11)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wl = OUTPUT_GRID.wavelength
    p = v.pixel
    paths = [
        _csv(out / "stars.csv", ["name", "teff", "logg", "feh", "rmsae", "coverage",
                                 "n_pixels"],
             ((n, v.teff[i], v.logg[i], v.feh[i], v.rmsae[i], v.star_coverage[i],
               int((~v.mask[i]).sum())) for i, n in enumerate(v.names))),
        _csv(out / "pixels.csv", ["wavelength", "n", "median", "sigma", "std"],
             ((wl[j], int(p.count[j]), p.median[j], p.sigma[j], p.std[j])
              for j in range(wl.size))),
    ]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    r = np.where(v.mask, np.nan, v.residual)
    for row in r:
        ax.plot(wl, row, color="0.75", lw=0.4, zorder=1)
    med = np.asarray(p.median, float)
    sig = np.asarray(p.sigma, float)
    ax.fill_between(wl, med - sig, med + sig, color="tab:blue", alpha=0.3, zorder=2,
                    label="median ± robust 1σ")
    ax.plot(wl, med, color="tab:blue", lw=1.2, zorder=3)
    ax.plot(wl, med - np.asarray(p.std, float), color="tab:red", lw=0.6, ls=":", zorder=3,
            label="median ± std")
    ax.plot(wl, med + np.asarray(p.std, float), color="tab:red", lw=0.6, ls=":", zorder=3)
    ax.axhline(0, color="k", lw=0.6)
    have = np.isfinite(med)
    if have.any():
        ax.set_xlim(wl[have].min(), wl[have].max())
        lim = np.nanmax(np.abs(np.concatenate([med[have] - 3 * sig[have],
                                               med[have] + 3 * sig[have]])))
        if np.isfinite(lim) and lim > 0:
            ax.set_ylim(-lim, lim)
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("relative residual r")
    ax.set_title(f"{v.n_stars} stars, median RMSAE {v.summary()['median_rmsae'] or np.nan:.4f}")
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out / "residuals.png"))
    return paths
