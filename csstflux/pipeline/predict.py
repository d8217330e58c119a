"""``predict-catalog``: the survey-scale prediction job, from a catalogue to a Zarr store.

Order of work: validate every option and input that can be validated (:func:`check_options`: the
model's files and checksum, the output folder; :func:`read_inputs`: the catalogue's columns and
the selection, or the release root's files) before any cluster starts; build the plan (catalogue
rows without a position flagged ``BAD_COORDS``, repeated obsids reduced to their first row and
flagged ``DUPLICATE``, the dropped rows listed; see :mod:`csstflux.pipeline.plan`); create the
store or check that the existing one may be resumed; submit one task per chunk not yet marked
done (tasks named ``predict-chunk-<i>``; the scan of headers, when there is no catalogue, runs
first as ``scan-headers-<i>``); gather the per-chunk summaries; write the failures table (files
that could not be used, then the duplicate rows dropped) and the final attributes, with the
number of stars carrying each flag (``flag_counts``, also in :class:`RunResult`). A finished
store is never silently overwritten; a store whose input list, model or options differ is not
resumed unless ``overwrite`` is set. A chunk whose write fails (disk full, permission) stops the
job with a :class:`~csstflux.errors.StoreError` naming the file and the system's reason; the
chunks already marked done are kept, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np

from csstflux._version import __version__
from csstflux.config import JobPath, PathField, to_dict
from csstflux.errors import ConfigError, StoreError
from csstflux.grids import OUTPUT_GRID
from csstflux.io.formats import lamost_catalog
from csstflux.io.lock import store_lock
from csstflux.io.stores.predictions import (
    FORMAT_VERSION,
    check_output_location,
    create_store,
    finalize,
    printable,
    read_attrs,
    write_failures,
)
from csstflux.io.validate import mask_nonpositive_sed
from csstflux.logs import Progress, fmt_path, track, verbose
from csstflux.pipeline.cluster import ClusterHandle, ClusterSettings, submit_windowed
from csstflux.pipeline.plan import (
    Plan,
    Selection,
    catalog_from_headers,
    make_plan,
    scan_release,
    star_table_from_catalog,
)
from csstflux.pipeline.tasks import (
    INPUT_RESOLUTION_NOTE,
    add_counts,
    domain_flags,
    done_chunks,
    marker_dir,
    run_chunk,
    shipped_domain_model,
)
from csstflux.pipeline.worker import PredictorPlugin, predict_chunk_task, read_headers_task

if TYPE_CHECKING:
    from csstflux.model.card import ModelCard

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """Options of one run (the CLI fills them from flags)."""

    out: str
    """Output Zarr store."""
    model: str
    """Model archive or card."""
    catalog: str | None = None
    """LAMOST catalogue (FITS or CSV); None: scan ``root``."""
    root: str | None = None
    """Release data root."""
    selection: Selection = field(default_factory=Selection)
    chunk_stars: int | None = None
    """Stars per task and per Zarr chunk; None: :func:`auto_chunk` of the number of stars."""
    batch_size: int = 256
    """Spectra per model call."""
    read_processes: int = 0
    """Reader processes per worker, reading and preparing spectra for its model (0: one
    background thread, right for CPU workers, one per core; a GPU worker wants about one per
    core). Workers must not be daemonic (``distributed.worker.daemon: false``), and want two
    threads (:func:`csstflux.pipeline.cluster.start_cluster` with ``readers=True`` sets
    both)."""
    overwrite: bool = False
    max_failed_fraction: float = 0.05
    """The job fails when more than this fraction of files could not be used."""

    def __post_init__(self) -> None:
        if self.catalog is None and self.root is None:
            raise ConfigError("give a catalogue (--catalog) or a release root (--root)")
        if (self.chunk_stars is not None and self.chunk_stars <= 0) or self.batch_size <= 0:
            raise ConfigError("chunk size and batch size must be positive")
        if self.read_processes < 0:
            raise ConfigError("--read-processes must be >= 0")
        if not 0 <= self.max_failed_fraction <= 1:
            raise ConfigError("--max-failed-fraction must be between 0 and 1")


@dataclass(frozen=True)
class PredictJob:
    """The ``[predict]`` table of a job file (``jobs/predict-dr9.toml``, read by
    :func:`csstflux.config.load_job`): ``predict-catalog``'s options, by name with
    underscores, and its cluster (``[predict.cluster]``). Options given on the command line
    win over the file's values."""

    catalog: JobPath | None = None
    """LAMOST catalogue (FITS or CSV, LASP columns)."""
    root: JobPath | None = None
    """Release data root (paths are built from it; scanned without a catalogue)."""
    out: JobPath | None = None
    """Output Zarr store (None: predictions.zarr, or the demo's)."""
    model: JobPath | None = None
    """Model archive or card (None: the shipped model)."""
    limit: int | None = None
    """Predict at most this many stars."""
    min_snr: float | None = None
    """Minimum g-band S/N."""
    star_only: bool = False
    """Class STAR only."""
    teff_min: float | None = None
    """Minimum catalogue Teff, K."""
    teff_max: float | None = None
    """Maximum catalogue Teff, K."""
    chunk_stars: int | None = None
    """Stars per task and per Zarr chunk (None: about n/16, 256 to 2000)."""
    batch_size: int = 256
    """Spectra per model call."""
    read_processes: int | None = None
    """Reader processes per worker feeding its model (None: 0, one thread; on a gpu
    cluster the number of cores less one)."""
    overwrite: bool = False
    """Replace an existing store."""
    max_failed_fraction: float = 0.05
    """The job fails when more than this fraction of the files could not be used."""
    demo_size: int = 2000
    """Stars in the embedded demo release (no catalogue and no root)."""
    photometry: Annotated[str, PathField(keep=("header",))] | None = None
    """Then anchor the SEDs to photometry in the same run: 'header' or a table."""
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    """Where the tasks run."""

    def __post_init__(self) -> None:
        if (self.chunk_stars is not None and self.chunk_stars <= 0) or self.batch_size <= 0 \
                or self.demo_size <= 0:
            raise ValueError("chunk_stars, batch_size and demo_size must be positive")
        if self.read_processes is not None and self.read_processes < 0:
            raise ValueError("read_processes must be >= 0")
        if not 0 <= self.max_failed_fraction <= 1:
            raise ValueError("max_failed_fraction must be between 0 and 1")


@dataclass
class RunResult:
    """What a run did. ``failures``: (file, reason) of the files that could not be used;
    ``duplicates``: (file, reason) of the catalogue rows dropped as repeated obsids;
    ``flag_counts``: stars carrying each flag, every flag name present. Text is printable
    (:func:`~csstflux.io.stores.predictions.printable`)."""

    store: Path
    n_stars: int
    n_predicted: int
    n_failed: int
    n_chunks_run: int
    n_chunks_skipped: int
    report: Path | None
    ok: bool
    failures: list[tuple[str, str]]
    flag_counts: dict[str, int] = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "n_stars": self.n_stars,
                "n_predicted": self.n_predicted, "n_failed": self.n_failed,
                "n_duplicates": len(self.duplicates),
                "n_chunks_run": self.n_chunks_run, "n_chunks_skipped": self.n_chunks_skipped,
                "performance_report": None if self.report is None else str(self.report),
                "ok": self.ok, "flag_counts": dict(self.flag_counts)}


@dataclass(frozen=True)
class Inputs:
    """The input list as far as it can be known without a cluster (:func:`read_inputs`)."""

    catalog: lamost_catalog.Catalog | None
    """Catalogue mode: the catalogue, read and selected (never empty)."""
    paths: tuple[str, ...] = ()
    """Scan mode: the ``spec-*`` files under the root (their headers are read on the
    cluster)."""


def read_inputs(opts: PredictOptions) -> Inputs:
    """Read and check the input list before any cluster starts.

    Raises
    ------
    InputFormatError
        The catalogue cannot be read or lacks columns.
    ConfigError
        The selection leaves no star, or the root holds no ``spec-*.fits[.gz]`` file.
    """
    if opts.catalog is not None:
        cat = opts.selection.apply(lamost_catalog.read(opts.catalog, root=opts.root))
        if len(cat) == 0:
            raise ConfigError("the selection leaves no star to predict", path=opts.catalog)
        return Inputs(cat)
    assert opts.root is not None
    paths = scan_release(opts.root)
    if not paths:
        raise ConfigError("no spec-*.fits[.gz] files under the release root", path=opts.root)
    return Inputs(None, tuple(paths))


def _catalog(opts: PredictOptions, handle: ClusterHandle | None, chunk: int,
             inputs: Inputs) -> lamost_catalog.Catalog:
    """The selected catalogue: as read, or built from the headers of the scanned files."""
    if inputs.catalog is not None:
        return inputs.catalog
    paths = list(inputs.paths)
    groups = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    with Progress("reading headers", len(paths), unit="files", logger=logger) as progress:
        if handle is None:
            headers = []
            for g in groups:
                headers += read_headers_task(g)
                progress.update(len(g))
        else:
            client = handle.client
            parts: dict[int, list[Any]] = {}
            scan = submit_windowed(client, range(len(groups)), lambda i: client.submit(
                read_headers_task, groups[i], key=f"scan-headers-{i:06d}", pure=False))
            with contextlib.closing(scan):
                for i, f in scan:
                    parts[i] = f.result()
                    f.release()
                    progress.update(len(groups[i]))
            headers = [h for i in range(len(groups)) for h in parts[i]]
    return opts.selection.apply(catalog_from_headers(paths, headers))


def auto_chunk(n_stars: int) -> int:
    """Default stars per chunk: about n/16 so that small runs still spread over the workers,
    rounded up to a multiple of 256 (the model batch), between 256 and 2000. It depends on the
    input list only, so a resumed run on a different cluster gets the same chunks."""
    c = -(-n_stars // 16)
    return int(min(2000, max(256, -(-c // 256) * 256)))


def build_plan(opts: PredictOptions, model_sha: str, handle: ClusterHandle | None,
               inputs: Inputs | None = None) -> Plan:
    """The run's plan; ``inputs`` from :func:`read_inputs` (read now when None). Without a
    catalogue the headers are read on ``handle``'s cluster (in this process when None)."""
    inputs = read_inputs(opts) if inputs is None else inputs
    cat = _catalog(opts, handle, opts.chunk_stars or 2000, inputs)
    if len(cat) == 0:
        raise ConfigError("the selection leaves no star to predict")
    cat, repeated, dropped = cat.drop_duplicates()
    stars, z, flags = star_table_from_catalog(cat, repeated)
    n_bad = len(stars) - stars.n_indexed
    if n_bad:
        logger.warning("%d star(s) without a valid RA/Dec: predicted, flagged BAD_COORDS, "
                       "stored after the indexed stars (healpix -1)", n_bad)
    if dropped:
        logger.warning("%d catalogue row(s) repeat an obsid: only the first row of each is "
                       "predicted (flag DUPLICATE); the others are listed in the failures "
                       "table", len(dropped))
    fingerprint = {"model": model_sha, "selection": to_dict(opts.selection),
                   "catalog": opts.catalog, "root": opts.root, "batch": opts.batch_size,
                   "domain_model": shipped_domain_model().provenance.get("sha256")}
    return make_plan(stars, z, opts.chunk_stars or auto_chunk(len(stars)), fingerprint,
                     flags, tuple(dropped))


def prepare_store(opts: PredictOptions, plan: Plan, attrs: dict[str, Any],
                  reference_sigma: Any = None) -> str:
    """Create the store, or check the existing one may be resumed; returns 'new'/'resume'/'done'.
    ``reference_sigma``: the model's reference term, written as ``sed_err_ref``."""
    out = Path(opts.out)
    if out.exists():
        try:
            old = read_attrs(out)
        except StoreError:
            old = None
        if old is None and not opts.overwrite:
            raise StoreError("output exists and is not a csstflux predictions store; choose "
                             "another --out or pass --overwrite", path=out)
        if old is not None and not opts.overwrite:
            if old.get("format_version") != FORMAT_VERSION:
                raise StoreError("store was written in another store format; pass "
                                 "--overwrite to replace it", path=out,
                                 expected=FORMAT_VERSION, found=old.get("format_version"))
            if old.get("input_hash") != plan.input_hash:
                raise StoreError("store exists with a different input list, model or options; "
                                 "pass --overwrite to replace it", path=out,
                                 expected=plan.input_hash[:16],
                                 found=str(old.get("input_hash"))[:16])
            return "done" if old.get("completed") else "resume"
    # --overwrite: the old store (or whatever is there) is replaced once the new one is built
    create_store(out, plan.stars, plan.chunk_stars, attrs, overwrite=True,
                 reference_sigma=reference_sigma)
    return "new"


def check_options(opts: PredictOptions) -> ModelCard:
    """The checks that need no cluster (call before starting one); returns the model card.

    The model's card, grids and archive checksum, and the archive a sound zip file (a corrupt
    or tampered model is refused here, not by every worker); the output folder exists and
    takes new files.

    Raises
    ------
    ModelFileError, GridMismatchError
        See :func:`csstflux.model.card.verify_model_files`.
    StoreError
        See :func:`csstflux.io.stores.predictions.check_output_location`.
    """
    from csstflux.model.card import verify_model_files

    card, _ = verify_model_files(opts.model)
    check_output_location(opts.out)
    return card


def _gather(handle: ClusterHandle, todo: list[int], submit: Any) -> None:
    """Run the chunks ``todo`` (``submit(i)`` gives chunk i's future), a window of them at a
    time (:func:`~csstflux.pipeline.cluster.submit_windowed`), with their progress; the first
    that cannot write its output stops the job (the others are cancelled: on a full disk they
    would fail too)."""
    if not todo:
        return
    with Progress("predicting", len(todo), unit="chunks", logger=logger) as progress:
        with contextlib.closing(submit_windowed(handle.client, todo, submit)) as chunks:
            for _, f in chunks:
                exc = f.result().get("store_error")
                f.release()
                progress.update(1)
                if exc is not None:
                    raise StoreError(f"{exc.message}; chunks marked done are kept: remove "
                                     "the cause and rerun the same command to resume",
                                     path=exc.path) from exc


def run_predict(opts: PredictOptions, handle: ClusterHandle | None, *,
                inputs: Inputs | None = None) -> RunResult:
    """Run the whole job on ``handle``'s cluster (None: every chunk in this process, one
    after the other, with the same per-chunk code; for notebooks and small lists);
    ``inputs``: :func:`read_inputs` of ``opts``, when the caller read them before starting the
    cluster (read here if None). The store is locked for the run (``{out}.lock``,
    :func:`csstflux.io.lock.store_lock`): a second job writing it fails at once with
    :class:`~csstflux.errors.LockedError` naming the holder. Progress is logged
    (:class:`csstflux.logs.Progress`)."""
    with store_lock(opts.out):
        return _run_predict(opts, handle, inputs=inputs)


def _run_predict(opts: PredictOptions, handle: ClusterHandle | None, *,
                 inputs: Inputs | None) -> RunResult:
    card = check_options(opts)
    plan = build_plan(opts, card.archive_sha256, handle, inputs)
    attrs = {"model": {"id": card.model_id, "sha256": card.archive_sha256, "path": opts.model},
             "csstflux_version": __version__, "config": to_dict(opts),
             "input_hash": plan.input_hash, "input_resolution": INPUT_RESOLUTION_NOTE,
             "domain_model": shipped_domain_model().describe(),
             "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
             "completed": None}
    state = prepare_store(opts, plan, attrs, card.reference_sigma)
    out = Path(opts.out)
    report = out.with_name(out.name + ".performance.html")
    if state == "done":
        return _result(out, plan, 0, plan.n_chunks, None, opts)
    done = done_chunks(out)
    todo = [i for i in range(plan.n_chunks) if i not in done]
    if state == "resume":
        logger.info("resuming %s: %d of %d chunks done", fmt_path(out), len(done),
                    plan.n_chunks)
    else:
        logger.info("writing %s: %d stars in %d chunks", fmt_path(out), plan.n_stars,
                    plan.n_chunks)
    base = domain_flags(plan.stars.snr_g, plan.stars.teff, plan.stars.class_) | plan.flags
    if handle is None:
        _run_in_process(opts, plan, todo, base, out)
        return _result(out, plan, len(todo), plan.n_chunks - len(todo), None, opts)
    logger.info("loading the model on the workers")
    handle.client.register_plugin(PredictorPlugin(str(Path(opts.model).resolve()),
                                                 readers=opts.read_processes,
                                                 verbose=verbose()),
                                  name="csstflux-predictor")
    ctx = handle.performance_report(report) if todo else contextlib.nullcontext()
    client = handle.client

    def submit(i: int) -> Any:
        s, e = plan.chunk(i)
        return client.submit(
            predict_chunk_task, str(out), i, s, e, plan.stars.source_file[s:e].tolist(),
            plan.z[s:e], base[s:e], opts.batch_size, plan.stars.teff[s:e],
            key=f"predict-chunk-{i:06d}-{plan.input_hash[:8]}", retries=2, pure=False)

    with ctx:
        _gather(handle, todo, submit)
    return _result(out, plan, len(todo), plan.n_chunks - len(todo),
                   report if todo else None, opts)


def _run_in_process(opts: PredictOptions, plan: Plan, todo: list[int], base: Any,
                    out: Path) -> None:
    """The chunks ``todo`` in this process (:func:`run_predict` without a cluster)."""
    from csstflux.model.predictor import load_predictor

    predictor = load_predictor(opts.model)
    for i in track(todo, "predicting", unit="chunks", logger=logger):
        s, e = plan.chunk(i)
        run_chunk(str(out), i, s, e, plan.stars.source_file[s:e].tolist(), plan.z[s:e],
                  base[s:e], lambda f, err: predictor(f, err, batch_size=opts.batch_size),
                  opts.batch_size, catalog_teff=plan.stars.teff[s:e],
                  extra={"backend": predictor.backend})


def _result(out: Path, plan: Plan, run: int, skipped: int, report: Path | None,
            opts: PredictOptions) -> RunResult:
    summaries = done_chunks(out)
    failures = [(printable(str(f)), printable(str(m))) for s in sorted(summaries)
                for f, m in summaries[s]["failures"]]
    duplicates = [(printable(f), printable(m)) for f, m in plan.dropped]
    n_pred = sum(s["n_predicted"] for s in summaries.values())
    counts = add_counts([s.get("flag_counts", {}) for s in summaries.values()])
    complete = len(summaries) == plan.n_chunks
    ok = len(failures) <= opts.max_failed_fraction * plan.n_stars
    if complete:
        old = read_attrs(out)
        if not old.get("completed"):
            listed = failures + duplicates
            write_failures(out, [f for f, _ in listed], [m for _, m in listed])
            finalize(out, {"completed": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                           "n_predicted": n_pred, "n_failed": len(failures),
                           "n_duplicates_dropped": len(duplicates), "flag_counts": counts,
                           "model_backends": sorted({str(v.get("backend", "unrecorded"))
                                                     for v in summaries.values()}),
                           "done_markers": str(marker_dir(out).name)})
    return RunResult(out, plan.n_stars, n_pred, len(failures), run, skipped, report, ok,
                     failures, counts, duplicates)


def single_process_predictions(paths: list[str], z: np.ndarray, model: str,
                               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the same per-file steps in one process, no Dask (for tests and checks)."""
    from csstflux.model.predictor import load_predictor
    from csstflux.pipeline.tasks import _prepare_batch

    pred = load_predictor(model)
    batch = _prepare_batch(paths, np.asarray(z, float), 0)
    sed = np.full((len(paths), OUTPUT_GRID.n), np.nan, np.float32)
    err = np.full_like(sed, np.nan)
    if batch.rows.size:
        s, e = pred(batch.flux, batch.err, batch_size=batch_size)
        sed[batch.rows], err[batch.rows] = s, e
    sed, err, _, _ = mask_nonpositive_sed(sed, err, OUTPUT_GRID.wavelength)
    return sed, err
