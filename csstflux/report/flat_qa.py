"""QA pages of a flat build: matplotlib figures (Agg) and one self-contained HTML page.

Two pages share the figures here. :func:`nightly_report` is the nightly job's page (the
``qa`` callback of :func:`csstflux.pipeline.nightly.run_night`): flat maps, the change against
the previous version, residuals, star counts and skipped exposures. :func:`write_build_report`
is ``csstflux build-flat --qa``'s page for one build: per detector the flat − 1 at a few
wavelengths and its σ map, reduced χ² and stars against wavelength, the cross-match outcomes,
contaminated pixels left out and, given the simulation's truth, recovered − true maps and the
z-scores (fit − truth)/σ (:func:`compare_truth`, pure numpy).

The page itself is written by :func:`csstflux.report.html.write_html_report`: figures
embedded as PNG data, nothing loaded from outside the page.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from numpy.typing import NDArray

from csstflux._version import __version__
from csstflux.errors import ConfigError, GridMismatchError
from csstflux.io.atomic import atomic_write
from csstflux.report.html import Figure, Link, Section, Table, write_html_report

if TYPE_CHECKING:
    from csstflux.pipeline.flats import FlatBuild
    from csstflux.pipeline.nightly import NightPlan

__all__ = ["TruthComparison", "check_truth_grid", "compare_truth", "figure_png",
           "fit_curves_figure", "flat_maps_figure", "nightly_report", "write_build_report"]

Array = NDArray[np.float64]

#: Labels of :attr:`ExposureEquations.matches` keys on the page.
MATCH_LABELS = {"total": "sources in the exposures", "matched": "matched",
                "no_match": "unmatched", "ambiguous": "ambiguous (dropped)",
                "contested": "contested (dropped)"}
#: Wavelengths shown per detector in the build page's maps.
N_MAP_WAVELENGTHS = 3


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Any) -> str:
    """Lay out, write (PNG, 90 dpi) and close a figure, into a file (atomically) or a binary
    stream; returns the path as a string."""
    fig.tight_layout()
    if isinstance(path, str | os.PathLike):
        with atomic_write(path) as fh:
            fig.savefig(fh, format="png", dpi=90)
    else:
        fig.savefig(path, format="png", dpi=90)
    _pyplot().close(fig)
    return str(path)


def figure_png(fig: Any) -> bytes:
    """Lay out a matplotlib figure, encode it as PNG (90 dpi) and close it."""
    buf = io.BytesIO()
    save_figure(fig, buf)
    return buf.getvalue()


def _extent(result: FlatBuild) -> tuple[float, float, float, float]:
    return (float(result.grid_x[0]), float(result.grid_x[-1]),
            float(result.grid_y[0]), float(result.grid_y[-1]))


def _symmetric(img: Array, floor: float) -> float:
    """Colour limit ±v of a diverging map (``floor`` when the map is all zero or NaN)."""
    finite = np.abs(img[np.isfinite(img)])
    return max(float(finite.max()) if finite.size else 0.0, floor)


def flat_maps_figure(result: FlatBuild) -> Figure:
    """Flat − 1 at the middle wavelength of each detector, one panel per detector."""
    plt = _pyplot()
    sols, waves = result.solutions, result.wavelength
    names = sorted(sols)
    fig, axs = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, k in zip(axs[0], names, strict=True):
        mid = sols[k].flat.shape[0] // 2
        img = sols[k].flat[mid] - 1.0
        v = _symmetric(img, 1e-6)
        im = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v,
                       extent=_extent(result))
        ax.set_title(f"{k}: flat - 1 at {waves[k][mid]:.0f} A")
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return Figure("flat_maps", figure_png(fig),
                  "Flat minus one at the middle wavelength of each detector.")


def fit_curves_figure(result: FlatBuild) -> Figure:
    """Reduced χ², median flat σ and stars used against wavelength, one line per detector."""
    plt = _pyplot()
    fig, axs = plt.subplots(1, 3, figsize=(14, 3.8))
    for k in sorted(result.solutions):
        s, w = result.solutions[k], result.wavelength[k]
        axs[0].plot(w, s.reduced_chi2, label=k)
        axs[1].plot(w, np.nanmedian(s.sigma, axis=(1, 2)), label=k)
        axs[2].plot(w, np.asarray(s.fit.n), label=k)
    for ax, lab in zip(axs, ("reduced chi2 of the fit", "median flat sigma",
                             "stars used per wavelength"), strict=True):
        ax.set_xlabel("wavelength (A)")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7)
    axs[1].set_yscale("log")
    return Figure("residuals_counts", figure_png(fig),
                  "Fit residuals (reduced chi2), flat errors and star counts against "
                  "wavelength.")


def _change_figure(result: FlatBuild, changes: Mapping[str, Mapping[str, Any]],
                   previous: str) -> Figure:
    """RMS of new / previous − 1 against wavelength, and its map for the first detector."""
    plt = _pyplot()
    waves, names = result.wavelength, sorted(result.solutions)
    fig, axs = plt.subplots(1, 2, figsize=(11, 3.8))
    for k in names:
        if k in changes:
            axs[0].plot(waves[k], changes[k]["rms"], label=k)
    axs[0].set_xlabel("wavelength (A)")
    axs[0].set_ylabel("RMS(new / previous - 1)")
    axs[0].set_yscale("log")
    axs[0].legend(fontsize=7)
    k0 = next(k for k in names if k in changes)
    mid = changes[k0]["ratio"].shape[0] // 2
    img = changes[k0]["ratio"][mid]
    v = _symmetric(img, 1e-9)
    im = axs[1].imshow(img, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
    axs[1].set_title(f"{k0}: new / previous - 1 at {waves[k0][mid]:.0f} A")
    fig.colorbar(im, ax=axs[1], shrink=0.8)
    return Figure("change_vs_previous", figure_png(fig), f"Change against {previous}.")


def _fmt3(v: Any) -> Any:
    return f"{v:.3g}" if isinstance(v, float) else v


def nightly_report(work: Path, plan: NightPlan, result: FlatBuild, summary: dict[str, Any],
                   changes: dict[str, dict[str, Any]]) -> str:
    """The nightly job's QA page of one version (a :data:`~csstflux.pipeline.nightly.
    QaCallback`): ``work/qa/index.html`` plus its figures as PNGs in ``work/qa/``.

    Flat maps, change against the previous version (``changes``, from
    :func:`~csstflux.pipeline.nightly.flat_changes`), residuals, star counts and the skipped
    exposures of ``summary``. Returns the page's path.
    """
    qa = work / "qa"
    qa.mkdir(parents=True, exist_ok=True)
    change = (_change_figure(result, changes, summary["previous_version"]),) if changes else ()
    det_rows = [{"detector": k, **{c: _fmt3(v) for c, v in d.items()}}
                for k, d in summary["detectors"].items()]
    night_rows = [{"night": w["night"], "exposures used": w["n_exposures"],
                   "exposures skipped": w["n_skipped"]} for w in summary["window"]]
    failures = [{"exposure": s["path"], "problem": s["reason"]} for s in summary["skipped"]]
    match_rows = [{"match": k, "count": v} for k, v in summary["matches"].items()]
    links = [Link("../dask-performance.html", "Dask performance report"),
             Link("../summary.json", "summary.json (machine-readable)")]
    sections = [
        Section("Flat", paragraphs=(f"{summary['n_stars']} matched star spectra from "
                                    f"{summary['n_exposures']} exposures over "
                                    f"{len(summary['window'])} nights; "
                                    f"{summary['n_passes']} clipping passes.",),
                figures=(flat_maps_figure(result),),
                tables=(Table(det_rows, caption="Per detector"),)),
        Section("Change against the previous version",
                paragraphs=(("previous version: " + str(summary["previous_version"]))
                            if changes else "No previous version to compare with.",),
                figures=change),
        Section("Residuals and star counts", figures=(fit_curves_figure(result),),
                tables=(Table(night_rows, caption="Exposures per night"),
                        Table(match_rows, caption="Cross-match outcomes"))),
        Section("Failures", paragraphs=(f"{len(failures)} exposures skipped.",),
                tables=(Table(failures, columns=["exposure", "problem"],
                              caption="Skipped exposures"),) if failures else ()),
        Section("Monitoring", paragraphs=(
            f"Dask dashboard during the run: {summary['dashboard']} (live only while the run "
            "lasted; the performance report linked here keeps its record)",),
            links=tuple(links)),
    ]
    meta = {"night": summary["night"], "version": summary["version"],
            "inputs hash": summary["inputs_hash"], "csstflux": summary["csstflux_version"],
            "created": summary["created"]}
    return str(write_html_report(qa / "index.html", f"csstflux nightly flat {summary['night']}",
                                 meta, sections, assets_dir=qa))


@dataclass(frozen=True)
class TruthComparison:
    """A build against the simulation's truth, per detector (:func:`compare_truth`)."""

    diff: dict[str, Array]
    """Detector → recovered − true flat, (n_band, n_gy, n_gx)."""
    z: dict[str, Array]
    """Detector → (recovered − true) / σ, (n_band, n_gy, n_gx); NaN where the fit failed."""
    missing: tuple[str, ...]
    """Detectors of the build the truth does not have (not compared)."""

    def rows(self) -> list[dict[str, Any]]:
        """Table rows: per detector and for all of them together, the finite z-scores' count,
        mean and standard deviation (ddof 0), and the RMS and max |recovered − true|."""
        names = list(self.z)
        groups = [(k, [k]) for k in names] + ([("all", names)] if len(names) > 1 else [])
        out = []
        for label, keys in groups:
            z = np.concatenate([self.z[k].ravel() for k in keys])
            d = np.concatenate([self.diff[k].ravel() for k in keys])
            z, d = z[np.isfinite(z)], d[np.isfinite(d)]
            out.append({"detector": label, "n": int(z.size),
                        "z mean": float(z.mean()) if z.size else None,
                        "z std": float(z.std()) if z.size else None,
                        "rms(fit - truth)": float(np.sqrt(np.mean(d ** 2))) if d.size else None,
                        "max |fit - truth|": float(np.abs(d).max()) if d.size else None})
        return out


def check_truth_grid(grid_x: Array, grid_y: Array, grid: int) -> None:
    """Before a build: the truth's detector grid has the build's ``grid`` points per axis
    (:class:`ConfigError` naming both, so that no build is wasted on a truth it cannot meet)."""
    found = (np.size(grid_x), np.size(grid_y))
    if found != (grid, grid):
        raise ConfigError(f"the truth's detector grid is {found[0]} x {found[1]} points but "
                          f"the build's is {grid} x {grid}: pass --grid {found[0]} (the "
                          "simulate-exposures --grid of that truth)",
                          expected=f"{grid} x {grid}", found=f"{found[0]} x {found[1]}")


def compare_truth(result: FlatBuild, flats: Mapping[str, Array],
                  wavelength: Mapping[str, Array], grid_x: Array, grid_y: Array
                  ) -> TruthComparison:
    """Recovered − true and z = (recovered − true)/σ for every detector of ``result`` in the
    truth (:func:`csstflux.io.stores.exposures.read_truth`'s flats, wavelengths and grid).

    Raises :class:`GridMismatchError` when the truth's detector grid or a detector's
    wavelengths differ from the build's, or when no detector of the build is in the truth.
    """
    for axis, built, true in (("x", result.grid_x, grid_x), ("y", result.grid_y, grid_y)):
        if np.shape(built) != np.shape(true) or not np.allclose(built, true):
            raise GridMismatchError(f"the truth's detector grid in {axis} is not the build's "
                                    "(build-flat --grid must equal simulate-exposures --grid)",
                                    expected=f"{np.size(built)} points",
                                    found=f"{np.size(true)} points")
    diff, z = {}, {}
    for k in sorted(result.solutions):
        if k not in flats:
            continue
        sol = result.solutions[k]
        w = np.asarray(wavelength[k])
        if w.shape != result.wavelength[k].shape or not np.allclose(w, result.wavelength[k]):
            raise GridMismatchError(f"the truth's wavelengths of {k} are not the build's",
                                    expected=f"{result.wavelength[k].size} wavelengths",
                                    found=f"{w.size}")
        diff[k] = sol.flat - np.asarray(flats[k], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z[k] = np.where(sol.sigma > 0, diff[k] / sol.sigma, np.nan)
    if not z:
        raise GridMismatchError("no detector of the build is in the truth",
                                expected=sorted(result.solutions), found=sorted(flats))
    return TruthComparison(diff, z, tuple(k for k in sorted(result.solutions)
                                          if k not in flats))


def _map_indices(flat: Array) -> list[int]:
    """Up to :data:`N_MAP_WAVELENGTHS` wavelength indices spread over the fitted ones."""
    ok = np.flatnonzero(np.isfinite(flat).all(axis=(1, 2)))
    if ok.size == 0:
        return [flat.shape[0] // 2]
    picks = ok[((np.arange(N_MAP_WAVELENGTHS) + 0.5) * ok.size / N_MAP_WAVELENGTHS)
               .astype(int)]
    return sorted(set(picks.tolist()))


def _detector_figure(result: FlatBuild, k: str, truth: TruthComparison | None) -> Figure:
    """Flat − 1 at a few wavelengths and σ at the middle one; with the truth a second row:
    recovered − true at the same wavelengths and the z map at the middle one."""
    plt = _pyplot()
    sol, w = result.solutions[k], result.wavelength[k]
    idx = _map_indices(sol.flat)
    mid = idx[len(idx) // 2]
    tz = truth if truth is not None and k in truth.z else None
    ncol, nrow = len(idx) + 1, 1 if tz is None else 2
    fig, axs = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.1 * nrow), squeeze=False)

    def show(ax: Any, img: Array, title: str, v: float | None) -> None:
        im = ax.imshow(img, origin="lower", extent=_extent(result),
                       **({"cmap": "viridis"} if v is None
                          else {"cmap": "RdBu_r", "vmin": -v, "vmax": v}))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (pixel)", fontsize=8)
        ax.set_ylabel("y (pixel)", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)

    v = _symmetric(sol.flat[idx] - 1.0, 1e-6)
    for ax, i in zip(axs[0], idx, strict=False):
        show(ax, sol.flat[i] - 1.0, f"{k}: flat - 1, {w[i]:.0f} A", v)
    show(axs[0][-1], sol.sigma[mid], f"{k}: sigma, {w[mid]:.0f} A", None)
    caption = (f"{k}: flat minus one at {', '.join(f'{w[i]:.0f}' for i in idx)} A "
               f"(one colour scale) and its 1 sigma error at {w[mid]:.0f} A")
    if tz is not None:
        d = tz.diff[k]
        v = _symmetric(d[idx], 1e-9)
        for ax, i in zip(axs[1], idx, strict=False):
            show(ax, d[i], f"{k}: fit - truth, {w[i]:.0f} A", v)
        show(axs[1][-1], tz.z[k][mid], f"{k}: (fit - truth) / sigma, {w[mid]:.0f} A",
             _symmetric(tz.z[k][mid], 1.0))
        caption += "; below, recovered minus true at the same wavelengths and the z-scores"
    return Figure(f"detector_{k}", figure_png(fig), caption + ".")


def _z_histogram(truth: TruthComparison) -> Figure:
    """Histogram of all finite z-scores, per detector stacked, with N(0, 1) over it."""
    plt = _pyplot()
    zs = {k: v[np.isfinite(v)].ravel() for k, v in truth.z.items()}
    allz = np.concatenate(list(zs.values()))
    lim = max(4.0, float(np.ceil(np.abs(allz).max()))) if allz.size else 4.0
    bins = np.linspace(-lim, lim, int(8 * lim) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(list(zs.values()), bins=bins, stacked=True, label=list(zs))
    x = np.linspace(-lim, lim, 400)
    ax.plot(x, allz.size * (bins[1] - bins[0]) * np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi),
            "k--", label="N(0, 1)")
    ax.set_xlabel("(fit - truth) / sigma")
    ax.set_ylabel("grid points x wavelengths")
    ax.legend(fontsize=7)
    return Figure("z_histogram", figure_png(fig),
                  "z-scores of every detector, grid point and wavelength; dashed: a "
                  "standard normal of the same count.")


def write_build_report(path: str | os.PathLike[str], result: FlatBuild, *,
                       truth: TruthComparison | None = None,
                       meta: Mapping[str, Any] | None = None,
                       outputs: Mapping[str, str | os.PathLike[str]] | None = None) -> Path:
    """Write the QA page of one flat build (module docstring) to ``path``; return its path.

    Parameters
    ----------
    path : path
        The HTML file (self-contained: the figures are embedded).
    result : FlatBuild
    truth : TruthComparison, optional
        The build against the simulation's truth (:func:`compare_truth`): adds
        recovered − true maps, the z-score histogram and their table.
    meta : mapping, optional
        Header entries before the build's own (e.g. the exposures folder and the store).
    outputs : mapping, optional
        Label → file written beside (the cubes, the Dask performance report), linked
        relative to the page.
    """
    page = Path(path)
    summ = result.summary()
    prov = result.provenance
    names = sorted(result.solutions)
    cont = summ.get("contaminated_excluded") or {}
    det_rows = [{"detector": k, "wavelengths": d["n_wavelengths"],
                 "median stars per wavelength": d["median_stars_per_wavelength"],
                 "median reduced chi2": d["median_reduced_chi2"],
                 "median sigma": d["median_sigma"],
                 "contaminated pixels left out": cont.get(k, 0)}
                for k, d in sorted(summ["detectors"].items())]
    m = summ["matches"]
    match_rows = [{"outcome": MATCH_LABELS.get(k, k), "sources": m[k]}
                  for k in [*(k for k in MATCH_LABELS if k in m),
                            *(k for k in m if k not in MATCH_LABELS)]]
    match_tables = [Table(match_rows, caption="Cross-match of the exposures' sources")]
    if "unanchored" in summ:
        match_tables.append(Table([{"reason": k.replace("_", " "), "stars": v}
                                   for k, v in summ["unanchored"].items()],
                                  caption="Matched but not anchored (left out)"))
    traced = summ.get("n_exposures_traced") or 0
    sections = [
        Section("Build", paragraphs=(
            f"{summ['n_used']} matched star spectra from {summ['n_exposures']} exposures "
            f"({traced} with traces) on {len(names)} detectors: {', '.join(names)}; "
            f"{summ['n_passes']} passes, clipping "
            + {True: "converged", False: "not converged", None: "off"}[
                summ.get("clip_converged")] + ".",
            "Contaminated pixels left out: "
            + (", ".join(f"{k} {v}" for k, v in sorted(cont.items())) or "none") + "."),
            tables=(Table(det_rows, caption="Per detector"), *match_tables)),
        Section("Flat maps", figures=tuple(_detector_figure(result, k, truth) for k in names)),
        Section("Residuals and star counts", figures=(fit_curves_figure(result),)),
    ]
    if truth is not None:
        note = (f"No truth for {', '.join(truth.missing)}." if truth.missing else
                "Every detector compared.")
        sections.append(Section(
            "Against the truth",
            paragraphs=("z = (fit - truth) / sigma over every grid point and fitted "
                        "wavelength; a calibrated flat has z mean 0 and std 1. " + note,),
            tables=(Table(truth.rows(), caption="z-scores against the truth"),),
            figures=(_z_histogram(truth),)))
    if outputs:
        sections.append(Section("Files", links=tuple(
            Link(quote(Path(os.path.relpath(Path(p).resolve(), page.parent.resolve()))
                       .as_posix()), f"{label}: {Path(p).name}") for label, p in outputs.items())))
    head = {**(meta or {}), "detectors": ", ".join(names), "order": prov.get("order"),
            "star scale": prov.get("star_scale"), "store": prov.get("store"),
            "csstflux": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    return write_html_report(page, "csstflux build-flat QA", head, sections)
