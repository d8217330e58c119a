"""The nightly calibration job: a rolling-window flat, versioned, with its QA and summary.

``csstflux nightly --config jobs/nightly.toml --night YYYY-MM-DD`` runs :func:`run_night`:

1. **Plan** (:func:`plan_night`). The exposures of the window (``window_nights`` nights ending
   with ``night``) are found under ``exposures_root`` by the convention of
   :mod:`csstflux.io.stores.nights` and checked; incomplete groups are skipped and reported. Nothing
   usable in the night's own folder means *nothing to do* (the command exits 3). The version id is
   ``flat-{night}-{h}`` where ``h`` is the first 12 hex digits of a SHA-256 over the inputs:
   the night, the window's exposure groups (names and the bytes of their metadata files and
   chunk sizes), the predictions store's identity (its input hash, model id and creation
   time), the flat settings and the csstflux version. The same inputs give the same id.
2. **Build**. Under the night's lock (:class:`csstflux.io.stores.nights.NightLock`) the flat is
fitted
   on Dask (:func:`csstflux.pipeline.flats.build_flat`, tasks ``flat-census-*``,
   ``flat-equations-*`` and ``flat-reduce-*``) inside a performance report; outputs go to
   a temporary folder (``versions/.{id}.XXXXXXXX.partial/``, left by a failed run until the
   night's next run) that is renamed to ``versions/{id}/`` only when
   every file is written, so a version folder is always complete. A version folder that
   already exists is never rewritten: rerunning a night whose inputs have not changed finds
   it and reports *nothing to do*; a night whose inputs changed (late exposures) gets a new id.
3. **Record**. ``versions/{id}/summary.json`` (machine-readable), the QA report
   ``versions/{id}/qa/index.html`` (made by the caller's ``qa`` callback) and an entry in
   ``index.json`` (all versions in the order they were made; written atomically).

Output layout (``output_root``)::

    versions/{id}/flat.fits, flat_sigma.fits, flat.zarr, summary.json,
                  dask-performance.html, qa/index.html, qa/*.png
    index.json          [{version, night, created, n_exposures, n_stars}, ...]
    nights/{night}.json the summary of the night's latest run
    locks/{night}.lock  held while a run of that night is in progress
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csstflux._version import __version__
from csstflux.config import load_job, to_dict
from csstflux.errors import ConfigError, StoreError
from csstflux.flat.equations import check_anchored
from csstflux.flat.settings import FlatSettings
from csstflux.io.atomic import discard_leftovers, replace_dir, temporary_dir, write_text
from csstflux.io.stores.flatcube import read_flat_zarr
from csstflux.io.stores.nights import NightExposures, NightLock, scan_night, window_nights
from csstflux.io.stores.predictions import check_output_location, read_attrs
from csstflux.logs import fmt_path
from csstflux.pipeline.cluster import ClusterHandle, ClusterSettings, start_cluster
from csstflux.pipeline.flats import FlatBuild, build_flat, write_outputs

logger = logging.getLogger(__name__)

#: Exit codes of the nightly job.
#: What a run did (the command turns it into an exit code: csstflux.cli.errors).
DONE, NOTHING_TO_DO = "done", "nothing to do"


@dataclass(frozen=True)
class NightlyConfig:
    """The ``[nightly]`` table of a nightly job file (``jobs/nightly.toml``)."""

    exposures_root: Path
    """Root of the night folders ``{root}/{YYYY-MM-DD}/exposure-*.zarr``."""
    predictions: Path
    """Predictions store of the standards (``csstflux predict-catalog``)."""
    output_root: Path
    """Where versions, the index, night summaries and locks are written."""
    window_nights: int = 7
    """Nights in the rolling window, the run's night included."""
    flat: FlatSettings = field(default_factory=FlatSettings)
    """The flat fit (``[nightly.flat]``, as ``csstflux build-flat``'s options)."""
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    """The Dask cluster (``[nightly.cluster]``, as every Dask command's cluster options)."""

    def __post_init__(self) -> None:
        if self.window_nights < 1:
            raise ValueError(f"window_nights must be >= 1, got {self.window_nights}")


def load_nightly_config(path: str | os.PathLike[str]) -> NightlyConfig:
    """Read the ``[nightly]`` table (:func:`csstflux.config.load_job`: relative paths are
    taken from the file's folder)."""
    return load_job(path, NightlyConfig, "nightly")


@dataclass(frozen=True)
class NightPlan:
    """What a run of one night would do (:func:`plan_night`)."""

    night: dt.date
    nights: tuple[NightExposures, ...]
    version: str
    inputs_hash: str
    version_dir: Path
    exists: bool

    @property
    def tonight(self) -> NightExposures:
        return self.nights[-1]

    @property
    def exposures(self) -> list[Path]:
        return [p for n in self.nights for p in n.exposures]

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return [s for n in self.nights for s in n.skipped]

    @property
    def nothing_to_do(self) -> bool:
        return self.exists or not self.tonight.exposures

    def reason(self) -> str:
        if self.exists:
            return f"version {self.version} already exists (same inputs)"
        if not self.tonight.exists:
            return f"no folder for night {self.night} ({self.tonight.folder})"
        if not self.tonight.exposures:
            return f"no complete exposure in {self.tonight.folder}"
        return "to do"

    def describe(self) -> dict[str, Any]:
        return {"night": self.night.isoformat(), "version": self.version,
                "inputs_hash": self.inputs_hash, "exists": self.exists,
                "nothing_to_do": self.nothing_to_do, "reason": self.reason(),
                "window": [{"night": n.night.isoformat(), "folder": str(n.folder),
                            "n_exposures": len(n.exposures), "n_skipped": len(n.skipped)}
                           for n in self.nights],
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped]}


def _group_fingerprint(path: Path, h: Any) -> None:
    """Feed a Zarr group's metadata bytes and chunk-file names and sizes into ``h``."""
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode())
        if f.name == "zarr.json":
            h.update(f.read_bytes())
        else:
            h.update(str(f.stat().st_size).encode())


def inputs_hash(night: dt.date, exposures: list[Path], store_attrs: dict[str, Any],
                cfg: NightlyConfig) -> str:
    """SHA-256 (hex) of everything that determines a night's flat (module docstring)."""
    h = hashlib.sha256()
    model = store_attrs.get("model")
    ident = {"night": night.isoformat(), "csstflux": __version__,
             "flat": to_dict(cfg.flat), "window_nights": cfg.window_nights,
             "store": {"input_hash": store_attrs.get("input_hash"),
                       "created": store_attrs.get("created"),
                       "model": model.get("id") if isinstance(model, dict) else model}}
    h.update(json.dumps(ident, sort_keys=True, default=str).encode())
    for p in exposures:
        h.update(f"{p.parent.name}/{p.name}".encode())
        _group_fingerprint(p, h)
    return h.hexdigest()


def plan_night(cfg: NightlyConfig, night: dt.date) -> NightPlan:
    """Scan the window, check exposures, derive the version id; reads no data, writes nothing."""
    store_attrs = read_attrs(cfg.predictions)
    nights = tuple(scan_night(cfg.exposures_root, n)
                   for n in window_nights(night, cfg.window_nights))
    exposures = [p for n in nights for p in n.exposures]
    if cfg.flat.star_scale == "anchored":  # an unanchored store fails here, before any work
        check_anchored(cfg.predictions, [str(p) for p in exposures])
    digest = inputs_hash(night, exposures, store_attrs, cfg)
    version = f"flat-{night.isoformat()}-{digest[:12]}"
    vdir = Path(cfg.output_root) / "versions" / version
    return NightPlan(night, nights, version, digest, vdir, (vdir / "summary.json").is_file())


def read_index(output_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``index.json``: every version made, oldest first (empty when none)."""
    p = Path(output_root) / "index.json"
    if not p.is_file():
        return []
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise StoreError(f"version index is not valid JSON ({exc})", path=p) from exc
    return list(data)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def previous_version(output_root: str | os.PathLike[str], version: str
                     ) -> dict[str, Any] | None:
    """The newest indexed version other than ``version`` whose folder is complete."""
    root = Path(output_root)
    for entry in reversed(read_index(root)):
        if entry.get("version") != version and \
                (root / "versions" / str(entry["version"]) / "summary.json").is_file():
            return entry
    return None


def flat_changes(new: FlatBuild, previous_zarr: Path) -> dict[str, dict[str, Any]]:
    """Per detector: new / previous − 1 per wavelength (RMS and max |·|) and the cube."""
    old, _ = read_flat_zarr(previous_zarr)
    out: dict[str, dict[str, Any]] = {}
    for k, sol in new.solutions.items():
        if k not in old or old[k]["flat"].shape != sol.flat.shape:
            continue
        ratio = sol.flat / old[k]["flat"].astype(np.float64) - 1.0
        out[k] = {"ratio": ratio,
                  "rms": np.sqrt(np.nanmean(ratio ** 2, axis=(1, 2))),
                  "max_abs": float(np.nanmax(np.abs(ratio)))}
    return out


def _summary(plan: NightPlan, cfg: NightlyConfig, result: FlatBuild, outputs: dict[str, str],
             prev: dict[str, Any] | None, changes: dict[str, dict[str, Any]],
             extra: dict[str, Any]) -> dict[str, Any]:
    dets = result.summary()["detectors"]
    for k, ch in changes.items():
        dets[k]["change_vs_previous_rms_median"] = float(np.nanmedian(ch["rms"]))
        dets[k]["change_vs_previous_max_abs"] = ch["max_abs"]
    per_night = {n.night.isoformat(): len(n.exposures) for n in plan.nights}
    return {"status": DONE, **plan.describe(),
            "exposures_per_night": per_night, "n_exposures": len(plan.exposures),
            "n_stars": result.equations.n_used, "matches": dict(result.equations.matches),
            "n_passes": result.n_passes, "detectors": dets,
            "previous_version": None if prev is None else prev["version"],
            "outputs": outputs, "config": to_dict(cfg),
            "csstflux_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **extra}


QaCallback = Callable[[Path, NightPlan, FlatBuild, dict[str, Any], dict[str, dict[str, Any]]],
                      str]


@dataclass
class NightRun:
    """What :func:`run_night` did."""

    plan: NightPlan
    status: str
    """:data:`DONE` or :data:`NOTHING_TO_DO`."""
    summary: dict[str, Any]


def run_night(cfg: NightlyConfig, night: dt.date, *, qa: QaCallback | None = None,
              handle: ClusterHandle | None = None) -> NightRun:
    """Plan, lock, build, write and record one night (module docstring).

    ``qa(version_dir, plan, result, summary, changes)`` writes the QA report into the
    unfinished version folder and returns its path. ``handle``: a cluster to use (else one is
    started from ``cfg.cluster`` and closed at the end).
    """
    plan = plan_night(cfg, night)
    for p, why in plan.skipped:
        logger.info("skipped %s: %s", fmt_path(p), why)
    if plan.nothing_to_do:
        logger.info("nothing to do: %s", plan.reason())
        return NightRun(plan, NOTHING_TO_DO, {"status": NOTHING_TO_DO, **plan.describe()})
    root = Path(cfg.output_root)
    with NightLock(root / "locks", night):
        if (plan.version_dir / "summary.json").is_file():   # finished while we waited
            return NightRun(plan, NOTHING_TO_DO, {"status": NOTHING_TO_DO,
                                                  **plan.describe()})
        discard_leftovers(plan.version_dir)   # a killed run's; the lock keeps out live ones
        work = temporary_dir(plan.version_dir)
        own = handle is None
        if handle is None:
            handle = start_cluster(cfg.cluster)
        try:
            dashboard = handle.dashboard
            logger.info("dashboard: %s", dashboard)
            logger.info("building %s from %d exposures", plan.version, len(plan.exposures))
            report = work / "dask-performance.html"
            with handle.performance_report(report):
                result = build_flat([str(p) for p in plan.exposures], cfg.predictions,
                                    handle.client, cfg.flat)
        finally:
            if own:
                handle.close()
        result.provenance.update(night=night.isoformat(), version=plan.version,
                                 inputs_hash=plan.inputs_hash)
        outputs = {k: str(plan.version_dir / Path(v).name)
                   for k, v in write_outputs(result, work / "flat").items()}
        prev = previous_version(root, plan.version)
        changes = flat_changes(result, root / "versions" / str(prev["version"]) / "flat.zarr") \
            if prev is not None else {}
        outputs["performance_report"] = str(plan.version_dir / report.name)
        summary = _summary(plan, cfg, result, outputs, prev, changes,
                           {"dashboard": dashboard})
        if qa is not None:
            qa_path = Path(qa(work, plan, result, summary, changes))
            summary["outputs"]["qa_report"] = str(plan.version_dir
                                                  / qa_path.relative_to(work))
        _write_json(work / "summary.json", summary)
        if plan.version_dir.exists():
            raise StoreError("version folder appeared during the run; not overwritten",
                             path=plan.version_dir)
        replace_dir(work, plan.version_dir)
        index = read_index(root)
        index.append({"version": plan.version, "night": night.isoformat(),
                      "created": summary["created"], "n_exposures": summary["n_exposures"],
                      "n_stars": summary["n_stars"]})
        _write_json(root / "index.json", index)
        _write_json(root / "nights" / f"{night.isoformat()}.json", summary)
    return NightRun(plan, DONE, summary)


def check_config(cfg: NightlyConfig) -> None:
    """Validate the roots before any work (the store is opened and checked by the plan)."""
    if not Path(cfg.exposures_root).is_dir():
        raise ConfigError("exposures_root is not a folder", path=cfg.exposures_root)
    out = Path(cfg.output_root)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the output root ({exc.strerror})", path=out) from exc
    check_output_location(out)

