"""``csstflux simulate-exposures``, ``build-flat`` and ``flat-precision``: the 3D flat from stars.

Exit status (:mod:`csstflux.cli.errors`). A command that would produce nothing useful says why
and exits 1 ("failed", :class:`csstflux.errors.EmptyResultError`): simulate-exposures
when no star of the store can land on any of the detectors, build-flat when the folder holds no
exposure or no exposure source matched a store star. Not 2: no option is wrong as such; not 3:
"nothing to do" means the work is already done (``nightly``).

Throughputs. Without ``--throughputs`` simulate-exposures and flat-precision use the documented
fallback, a top-hat of 0.3 over each band, and say so: simulate-exposures warns on stderr (in
``--json``: the ``warnings`` list) and records it in every exposure (``throughput_source``),
flat-precision prints it and writes ``"throughput"`` in its JSON. A simulation's throughput is
a choice, not a missing input, so neither requires the option; build-flat needs none (it uses
the curve each exposure recorded).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import click

from csstflux.cli.errors import handle_errors
from csstflux.cli.options import cluster_options, cluster_settings, settings_options
from csstflux.flat.settings import FlatSettings
from csstflux.logs import fmt_num, fmt_path, quiet_progress

log = logging.getLogger(__name__)


@click.command("simulate-exposures")
@click.option("--predictions", required=True, type=click.Path(exists=True, file_okay=False),
              help="Predictions store (csstflux predict-catalog).")
@click.option("--out", required=True, help="Output folder for exposure-*.zarr and truth.npz.")
@click.option("--ra", type=float, required=True, help="Field centre RA, deg.")
@click.option("--dec", type=float, required=True, help="Field centre Dec, deg.")
@click.option("--radius", default=1.0, show_default=True, help="Field radius, deg.")
@click.option("--pointings", default=3, show_default=True, help="Dithered exposures.")
@click.option("--dither", default=20.0, show_default=True, help="Dither half-range, arcsec.")
@click.option("--detectors", default=None,
              help="Comma-separated detectors [default: one per band, GU-03,GV-02,GI-01].")
@click.option("--amplitude", default=0.03, show_default=True,
              help="Large-scale flat amplitude (0.01-0.05).")
@click.option("--ripple", default=0.0, show_default=True, help="Small-scale ripple rms.")
@click.option("--exposure-time", default=150.0, show_default=True, help="Seconds.")
@click.option("--sky", default=1.0, show_default=True,
              help="Sky, e-/s per output pixel in the aperture.")
@click.option("--read-noise", default=10.0, show_default=True,
              help="Read noise, e- per output pixel.")
@click.option("--throughputs", type=click.Path(exists=True, file_okay=False),
              help="Folder of {GU,GV,GI}.Throughput.1st.fits [default: top-hat 0.3].")
@click.option("--ideal", is_flag=True, help="Truth SEDs = predictions, noise-free counts.")
@click.option("--grid", default=9, show_default=True, help="Truth cube grid points per axis.")
@click.option("--units", type=click.Choice(["physical", "relative"]), default="physical",
              show_default=True, help="physical: counts from f_lambda through the CSST "
              "collecting area, and photometry.csv written; relative: the older simulation "
              "(e- rates proportional to the relative SED, no photometry).")
@click.option("--ebv-mean", type=float,
              help="Mean of the stars' exponential E(B-V), mag; 0: no reddening "
              "[default: csstflux.flat.stars.EBV_MEAN, 0].")
@click.option("--ebv-max", type=float,
              help="E(B-V) truncation, mag [default: EBV_MAX, 0.5].")
@click.option("--phot-bands", help="Bands of photometry.csv, comma-separated registry names "
              "[default: PHOT_BANDS, sdss_u..sdss_z].")
@click.option("--phot-sigma", help="Their stated 1 sigma, mag: one value or one per band "
              "[default: PHOT_SIGMA, 0.03,0.02,0.02,0.02,0.03].")
@click.option("--phot-floor", type=float, help="Extra photometric scatter not in the _err "
              "columns, mag (calibration) [default: PHOT_FLOOR, the anchor's floor 0.02].")
@click.option("--traces/--no-traces", default=True, show_default=True,
              help="Place each star's first-order trace on its detector (the flat applied "
              "at x(lambda), y(lambda), extraction at the band's resolution, contamination "
              "by neighbours flagged); --no-traces: one position per star at R = 200.")
@click.option("--instrument", type=click.Path(exists=True, dir_okay=False),
              help="Slitless instrument model (TOML, csstflux.flat.traces) [default: the "
              "shipped csstflux/data/slitless_instrument.toml, derived from published "
              "numbers].")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def simulate_exposures_cmd(predictions: str, out: str, ra: float, dec: float, radius: float,
                           pointings: int, dither: float, detectors: str | None,
                           amplitude: float, ripple: float, exposure_time: float, sky: float,
                           read_noise: float, throughputs: str | None, ideal: bool, grid: int,
                           units: str, ebv_mean: float | None, ebv_max: float | None,
                           phot_bands: str | None, phot_sigma: str | None,
                           phot_floor: float | None, traces: bool, instrument: str | None,
                           seed: int, as_json: bool) -> None:
    """Simulate slitless exposures of a field through a known flat per detector.

    Exits 1 when no star of the store can land on any of the detectors (nothing is written).
    """
    from csstflux.errors import ConfigError
    from csstflux.flat.observe import DEFAULT_DETECTORS, simulate
    from csstflux.photometry import parse_band_list

    dets = tuple(d.strip() for d in detectors.split(",")) if detectors else DEFAULT_DETECTORS
    given: dict[str, Any] = {k: v for k, v in (("ebv_mean", ebv_mean), ("ebv_max", ebv_max),
                                               ("phot_floor", phot_floor)) if v is not None}
    if phot_bands is not None:
        given["phot_bands"] = parse_band_list(phot_bands)
    if phot_sigma is not None:
        try:
            given["phot_sigma"] = [float(v) for v in phot_sigma.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--phot-sigma must be numbers, got {phot_sigma!r}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = simulate(predictions, out, ra=ra, dec=dec, radius_deg=radius,
                       n_pointings=pointings, detectors=dets, amplitude=amplitude,
                       ripple=ripple, exposure_time=exposure_time, throughput_dir=throughputs,
                       ideal=ideal, seed=seed, dither_arcsec=dither, grid=grid,
                       sky_per_pixel=sky, read_noise=read_noise,
                       units=units,  # type: ignore[arg-type]
                       traces=traces, instrument=instrument, **given)
    warned = [str(w.message) for w in caught]
    summary = {"exposures": [str(p) for p in res.exposures], "truth": str(res.truth),
               "photometry": str(res.photometry) if res.photometry else None,
               "n_stars_field": res.n_stars_field, "n_sources": res.n_sources,
               "detectors": res.detectors, "traces": traces,
               "contaminated_fraction": res.contaminated_fraction, "warnings": warned}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for w in warned:
        log.warning("%s", w)
    click.echo(f"{len(res.exposures)} exposures of {res.n_stars_field} field stars on "
               f"{', '.join(res.detectors)}: sources per exposure {res.n_sources}")
    if traces:
        click.echo("first-order traces placed; CONTAMINATED pixels per exposure: "
                   + ", ".join(f"{v:.2%}" for v in res.contaminated_fraction))
    click.echo(f"truth: {fmt_path(res.truth)}")
    if res.photometry:
        click.echo(f"photometry: {res.photometry} (anchor the store with it: csstflux anchor "
                   f"{predictions} --photometry {res.photometry})")


@click.command("build-flat")
@click.option("--exposures", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of exposure-*.zarr.")
@click.option("--predictions", required=True, type=click.Path(exists=True, file_okay=False),
              help="Predictions store to cross-match against.")
@click.option("--out", required=True, help="Output prefix: PREFIX.fits, PREFIX_sigma.fits, "
              "PREFIX.zarr.")
@settings_options(FlatSettings, "flat")
@cluster_options
@click.option("--qa", "qa_page", type=click.Path(dir_okay=False),
              help="Also write a self-contained QA page (HTML) of the build: flat - 1 maps "
              "at a few wavelengths and the sigma map per detector, reduced chi2 and stars "
              "against wavelength, cross-match counts, contaminated pixels left out.")
@click.option("--truth", type=click.Path(exists=True),
              help="The simulation's truth (truth.npz, or the simulate-exposures folder "
              "holding it): the --qa page adds recovered - true maps and the z-scores "
              "(fit - truth)/sigma with their mean and std.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def build_flat_cmd(exposures: str, predictions: str, out: str, flat: FlatSettings,
                   cluster_flags: dict[str, Any], qa_page: str | None, truth: str | None,
                   as_json: bool) -> None:
    """Fit the 3D flat (λ, y, x) per detector from exposures and predicted SEDs, on Dask.

    Positions are each exposure's traces (or, for exposures without, the sources' single
    positions); spectra are brought to R = 200 first and CONTAMINATED pixels left out (counted
    in the summary). Exits 1 when the folder holds no exposure or no source matched the store.
    """
    from csstflux.flat.equations import check_anchored, exposure_paths
    from csstflux.pipeline.cluster import start_cluster
    from csstflux.pipeline.flats import build_flat, write_outputs

    if truth is not None and qa_page is None:
        raise click.UsageError("--truth goes with --qa PAGE.html (it adds to the QA page)")
    cluster = cluster_settings(cluster_flags)
    paths = exposure_paths(exposures, required=True)  # fail before a cluster is started
    if flat.star_scale == "anchored":  # (build_flat checks both too)
        check_anchored(predictions, paths)
    true_flat = None
    if truth is not None:
        from csstflux.io.stores.exposures import read_truth
        from csstflux.report.flat_qa import check_truth_grid

        true_flat = read_truth(truth)[:4]
        check_truth_grid(true_flat[2], true_flat[3], flat.grid)
    if as_json:
        quiet_progress()
    report = Path(out + ".performance.html")
    report.parent.mkdir(parents=True, exist_ok=True)
    handle = start_cluster(cluster)
    dashboard = handle.dashboard
    try:
        log.info("dask: %s cluster, dashboard %s", handle.kind, dashboard)
        with handle.performance_report(report):
            res = build_flat(exposures, predictions, handle.client, flat)
    finally:
        handle.close()
    files = write_outputs(res, out)
    summary = {**res.summary(), "files": files, "dashboard": dashboard,
               "performance_report": str(report)}
    if qa_page is not None:
        from csstflux.report.flat_qa import compare_truth, write_build_report

        compared = compare_truth(res, *true_flat) if true_flat is not None else None
        meta = {"exposures": exposures, "predictions": predictions, "flat": out,
                **({"truth": truth} if truth is not None else {})}
        page = write_build_report(qa_page, res, truth=compared, meta=meta,
                                  outputs={**files, "performance report": report})
        summary["qa_report"] = str(page)
        if compared is not None:
            z = compared.rows()[-1]  # all detectors together
            summary["truth"] = {"path": truth, "n": z["n"], "z_mean": z["z mean"],
                                "z_std": z["z std"]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    m = summary["matches"]
    click.echo(f"{summary['n_exposures']} exposures, {m['total']} sources: {m['matched']} "
               f"matched, {m['no_match']} unmatched, {m['ambiguous']} ambiguous and "
               f"{m['contested']} contested (dropped); {summary['n_passes']} passes")
    if "unanchored" in summary:
        u = summary["unanchored"]
        click.echo(f"  matched but not anchored (left out): {u['no_photometry']} without "
                   f"photometry, {u['phot_inconsistent']} inconsistent, {u['no_sed_abs']} "
                   "without sed_abs")
    cont = summary.get("contaminated_excluded") or {}
    click.echo(f"  positions: traces in {summary.get('n_exposures_traced', 0)} of "
               f"{summary['n_exposures']} exposures; contaminated pixels left out: "
               + (", ".join(f"{k} {v}" for k, v in cont.items()) or "none"))
    for k, d in summary["detectors"].items():
        click.echo(f"  {k}: {d['n_wavelengths']} wavelengths, median "
                   f"{d['median_stars_per_wavelength']:.0f} stars, median reduced chi2 "
                   f"{fmt_num(d['median_reduced_chi2'], 3)}, median sigma "
                   f"{fmt_num(d['median_sigma'], 3)}")
    if summary.get("truth", {}).get("n"):
        t = summary["truth"]
        click.echo(f"  against the truth: z = (fit - truth)/sigma mean {t['z_mean']:.3g}, "
                   f"std {t['z_std']:.3g} over {t['n']} values")
    for k, v in files.items():
        click.echo(f"{k}: {fmt_path(v)}")
    click.echo(f"performance report: {fmt_path(report)}")
    if "qa_report" in summary:
        click.echo(f"QA page: {fmt_path(summary['qa_report'])}")


@click.command("flat-precision")
@click.option("--n-stars", default=400, show_default=True, help="Stars per detector.")
@click.option("--trials", default=10, show_default=True, help="Monte Carlo trials per band.")
@click.option("--conditions", type=click.Choice(["ideal", "realistic", "both"]),
              default="both", show_default=True,
              help="ideal: SEDs exact, photon/read noise only; realistic: plus sed_err.")
@click.option("--amplitude", default=0.03, show_default=True,
              help="Large-scale flat amplitude (0.01-0.05).")
@click.option("--star-scale", type=click.Choice(["known", "anchored"]), default="known",
              show_default=True, help="known: exact absolute fluxes (the paper's); anchored: "
              "reddened stars in physical units whose absolute SEDs come from simulated "
              "sdss_u..z photometry through csstflux anchor's fit (the same counts are also "
              "fitted with the true fluxes: known_same).")
@click.option("--traces/--no-traces", default=True, show_default=True,
              help="Record the light along first-order traces (csstflux.flat.traces) and "
              "report, beside the fit that uses them, the same counts fitted at the stars' "
              "positions (the traces ignored); --no-traces: every wavelength at the star's "
              "position (the paper's idealised trial).")
@click.option("--instrument", type=click.Path(exists=True, dir_okay=False),
              help="Slitless instrument model (TOML) [default: the shipped one].")
@click.option("--seed", default=0, show_default=True)
@click.option("--throughputs", type=click.Path(exists=True, file_okay=False),
              help="Folder of {GU,GV,GI}.Throughput.1st.fits [default: top-hat 0.3, said "
              "in the output].")
@click.option("--scaling", default="100,200,400,800", show_default=True,
              help="Comma-separated star numbers for the precision-vs-N plot ('' to skip).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the plots (flat maps, residuals vs wavelength, vs N).")
@click.option("--json", "as_json", is_flag=True, help="Print the precisions as JSON.")
@handle_errors
def flat_precision_cmd(n_stars: int, trials: int, conditions: str, amplitude: float,
                       star_scale: str, traces: bool, instrument: str | None, seed: int,
                       throughputs: str | None, scaling: str, out: str | None,
                       as_json: bool) -> None:
    """Monte Carlo precision of the recovered flat per band (RMS of recovered - true).

    With traces (the default) it reports both the fit that uses the traces and the same
    counts fitted as if there were none, with the paper's numbers beside.
    """
    from csstflux.flat.montecarlo import (
        TOP_HAT,
        band_throughputs,
        precision_vs_stars,
        run_precision,
    )
    from csstflux.flat.traces import load_instrument

    inst = load_instrument(instrument) if traces else None

    anchorer = None
    if star_scale == "anchored":
        from csstflux.flat.stars import SimulatedPhotometry
        anchorer = SimulatedPhotometry()
    curves = None
    if throughputs:
        from csstflux.io.formats.csst_throughput import load_band_throughputs
        curves = load_band_throughputs(throughputs)
    tps = band_throughputs(curves)
    tp_source = throughputs or f"tophat {TOP_HAT}"
    conds = ["ideal", "realistic"] if conditions == "both" else [conditions]
    results = {c: run_precision(n_stars, trials, c, amplitude, seed,  # type: ignore[arg-type]
                                tps, anchorer=anchorer, instrument=inst)
               for c in conds}
    summary: dict[str, object]
    if len(conds) == 1:
        summary = results[conds[0]].to_dict()
    else:
        summary = {c: r.to_dict() for c, r in results.items()}
    summary["throughput"] = tp_source
    summary["paper"] = dict(PAPER_PRECISION)
    if inst is not None:
        summary["instrument"] = {"source": instrument or "shipped",
                                 "fingerprint": inst.fingerprint}
    files: dict[str, str] = {}
    if out:
        ns = [int(v) for v in scaling.split(",") if v.strip()]
        scan = {c: precision_vs_stars(ns, trials, c, amplitude,  # type: ignore[arg-type]
                                      seed, tps, anchorer=anchorer, instrument=inst)
                for c in conds} if ns else {}
        files = _precision_plots(results, scan, out)
        summary["files"] = files
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"flat precision, {n_stars} stars, {trials} trials, amplitude {amplitude}, "
               f"star scale {star_scale}, throughput {tp_source}, "
               + ("first-order traces" if inst is not None else "no traces")
               + " (median over trials of the RMS over grid and wavelengths; band-averaged):")
    for c, r in results.items():
        vals = ", ".join(f"{b} {v:.2e} ({r.band_averaged[b]:.1e})" for b, v in r.rms.items())
        click.echo(f"  {c}" + (", traces used" if r.traces else "") + f": {vals}")
        if r.ignoring_traces is not None and r.ignoring_shift is not None:
            ign = ", ".join(f"{b} {v:.2e}" for b, v in r.ignoring_traces.items())
            click.echo(f"  {c}, same counts, traces ignored: {ign}")
            sh = ", ".join(f"{b} {v:.2e}" for b, v in r.ignoring_shift.items())
            click.echo(f"  {c}, RMS of (traces ignored - traces used): {sh}")
        if r.known_same is not None:
            same = ", ".join(f"{b} {v:.2e}" for b, v in r.known_same.items())
            click.echo(f"  {c}, same counts with the true fluxes: {same}")
    click.echo("  paper (400 stars, ideal, no traces): "
               + ", ".join(f"{b} {v:.0e}" for b, v in PAPER_PRECISION.items()))
    for k, v in files.items():
        click.echo(f"{k}: {fmt_path(v)}")


#: The paper's flat precision, 400 stars, ideal conditions (§5), RMS per band.
PAPER_PRECISION: dict[str, float] = {"GU": 5e-3, "GV": 3e-4, "GI": 5e-4}


def _precision_plots(results: dict, scan: dict, out: str) -> dict[str, str]:
    """Flat maps per band, residual RMS against λ, precision against the number of stars."""
    import matplotlib

    from csstflux.report.flat_qa import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from csstflux.flat.montecarlo import SHAPE

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    first = next(iter(results.values()))
    for band, tr in first.example.items():
        k = tr.wavelength.size // 2
        t, r = tr.truth[k], tr.recovered[k]
        lim = max(np.nanmax(np.abs(t - 1)), np.nanmax(np.abs(r - 1)), 1e-6)
        fig, axs = plt.subplots(1, 3, figsize=(12, 3.6))
        for ax, img, title in ((axs[0], t - 1, "true - 1"), (axs[1], r - 1, "recovered - 1"),
                               (axs[2], r - t, "recovered - true")):
            v = lim if ax is not axs[2] else max(np.nanmax(np.abs(img)), 1e-9)
            im = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v,
                           extent=(0, SHAPE[1], 0, SHAPE[0]))
            ax.set_title(f"{band} {title}, {tr.wavelength[k]:.0f} A ({first.conditions})")
            fig.colorbar(im, ax=ax, shrink=0.8)
        files[f"map_{band}"] = save_figure(fig, d / f"flat_map_{band}.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    for c, res in results.items():
        for band, w in res.wavelength.items():
            ax.plot(w, res.rms_vs_wavelength[band], ls="-" if c == "ideal" else "--",
                    label=f"{band} {c}")
    ax.set_yscale("log")
    ax.set_xlabel("wavelength (A)")
    ax.set_ylabel("RMS(recovered - true)")
    ax.legend(fontsize=7, ncol=2)
    files["residual_vs_wavelength"] = save_figure(fig, d / "residual_vs_wavelength.png")
    if scan:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for c, runs in scan.items():
            ns = np.array([r.n_stars for r in runs], dtype=float)
            for band in runs[0].rms:
                ys = np.array([r.rms[band] for r in runs])
                ax.plot(ns, ys, "o-" if c == "ideal" else "s--", label=f"{band} {c}")
            ref = runs[0].rms[next(iter(runs[0].rms))]
            ax.plot(ns, ref * np.sqrt(ns[0] / ns), "k:", lw=1)
        ax.plot([], [], "k:", label="1/sqrt(N)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of stars")
        ax.set_ylabel("RMS(recovered - true)")
        ax.legend(fontsize=7, ncol=2)
        files["precision_vs_stars"] = save_figure(fig, d / "precision_vs_stars.png")
    return files
