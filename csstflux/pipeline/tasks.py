"""The unit of work: read, prepare and predict one chunk of stars, write its region, mark it done.

A task receives paths and keys, never arrays: the chunk's star range, its files and their
redshifts. It reads and prepares the spectra in a background thread while the model predicts
the previous batch (reading overlaps inference), writes the chunk's region of the store (regions
are chunk-aligned, so tasks never share a Zarr chunk), and only then writes the chunk's done
marker. A task that dies before its marker is simply run again (by Dask on another worker, or
by the next run): the region is rewritten with identical values, so nothing is lost or
duplicated. A write that fails (disk full, permission) raises
:class:`~csstflux.errors.StoreError` before the marker is written, and a marker that cannot be
read back (a crash while it was being written) counts as absent: the chunk is done again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import Spectrum
from csstflux.errors import (
    CsstFluxError,
    StoreError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from csstflux.flags import Flag
from csstflux.grids import INPUT_GRID, OUTPUT_GRID, TEFF_DOMAIN, TRAIN_SNRS
from csstflux.io.atomic import write_text
from csstflux.io.formats import lamost
from csstflux.io.formats.lamost_photometry import HEADER_BANDS
from csstflux.io.stores.predictions import ESTIMATE_COLUMNS, write_block
from csstflux.io.validate import (
    arm_snr,
    broken_arm_problems_batch,
    coverage_problems_batch,
    mask_nonpositive_sed,
    wcs_problems,
)
from csstflux.library.domain import DomainEstimate, DomainModel, load_domain_model
from csstflux.spectra.color import continuum_color
from csstflux.spectra.degrade import ResolutionWarning
from csstflux.spectra.doppler import stellar_redshift
from csstflux.spectra.prepare import prepare_input

#: Written into every store: LAMOST LRS (R ≈ 1800) is coarser than the model's R = 2000 input.
INPUT_RESOLUTION_NOTE = (
    "LAMOST LRS spectra (R~1800) are slightly coarser than the R=2000 model input; they are "
    "used at their own resolution (not sharpened), as in the paper")

#: Largest fraction of masked input pixels (after preparation) that still gets a prediction.
MAX_MASKED_FRACTION = 0.2
#: Below this g-band S/N a prediction is flagged LOW_SNR (the training noise starts at 20).
LOW_SNR = min(TRAIN_SNRS)

#: Spectra checked together, and prepared together in one :func:`prepare_input` call. Their
#: temporaries (float64, ~3900 pixels: 64 x 3909 x 8 bytes = 2 MB) stay far below the
#: allocator's mmap threshold that :data:`csstflux.pipeline.cluster.WORKER_ENVIRON` sets, and
#: mostly in a core's cache: read and prepare run 1.17x faster than with 256 (0.73 against
#: 0.85 ms a spectrum, 1000 demo files, one process, shared 2-core AMD EPYC). The size does not
#: change the numbers: a LAMOST spectrum is prepared the same in any block as alone.
PREPARE_BLOCK = 64

Predict = Callable[[NDArray[np.float32], NDArray[np.float32]],
                   tuple[NDArray[np.float32], NDArray[np.float32]]]


@dataclass(frozen=True)
class Prepared:
    """A batch of prepared inputs with per-star flags and failures."""

    offset: int
    """Position inside the chunk of the batch's first star."""
    rows: NDArray[np.int64]
    """Positions inside the chunk of the stars that get a prediction."""
    flux: NDArray[np.float32]
    err: NDArray[np.float32]
    flags: NDArray[np.uint32]
    """(n_chunk_batch,) flags of every star of the batch (not only ``rows``)."""
    failures: list[tuple[str, str]]
    color: NDArray[np.float64]
    """(len(rows),) continuum colour of each predicted star's spectrum
    (:func:`~csstflux.spectra.color.continuum_color`, rest frame; NaN where not measurable)."""
    header_mag: NDArray[np.float32]
    """(n_chunk_batch, len(HEADER_BANDS)) the input catalogue's magnitudes from the header of
    every star of the batch that could be read, predicted or not (``meta["header_mag"]``;
    NaN: none, or the file could not be read)."""


def read_checked(path: str, min_snr: float = LOW_SNR) -> tuple[Spectrum | None, int, str | None]:
    """Read one file and check it: (spectrum or None, flags, failure or None).

    Not predicted (spectrum None, with the failure naming the file and the problem): an
    unreadable, truncated or unsupported file; good pixels not covering 4000–7000 Å
    (``COVERAGE``); a broken arm or a wavelength row against its header WCS (``BAD_INPUT``,
    :func:`~csstflux.io.validate.bad_input_problems`). Predicted with ``LOW_SNR_ARM``: the blue
    or red arm's S/N (:func:`~csstflux.io.validate.arm_snr`) below ``min_snr``.
    """
    spec, flags, failure = _read(path)
    if spec is not None:
        ((flags, failure),) = _check([spec], [path], min_snr)
    return (spec if failure is None else None), flags, failure


def _read(path: str) -> tuple[Spectrum | None, int, str | None]:
    """The spectrum of ``path``, or None with the flags and failure of an unreadable file."""
    try:
        return lamost.read(path), 0, None
    except TruncatedFileError as exc:
        return None, int(Flag.TRUNCATED | Flag.UNREADABLE), str(exc)
    except UnsupportedFormatError as exc:
        return None, int(Flag.BAD_FORMAT), str(exc)
    except (CsstFluxError, OSError) as exc:
        return None, int(Flag.UNREADABLE), str(exc)


def _check(specs: list[Spectrum], paths: list[str], min_snr: float = LOW_SNR
           ) -> list[tuple[int, str | None]]:
    """Flags and failure (None: predicted) of spectra of one pixel count, as
    :func:`read_checked` states them; the pixel checks run on the stacked batch."""
    wave = np.stack([s.wavelength for s in specs])
    mask = np.stack([s.mask for s in specs])
    coverage = coverage_problems_batch(wave, mask, INPUT_GRID.start, INPUT_GRID.stop)
    arms = broken_arm_problems_batch(wave, np.stack([s.flux for s in specs]), mask)
    out: list[tuple[int, str | None]] = []
    for spec, path, problems, arm in zip(specs, paths, coverage, arms, strict=True):
        if problems:
            out.append((int(Flag.COVERAGE), f"{path}: " + "; ".join(problems)))
        elif problems := [*wcs_problems(spec), *arm]:    # bad_input_problems, batched
            out.append((int(Flag.BAD_INPUT), f"{path}: " + "; ".join(problems)))
        else:
            out.append((int(Flag.LOW_SNR_ARM) if arm_snr(spec).low(min_snr) else 0, None))
    return out


def _blocks(members: dict[int, list[int]]) -> Iterator[list[int]]:
    """:data:`PREPARE_BLOCK` positions at a time of each group (one group per pixel count)."""
    for group in members.values():
        for b in range(0, len(group), PREPARE_BLOCK):
            yield group[b:b + PREPARE_BLOCK]


def _prepare_batch(paths: list[str], z: NDArray[np.float64], offset: int) -> Prepared:
    """Read ``paths`` and make model inputs; failures are recorded, never raised.

    Every file is read first; the files that could be read are checked
    (:func:`read_checked`'s rules) and the spectra that pass are prepared, both a block of
    :data:`PREPARE_BLOCK` spectra with the same pixel count (nearly all of a release) at a
    time. Each spectrum is prepared with one redshift (the catalogue's, else the header's Z
    when it is a plausible stellar one, :func:`~csstflux.spectra.doppler.stellar_redshift`,
    else none). Masked input pixels are filled by the predictor convention (flux 1, error 1).
    The header magnitudes are taken from every file that could be read.
    """
    n = len(paths)
    flags = np.zeros(n, np.uint32)
    msgs: list[str | None] = [None] * n
    flux = np.empty((n, INPUT_GRID.n), np.float32)
    err = np.empty_like(flux)
    color = np.full(n, np.nan)
    header_mag = np.full((n, len(HEADER_BANDS)), np.nan, np.float32)
    specs: dict[int, Spectrum] = {}
    readable: dict[int, list[int]] = {}       # positions of the files read, per pixel count
    for i, p in enumerate(paths):
        spec, flags[i], msgs[i] = _read(p)
        if spec is not None:
            specs[i] = spec
            header_mag[i] = spec.meta["header_mag"]
            readable.setdefault(spec.wavelength.size, []).append(i)
    passed: dict[int, list[int]] = {}         # and of those that pass the checks
    for members in _blocks(readable):
        checks = _check([specs[i] for i in members], [paths[i] for i in members])
        for i, (flag, msg) in zip(members, checks, strict=True):
            flags[i], msgs[i] = flag, msg
            if msg is None:
                passed.setdefault(specs[i].wavelength.size, []).append(i)
    for members in _blocks(passed):
        idx = np.array(members)
        group = [specs[i] for i in members]
        zs = np.array([_redshift(float(z[i]), specs[i]) for i in members])
        wave, fl, er, mk = (np.stack([getattr(s, a) for s in group])
                            for a in ("wavelength", "flux", "error", "mask"))
        color[idx] = continuum_color(wave, fl, mk, zs)
        with warnings.catch_warnings():
            # expected for every LAMOST spectrum: recorded once in the store (see note above)
            warnings.simplefilter("ignore", ResolutionWarning)
            f, e, m = prepare_input(wave, fl, er, mk, group[0].resolution, z=zs)
        if e is None:  # no usable error in the whole group: every pixel is unusable
            e = np.ones_like(f)
            m = np.ones_like(m)
        frac = m.mean(axis=1)
        for k, i in enumerate(idx):
            if frac[k] > MAX_MASKED_FRACTION:
                flags[i] |= int(Flag.COVERAGE | Flag.MASKED_PIXELS)
                msgs[i] = (f"{paths[i]}: {100 * frac[k]:.0f}% of the model input pixels are "
                           "masked after rest-frame shift and resampling")
            elif frac[k] > 0.05:
                flags[i] |= int(Flag.MASKED_PIXELS)
        flux[idx] = np.where(m, 1.0, f)
        err[idx] = np.where(m, 1.0, e)
    rows = np.array([i for i in range(n) if msgs[i] is None], np.int64)
    return Prepared(offset=offset, rows=rows + offset, flux=flux[rows], err=err[rows],
                    flags=flags, failures=[(paths[i], str(msgs[i])) for i in range(n)
                                           if msgs[i] is not None], color=color[rows],
                    header_mag=header_mag)


def _redshift(catalog_z: float, spec: Spectrum) -> float:
    """The redshift a spectrum is prepared with: the catalogue's when finite, else the header's
    Z when it is a plausible stellar one, else 0 (rest frame)."""
    if np.isfinite(catalog_z):
        return catalog_z
    header_z = spec.meta.get("z")
    zh = float(stellar_redshift(header_z if header_z is not None else np.nan))
    return zh if np.isfinite(zh) else 0.0


def reader_pid(_: int = 0) -> int:
    """A reader process's pid (submitting it starts the process and imports this module)."""
    return os.getpid()


def reader_step(size: int, n_readers: int) -> int:
    """Spectra per reader sub-batch: a power of two near ``size / n_readers``, at least 16."""
    return 1 << max(4, (max(1, size // max(1, n_readers))).bit_length() - 1)


def _batches(paths: list[str], z: NDArray[np.float64], size: int, readers: Any = None,
             n_readers: int = 0) -> Iterator[Prepared]:
    """Prepared batches in order, read ahead while the caller predicts.

    Without ``readers`` the next batch is read in a background thread (CPU workers, one per
    core). With ``readers`` (a process pool of ``n_readers``, a GPU worker's) reading is cut
    into sub-batches of :func:`reader_step` spectra and ``n_readers + 1`` of them are in flight
    at once.
    """
    ahead = n_readers + 1 if readers is not None else 1
    step = size if readers is None else reader_step(size, n_readers)
    starts = list(range(0, len(paths), step))
    with contextlib.ExitStack() as stack:
        pool = readers if readers is not None else stack.enter_context(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="csstflux-read"))
        pending = deque(pool.submit(_prepare_batch, paths[n:n + step], z[n:n + step], n)
                        for n in starts[:ahead])
        for n in starts[ahead:]:                    # one submitted per one taken, in order
            batch = pending.popleft().result()
            pending.append(pool.submit(_prepare_batch, paths[n:n + step], z[n:n + step], n))
            yield batch
        while pending:
            yield pending.popleft().result()


def domain_flags(snr_g: NDArray[np.floating[Any]], teff: NDArray[np.floating[Any]],
                 class_: NDArray[np.str_]) -> NDArray[np.uint32]:
    """Catalogue-based flags: LOW_SNR, OUTSIDE_DOMAIN (Teff known and outside 5000–9750 K),
    NOT_STAR (class known and not STAR)."""
    flags = np.zeros(len(snr_g), np.uint32)
    with np.errstate(invalid="ignore"):
        flags[np.asarray(snr_g) < LOW_SNR] |= np.uint32(Flag.LOW_SNR)
        t = np.asarray(teff, dtype=np.float64)
        flags[np.isfinite(t) & ((t < TEFF_DOMAIN[0]) | (t > TEFF_DOMAIN[1]))] |= \
            np.uint32(Flag.OUTSIDE_DOMAIN)
    cls = np.char.upper(np.char.strip(np.asarray(class_, dtype=str)))
    flags[(cls != "") & (cls != "STAR")] |= np.uint32(Flag.NOT_STAR)
    return flags


def run_chunk(store: str, index: int, start: int, stop: int, paths: list[str],
              z: NDArray[np.float64], base_flags: NDArray[np.uint32], predict: Predict,
              batch_size: int = 256, readers: Any = None, n_readers: int = 0,
              catalog_teff: NDArray[np.floating[Any]] | None = None,
              domain: DomainModel | None = None, extra: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Process stars [start, stop) of the store; returns the chunk summary (also the marker;
    ``extra`` is merged into it, e.g. the predictor's backend).

    Outputs: a predicted star with a non-finite number in its SED or error is flagged
    ``NONFINITE_OUTPUT`` (do not use); SED pixels the model put at or below zero become NaN
    in ``sed`` and ``sed_err``, counted in ``n_masked_sed``, and flag ``NEGATIVE_SED`` only
    when one lies inside GU, GV or GI. The summary holds the chunk's failures and
    ``flag_counts`` (:func:`count_flags`), which the job sums.

    Every predicted star also gets what its spectrum says of itself
    (:meth:`~csstflux.library.domain.DomainModel.estimate`: ``teff_est``… ``color_z``):
    ``OUT_OF_DISTRIBUTION`` when its novelty numbers pass their thresholds, and
    ``OUTSIDE_DOMAIN`` from the estimated Teff when ``catalog_teff`` has no value for it (a
    catalogue Teff, when known, decides alone; that flag is set in ``base_flags``). Every star
    whose file could be read, predicted or not, gets the input catalogue's magnitudes from
    its header (``header_mag``; NaN for the others).

    ``readers``: a process pool of ``n_readers`` that reads and prepares the spectra
    (:func:`_batches`); None: one background thread. ``domain``: the domain model (default:
    the shipped one, loaded once per process)."""
    n = stop - start
    sed = np.full((n, OUTPUT_GRID.n), np.nan, np.float32)
    sed_err = np.full((n, OUTPUT_GRID.n), np.nan, np.float32)
    flags = np.asarray(base_flags, np.uint32).copy()
    predicted = np.zeros(n, bool)
    failures: list[tuple[str, str]] = []
    model = shipped_domain_model() if domain is None else domain
    has_teff = (np.zeros(n, bool) if catalog_teff is None
                else np.isfinite(np.asarray(catalog_teff, np.float64)))
    est = {k: np.full(n, np.nan, np.float32) for k in ESTIMATE_COLUMNS}
    header_mag = np.full((n, len(HEADER_BANDS)), np.nan, np.float32)
    for batch in _batches(paths, np.asarray(z, np.float64), batch_size, readers, n_readers):
        flags[batch.offset:batch.offset + batch.flags.size] |= batch.flags
        header_mag[batch.offset:batch.offset + batch.flags.size] = batch.header_mag
        failures.extend(batch.failures)
        if batch.rows.size:
            s, e = predict(batch.flux, batch.err)
            sed[batch.rows] = s
            sed_err[batch.rows] = e
            predicted[batch.rows] = True
            d = model.estimate(batch.flux, batch.err, color=batch.color)
            outside, ood = model.flags(d)
            for key, values in _estimate_columns(d).items():
                est[key][batch.rows] = values
            flags[batch.rows[ood]] |= np.uint32(Flag.OUT_OF_DISTRIBUTION)
            flags[batch.rows[outside & ~has_teff[batch.rows]]] |= np.uint32(
                Flag.OUTSIDE_DOMAIN)
    nonfinite = predicted & ~np.all(np.isfinite(sed) & np.isfinite(sed_err), axis=1)
    flags[nonfinite] |= np.uint32(Flag.NONFINITE_OUTPUT)
    sed, sed_err, n_masked, in_band = mask_nonpositive_sed(sed, sed_err, OUTPUT_GRID.wavelength)
    flags[in_band] |= np.uint32(Flag.NEGATIVE_SED)
    write_block(store, start, stop, sed, sed_err, flags, n_masked, est, header_mag)
    summary = {"chunk": index, "start": start, "stop": stop, "n_predicted": int(predicted.sum()),
               "n_failed": len(failures), "failures": failures,
               "n_nonfinite": int(nonfinite.sum()), "n_masked_sed": int(n_masked.sum()),
               "flag_counts": count_flags(flags), **(extra or {})}
    write_marker(store, index, summary)
    return summary


@functools.cache
def shipped_domain_model() -> DomainModel:
    """The shipped domain model, loaded once per process."""
    return load_domain_model()


def _estimate_columns(d: DomainEstimate) -> dict[str, NDArray[np.float64]]:
    """Store columns (:data:`~csstflux.io.stores.predictions.ESTIMATE_COLUMNS`) of an estimate."""
    return {"teff_est": d.teff, "teff_est_err": d.teff_err, "logg_est": d.logg,
            "logg_est_err": d.logg_err, "feh_est": d.feh, "feh_est_err": d.feh_err,
            "novelty_chi2": d.chi2, "input_snr": d.snr, "color_z": d.color_z}


def count_flags(flags: NDArray[np.integer[Any]]) -> dict[str, int]:
    """``{flag name: stars carrying it}`` for every :class:`~csstflux.flags.Flag`, in bit
    order (zeros included, so every summary has the same keys)."""
    f = np.asarray(flags, dtype=np.uint32)
    return {str(m.name): int(np.count_nonzero(f & np.uint32(m))) for m in Flag}


def add_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    """Per-chunk :func:`count_flags` summed, every flag name present."""
    total = {str(m.name): 0 for m in Flag}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def marker_dir(store: str | os.PathLike[str]) -> Path:
    return Path(store) / "_csstflux_done"


def write_marker(store: str | os.PathLike[str], index: int, summary: dict[str, Any]) -> None:
    """Write chunk ``index``'s done marker atomically (after its region is written).

    Raises
    ------
    StoreError
        The marker cannot be written (no marker is left behind).
    """
    d = marker_dir(store)
    try:
        d.mkdir(exist_ok=True)
        write_text(d / f"{index:07d}.json", json.dumps(summary))
    except OSError as exc:
        raise StoreError.from_os_error(exc, f"the done marker of chunk {index}", d) from exc


def done_chunks(store: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Summaries of the chunks whose marker exists and reads back (others are to be redone)."""
    d = marker_dir(store)
    out = {}
    if d.is_dir():
        for p in d.glob("*.json"):
            try:
                out[int(p.stem)] = json.loads(p.read_text())
            except (ValueError, OSError):
                continue
    return out
