"""The Python API for notebooks: predictions and anchored standards without a cluster.

``csstflux.predict(paths)`` runs the same per-chunk code as ``csstflux predict-catalog`` in
this process, into a temporary store, and returns that store as an in-memory
:class:`xarray.Dataset`: the same variables, flags and attributes. Spectra already in memory
(arrays, or :class:`~csstflux.containers.Spectrum` objects) are written as LAMOST LRS files
into a temporary folder first, so that they too take the job's path: its reader, checks and
flags. ``csstflux.load_model()`` gives the network itself (the predictor the job runs) for
those who want to call it on prepared arrays. ``csstflux.anchor(ds)``
fits E(B−V) and the absolute scale of every star of such a dataset (or of a store on disk) to
its photometry, as ``csstflux anchor`` does, and returns the dataset with the anchored
variables added (:mod:`csstflux.io.stores.anchors` lists them).

Example::

    import csstflux
    ds = csstflux.predict(["spec-55859-F5902_sp01-001.fits.gz"])
    ds = csstflux.predict({"wavelength": lam, "flux": flux, "ivar": ivar,
                           "ra": 10.68, "dec": 41.27, "z": 0.0})
    ds = csstflux.anchor(ds, holdout=("u", "z"))
    ds["sed_abs"].sel(star=0)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray

PathLike = str | os.PathLike[str]

#: Keys of a spectrum given as a mapping of arrays: required, then optional.
ARRAY_KEYS = ("wavelength", "flux")
OPTIONAL_ARRAY_KEYS = ("ivar", "error", "mask", "ra", "dec", "z", "obsid")


def _in_memory(item: Any) -> bool:
    from csstflux.containers import Spectrum

    return isinstance(item, Spectrum | Mapping)


def _write_in_memory(items: Sequence[Any], folder: Path) -> list[str]:
    """Write spectra given as arrays as LAMOST LRS files (image layout) in ``folder``.

    A mapping gives ``wavelength`` (vacuum Å, increasing) and ``flux``, and ``ivar`` or
    ``error`` (1σ), optionally ``mask`` (True = bad), ``ra``/``dec`` (degrees), ``z`` and
    ``obsid`` (default: the position in the list, from 1); a
    :class:`~csstflux.containers.Spectrum` gives its arrays and ``meta`` (``ra``, ``dec``,
    ``z``, ``obsid``, as the LAMOST reader fills them). A star without a position or a
    redshift is predicted and flagged as a file scan would flag it.
    """
    from csstflux.containers import Spectrum
    from csstflux.errors import ConfigError
    from csstflux.io.fits.lamost_writer import write_lrs

    paths = []
    for i, item in enumerate(items):
        if isinstance(item, Spectrum):
            d: dict[str, Any] = {"wavelength": item.wavelength, "flux": item.flux,
                                 "error": item.error, "mask": item.mask,
                                 **{k: item.meta.get(k) for k in ("ra", "dec", "z", "obsid")}}
        else:
            d = dict(item)
            unknown = sorted(set(d) - set(ARRAY_KEYS) - set(OPTIONAL_ARRAY_KEYS))
            missing = [k for k in ARRAY_KEYS if k not in d]
            if unknown or missing or ("ivar" in d) == ("error" in d):
                raise ConfigError(
                    f"spectrum {i} given as arrays: "
                    + (f"unknown key {unknown[0]!r}" if unknown else
                       f"missing {missing[0]!r}" if missing else "give ivar or error, not both"
                       if "ivar" in d else "give ivar or error"),
                    expected=", ".join(ARRAY_KEYS + OPTIONAL_ARRAY_KEYS))
        lam = np.asarray(d["wavelength"], float)
        flux = np.asarray(d["flux"], float)
        if d.get("ivar") is not None:
            ivar = np.asarray(d["ivar"], float)
        else:
            err = np.asarray(d["error"], float)
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
        if lam.ndim != 1 or flux.shape != lam.shape or ivar.shape != lam.shape:
            raise ConfigError(f"spectrum {i} given as arrays: wavelength, flux and ivar/error "
                              "must be one-dimensional and of one length",
                              found=f"{lam.shape}, {flux.shape}, {ivar.shape}")
        bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
        if d.get("mask") is not None:
            bad |= np.asarray(d["mask"], bool)
        ivar = np.where(bad, 0.0, ivar)
        flux = np.where(np.isfinite(flux), flux, 0.0)
        obsid = int(d["obsid"]) if d.get("obsid") is not None else i + 1
        header = {"OBSID": obsid, "CLASS": "STAR",
                  "RA": None if d.get("ra") is None else float(d["ra"]),
                  "DEC": None if d.get("dec") is None else float(d["dec"]),
                  "Z": None if d.get("z") is None else float(d["z"])}
        zeros = np.zeros(lam.size)
        paths.append(str(write_lrs(folder / f"spec-array-{i:06d}.fits", lam, flux, ivar,
                                   zeros, zeros, header)))
    return paths


def load_model(path: PathLike | None = None, backend: str = "auto") -> Any:
    """The predictor that ``predict-catalog`` runs (default: the shipped model).

    Parameters
    ----------
    path
        Model archive or card; None: the shipped model.
    backend
        ``"auto"`` (what ``predict-catalog`` uses: ONNX Runtime on a CPU-only machine, Keras
        where Keras sees an accelerator), ``"onnx"`` or ``"keras"``.

    Returns
    -------
    csstflux.model.predictor.Predictor
        Call it as ``sed, sed_err = predictor(flux_norm, flux_err)`` on spectra prepared on
        the model's input grid (``predictor.card`` says which); ``.provenance`` and ``.card``
        describe it. :func:`predict` does the reading and preparing for you.
    """
    from csstflux.model.card import default_model_path
    from csstflux.model.predictor import load_predictor

    return load_predictor(path or default_model_path(), backend)


def _paths(spectra: PathLike | Sequence[PathLike]) -> list[str]:
    """Files of ``spectra``: one file, a folder (its ``spec-*`` files), or a list of files."""
    from csstflux.errors import ConfigError
    from csstflux.pipeline.plan import scan_release

    if isinstance(spectra, str | os.PathLike):
        p = Path(spectra)
        files = scan_release(p) if p.is_dir() else [str(p)]
    else:
        files = [str(Path(s)) for s in spectra]
    missing = [f for f in files if not os.path.isfile(f)]
    if not files or missing:
        raise ConfigError("no spectra to predict" if not files else
                          f"no such file: {missing[0]}" + (f" (+{len(missing) - 1} more)"
                                                           if len(missing) > 1 else ""))
    return files


def predict(spectra: Any = None, *,
            catalog: PathLike | None = None, root: PathLike | None = None,
            model: PathLike | None = None, photometry: str | None = None,
            batch_size: int = 256) -> xarray.Dataset:
    """Predict the SEDs of LAMOST LRS spectra in this process.

    Parameters
    ----------
    spectra
        A file, a folder (its ``spec-*.fits[.gz]`` files) or a list of files; their headers
        give positions and redshifts, as a ``predict-catalog`` scan does. Or spectra in
        memory: a mapping of arrays (``wavelength`` in vacuum Å, ``flux``, ``ivar`` or
        ``error``; optional ``mask``, ``ra``, ``dec``, ``z``, ``obsid``), a
        :class:`~csstflux.containers.Spectrum`, or a list of them. Or None with ``catalog``
        (a LASP catalogue) and ``root``.
    model
        Model archive or card (default: the shipped model).
    photometry
        Also anchor to photometry (``"header"`` or a table file; :func:`anchor`).

    Returns
    -------
    xarray.Dataset
        In memory, with the variables and attributes of a predictions store (sorted by
        HEALPix index, as the store is; ``source_file`` says which star is which). Files that
        could not be used are stars with their flags set and NaN SEDs.
    """
    from csstflux.errors import ConfigError
    from csstflux.io.stores.predictions import open_predictions
    from csstflux.model.card import default_model_path
    from csstflux.pipeline.predict import Inputs, PredictOptions, read_inputs, run_predict

    if (spectra is None) == (catalog is None):
        raise ConfigError("give spectra (files or a folder) or a catalogue, not both")
    with tempfile.TemporaryDirectory(prefix="csstflux-") as tmp:
        out = str(Path(tmp) / "predictions.zarr")
        if _in_memory(spectra) or (isinstance(spectra, Sequence) and not isinstance(spectra, str)
                                   and spectra and all(_in_memory(x) for x in spectra)):
            items = [spectra] if _in_memory(spectra) else list(spectra)
            (Path(tmp) / "spectra").mkdir()
            spectra = _write_in_memory(items, Path(tmp) / "spectra")
        if spectra is not None:
            files = _paths(spectra)
            opts = PredictOptions(out=out, model=str(model or default_model_path()),
                                  root=os.path.commonpath([os.path.dirname(os.path.abspath(f))
                                                           for f in files]),
                                  batch_size=batch_size, max_failed_fraction=1.0)
            inputs = Inputs(None, tuple(files))
        else:
            opts = PredictOptions(out=out, model=str(model or default_model_path()),
                                  catalog=str(catalog), root=None if root is None else str(root),
                                  batch_size=batch_size, max_failed_fraction=1.0)
            inputs = read_inputs(opts)
        run_predict(opts, None, inputs=inputs)
        if photometry is not None:
            from csstflux.pipeline.anchor import AnchorOptions, run_anchor

            run_anchor(AnchorOptions(store=out, photometry=photometry), None)
        return open_predictions(out).load()


def anchor(ds: xarray.Dataset | PathLike, photometry: str = "header", *,
           bands: Sequence[str] = (), holdout: Sequence[str] = (), law: str = "F99",
           rv: float = 3.1, ebv_prior: str | None = None,
           csst_filters: PathLike | None = None, floor_mag: float = 0.02
           ) -> xarray.Dataset:
    """Anchor predicted SEDs to photometry (``csstflux anchor``'s fit, in this process).

    Parameters
    ----------
    ds
        A dataset from :func:`predict` or :func:`csstflux.open_predictions`, or a store path
        (anchored in place, as ``csstflux anchor`` does, then opened).
    photometry
        ``"header"`` (the dataset's ``header_mag``) or a table file (obsid, band columns,
        optional ``<band>_err``).
    bands, holdout, law, rv, ebv_prior, csst_filters, floor_mag
        As the command's options.

    Returns
    -------
    xarray.Dataset
        ``ds`` with ``ebv``, ``scale``, ``sed_abs``... added and the anchor flag bits set.
    """
    from csstflux.photometry.anchor import AnchorConfig
    from csstflux.pipeline.anchor import AnchorOptions

    opts = dict(photometry=photometry, bands=tuple(bands), holdout=tuple(holdout), law=law,
                rv=rv, ebv_prior=ebv_prior,
                csst_filters=None if csst_filters is None else str(csst_filters),
                fit=AnchorConfig(floor_mag=floor_mag))
    if isinstance(ds, str | os.PathLike):
        from csstflux.io.stores.predictions import open_predictions
        from csstflux.pipeline.anchor import run_anchor

        run_anchor(AnchorOptions(store=str(ds), overwrite=True, **opts), None)  # type: ignore[arg-type]
        return open_predictions(ds)
    return _anchor_dataset(ds, AnchorOptions(store="", **opts))  # type: ignore[arg-type]


def _anchor_dataset(ds: xarray.Dataset, opts: Any) -> xarray.Dataset:
    from csstflux.io.formats.photometry_table import read_table
    from csstflux.io.stores.anchors import ANCHOR_BITS, ARRAYS, PHOT_BAND
    from csstflux.pipeline.anchor import (
        build_anchor,
        fit_block,
        header_columns,
        resolve_bands,
        table_columns,
    )

    table = read_table(opts.photometry) if opts.photometry != "header" else None
    bands, fit_mask = resolve_bands(opts, None if table is None else table.colnames)
    anchor_, offsets = build_anchor(opts, bands)
    n = ds.sizes["star"]
    prior = prior_err = np.full(n, np.nan)
    if opts.photometry == "header":
        mag, err = header_columns(ds, bands, 0, n)
    else:
        cols = table_columns(opts, table, bands, ds["obsid"].values)
        mag, err, prior, prior_err = cols.mag, cols.mag_err, cols.ebv_prior, cols.ebv_prior_err
    out = fit_block(anchor_, np.asarray(ds["sed"].values, float),
                    np.asarray(ds["sed_err"].values, float), mag + offsets, err, fit_mask,
                    prior, prior_err)
    bits = out.pop("_flags")
    new = ds.assign_coords({PHOT_BAND: list(bands)})
    for name, values in out.items():
        dims, _, _, attrs = ARRAYS[name]
        new[name] = (("star", *dims), values, attrs)
    flags = np.asarray(ds["flags"].values, np.uint32)
    new["flags"] = ds["flags"].copy(data=(flags & ~ANCHOR_BITS) | (bits & ANCHOR_BITS))
    new.attrs["anchor"] = {"photometry": opts.photometry, "bands": list(bands),
                           "holdout": [b for b, f in zip(bands, fit_mask, strict=True) if not f],
                           "law": opts.law, "rv": opts.rv}
    return new
