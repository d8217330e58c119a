"""The one callable through which the pipeline reaches a trained model.

``predictor = load_predictor(path)`` verifies and loads the model once (per worker);
``sed, sed_err = predictor(flux_norm, flux_err)`` then maps normalised input spectra on
:data:`csstflux.grids.INPUT_GRID` to scaled SEDs and their absolute errors on
:data:`csstflux.grids.OUTPUT_GRID`, numpy in and numpy out.

Masked input pixels
-------------------
The network has no mask input. The convention, applied by :func:`fill_masked`, is to replace a
masked (or non-finite) pixel by the continuum level of a normalised spectrum, flux 1.0, and to
give it error 1.0, i.e. a noise density of 100 % of the continuum, far above that of any pixel
of a usable spectrum (SNR ≥ 20 gives errors ≈ 0.05): the SED branch sees a featureless
continuum and the uncertainty branch sees a very noisy pixel. Training data must be filled by
the same rule so the network learns it.

Calibrated errors
-----------------
The network predicts the scaled SED ``μ`` and a relative 1σ ``σ`` per output pixel. The model
card may carry a calibration (:mod:`csstflux.model.calibrate`): per-pixel factors ``s``
(``calibration["sigma_scale"]``) and floors ``τ`` (``calibration["sigma_floor"]``, relative
units, independent of SNR). The absolute error returned is::

    sed_err = |μ| · sqrt((s σ)² + τ²)

with s = 1 and τ = 0 where the card lacks them; without a floor this is ``σ |μ| s``, computed in
float32 as before, and with one it is computed in float64 and rounded to float32. A card with
per-pixel SED factors ``k`` (``calibration["sed_factor"]``: the mean corrected on held-out
stars, :mod:`csstflux.model.calibrate`) returns ``k μ`` as the SED, and ``μ`` above is that
corrected SED.

Backends
--------
The network itself runs in one of two ways, everything before and after it being this module's
code in both: ``"keras"`` (:class:`Predictor`, ``predict_on_batch``: the reference, and the
path for GPU workers, with TF32 off) or ``"onnx"`` (:class:`~csstflux.model.onnx_predictor.
OnnxPredictor`: the graph exported from the same archive, run by ONNX Runtime on the CPU).
``load_predictor(path, backend="auto")`` takes ONNX when no accelerator is visible to Keras,
ONNX Runtime imports and the graph is shipped, cached or exportable, and Keras otherwise (with a
warning when ONNX Runtime or the exporter is missing on a CPU machine). For the shipped model the
two agree to 1e-5 relative (:mod:`csstflux.model.onnx_session` gives the tolerance and the
measurements).
``predictor.backend`` names the one that runs and ``predictor.provenance`` describes it for
an output's attributes.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from csstflux.errors import ConfigError, GridMismatchError
from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.model.backend import accelerator_visible, backend_info, import_keras
from csstflux.model.card import ModelCard, load_model, verify_model_files

if TYPE_CHECKING:
    import keras

__all__ = ["Predictor", "load_predictor", "fill_masked", "padded_size", "MASKED_FLUX",
           "MASKED_ERR", "BACKENDS"]

log = logging.getLogger(__name__)

#: Values of ``load_predictor(backend=...)``.
BACKENDS: tuple[str, ...] = ("auto", "onnx", "keras")

#: Normalised flux given to masked input pixels (the continuum level).
MASKED_FLUX: float = 1.0
#: Error given to masked input pixels (100 % of the continuum).
MASKED_ERR: float = 1.0


def fill_masked(flux: ArrayLike, err: ArrayLike, mask: ArrayLike | None = None
                ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Apply the masked-pixel convention: flux → 1.0, error → 1.0.

    Parameters
    ----------
    flux : array_like, (n_pix,) or (n_spec, n_pix)
        Continuum-normalised flux (dimensionless).
    err : array_like, same shape as ``flux``
        Its 1σ error.
    mask : array_like of bool or None, broadcastable to ``flux``
        True where a pixel is masked (bad). Pixels whose flux or error is not finite, or whose
        error is negative, are masked as well.

    Returns
    -------
    flux, err : ndarray, float32, shape of ``flux``
        New arrays with the masked pixels filled.
    """
    f = np.array(flux, dtype=np.float32)
    e = np.array(err, dtype=np.float32)
    if f.shape != e.shape:
        raise ValueError(f"flux and err shapes differ: {f.shape} != {e.shape}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(f) | ~np.isfinite(e) | (e < 0)
    if mask is not None:
        bad |= np.broadcast_to(np.asarray(mask, dtype=bool), f.shape)
    f[bad] = MASKED_FLUX
    e[bad] = MASKED_ERR
    return f, e


class Predictor:
    """A loaded UaRA-net: ``(flux_norm, flux_err) -> (sed, sed_err)`` on the output grid.

    Build it with :func:`load_predictor`. This class runs the network with Keras
    (``backend = "keras"``); :class:`~csstflux.model.onnx_predictor.OnnxPredictor` replaces
    only the network call (:meth:`_predict`) and keeps the checks and the error calibration.
    The model runs in inference mode (batch normalisation uses its moving statistics) in
    batches of ``batch_size``; the last batch is padded to a power of two
    (:func:`padded_size`) so the compiled predict function is traced a bounded number of
    times, not once per remainder (on TensorFlow a new shape costs about as much as a batch of
    256).

    Attributes
    ----------
    model : keras.Model
        The network.
    card : ModelCard
        Its model card.
    sha256 : str
        SHA-256 of the model archive, for provenance.
    backend : str
        ``"keras"`` here, ``"onnx"`` for the ONNX Runtime predictor.

    A predictor may be called from several threads (a worker running two chunk tasks): the
    network itself runs one batch at a time under a lock, because Keras' JAX backend is not
    thread-safe (concurrent ``predict_on_batch`` calls fail with "Buffer has been deleted or
    donated"; seen with 8 threads on the JAX CPU backend). Everything else runs concurrently.
    """

    backend: str = "keras"

    def __init__(self, model: keras.Model, card: ModelCard) -> None:
        self.model = model
        self._set_card(card)

    def _set_card(self, card: ModelCard) -> None:
        """The card and what the error calibration needs from it (shared by every backend)."""
        self._lock = threading.Lock()
        self.card = card
        self.sha256 = card.archive_sha256
        scale, floor = card.sigma_scale, card.sigma_floor
        self._sigma_scale = None if scale is None else np.asarray(scale, dtype=np.float32)
        self._sigma_floor = None if floor is None else np.asarray(floor, dtype=np.float64)
        self._sigma_scale64 = (np.ones(OUTPUT_GRID.n) if scale is None
                               else np.asarray(scale, dtype=np.float64))
        factor = card.sed_factor
        self._sed_factor = None if factor is None else np.asarray(factor, dtype=np.float32)

    @property
    def reference_sigma(self) -> NDArray[np.float64] | None:
        """The card's reference term ``ρ`` (574,), relative units, or None: the SED's relative
        1σ against an independent library is ``hypot(sed_err / |sed|, ρ)``
        (:class:`~csstflux.model.card.ModelCard`)."""
        rho = self.card.reference_sigma
        return None if rho is None else np.asarray(rho, dtype=np.float64)

    @property
    def provenance(self) -> dict[str, Any]:
        """What runs the network, for an output's attributes: ``{"backend": "keras",
        "keras": version, "keras_backend": name}``."""
        info = backend_info()
        return {"backend": self.backend, "keras": info["keras"],
                "keras_backend": info["backend"]}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.card.name!r}, id={self.card.model_id!r}, "
                f"sha256={self.sha256[:12]}…, backend={self.backend!r})")

    def __call__(self, flux_norm: ArrayLike, flux_err: ArrayLike, batch_size: int = 256,
                 pad_to_batch: bool = False) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Predict scaled SEDs and their absolute errors.

        Parameters
        ----------
        flux_norm : array_like, (2238,) or (n_spec, 2238)
            Continuum-normalised flux on :data:`~csstflux.grids.INPUT_GRID`, masked pixels
            filled by :func:`fill_masked`.
        flux_err : array_like, same shape
            Its 1σ error, in the same units.
        batch_size : int
            Spectra per model call.
        pad_to_batch : bool
            Pad every call to exactly ``batch_size`` spectra (one compiled shape: on a GPU
            each new shape costs about 12 s of JAX compilation, measured on an H100), instead
            of the next power of two (:func:`padded_size`).

        Returns
        -------
        sed : ndarray, float32, (574,) or (n_spec, 574)
            Scaled SED ``μ`` on :data:`~csstflux.grids.OUTPUT_GRID` (unit mean flux in the
            scaling window).
        sed_err : ndarray, float32, same shape
            Its absolute 1σ error, ``|μ| · sqrt((s σ)² + τ²)`` with the card's per-pixel
            calibration factors ``s`` and floors ``τ`` (default 1 and 0; see the module
            docstring).

        Raises
        ------
        GridMismatchError
            The inputs do not have the input grid's 2238 pixels.
        ValueError
            Shapes differ, or an input is not finite (fill it with :func:`fill_masked`).
        """
        x = np.asarray(flux_norm, dtype=np.float32)
        e = np.asarray(flux_err, dtype=np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != INPUT_GRID.n:
            raise GridMismatchError("flux_norm is not on the input grid",
                                    expected=f"(n_spec, {INPUT_GRID.n})", found=x.shape)
        if e.shape != x.shape:
            raise ValueError(f"flux_err shape {e.shape} differs from flux_norm {x.shape}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        x2, e2 = np.atleast_2d(x), np.atleast_2d(e)
        n_bad = int(np.count_nonzero(~np.isfinite(x2)) + np.count_nonzero(~np.isfinite(e2)))
        if n_bad:
            raise ValueError(f"{n_bad} non-finite input values; fill masked pixels with "
                             "csstflux.model.predictor.fill_masked first")
        out = self._predict(x2, e2, batch_size, pad_to_batch)
        mu, sigma = out[:, 0], out[:, 1]
        if self._sed_factor is not None:
            mu = mu * self._sed_factor
        if self._sigma_floor is not None:
            sig = sigma.astype(np.float64) * self._sigma_scale64
            sed_err = np.abs(mu.astype(np.float64)) * np.sqrt(sig * sig
                                                              + self._sigma_floor ** 2)
        else:
            sed_err = sigma * np.abs(mu)
            if self._sigma_scale is not None:
                sed_err = sed_err * self._sigma_scale
        sed, sed_err = mu.astype(np.float32), sed_err.astype(np.float32)
        return (sed[0], sed_err[0]) if single else (sed, sed_err)

    def _predict(self, x: NDArray[np.float32], e: NDArray[np.float32], batch_size: int,
                 pad_to_batch: bool = False) -> NDArray[np.float32]:
        """Model output (n_spec, 2, 574) in fixed-size batches, the last one padded."""
        n = x.shape[0]
        out = np.empty((n, 2, OUTPUT_GRID.n), dtype=np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            xb, eb = x[start:stop], e[start:stop]
            size = batch_size if pad_to_batch else padded_size(stop - start, batch_size)
            if size > stop - start:
                pad = ((0, size - (stop - start)), (0, 0))
                xb = np.pad(xb, pad, constant_values=MASKED_FLUX)
                eb = np.pad(eb, pad, constant_values=MASKED_ERR)
            with self._lock:
                pred = self.model.predict_on_batch({"flux": xb, "flux_err": eb})
                res = np.asarray(import_keras().ops.convert_to_numpy(pred))
            out[start:stop] = res[: stop - start]
        return out


def padded_size(n: int, batch_size: int) -> int:
    """Shape a batch of ``n`` spectra is padded to: the next power of two, at most batch_size.

    Every model call then has one of about ``log2(batch_size) + 1`` shapes, so the compiled
    predict function is traced a bounded number of times, while one spectrum does not pay for
    a whole batch. Measured on 2 CPU threads, 14 calls of 1–511 spectra: 9.5 s unpadded,
    5.7 s padded to 256, 4.8 s padded to powers of two.
    """
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


def load_predictor(path: str | os.PathLike[str], backend: str = "auto", *,
                   threads: int | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> Predictor:
    """Verify and load a model written by :func:`csstflux.model.card.save_model`.

    Parameters
    ----------
    path : path-like
        The ``.keras`` archive, its ``.json`` card, or a directory holding one card.
    backend : {"auto", "onnx", "keras"}
        What runs the network. ``"keras"``: Keras (the reference). ``"onnx"``: the exported
        graph with ONNX Runtime on the CPU (:mod:`csstflux.model.onnx_graph`); the graph
        beside the archive (``<stem>.onnx`` with its ``<stem>.onnx.record``, as shipped),
        else the one cached under ``cache_dir`` for this archive's SHA-256, else exported now
        into that cache. ``"auto"``: ``"keras"`` where Keras sees a GPU or TPU, else
        ``"onnx"`` when ONNX Runtime imports and the graph can be had, else ``"keras"`` with
        a warning saying why.
    threads : int or None
        ONNX Runtime's intra-op threads (0: one per core); None: ``$OMP_NUM_THREADS`` where
        set (a csstflux Dask worker caps it to 1), else 1, the fastest measured
        (:mod:`csstflux.model.onnx_session`). Ignored by Keras (its threads follow
        ``TF_NUM_INTRAOP_THREADS`` and friends).
    cache_dir : path-like or None
        Cache of exported graphs; None: ``$CSSTFLUX_CACHE`` or ``~/.cache/csstflux``.

    Returns
    -------
    Predictor
        The callable; see :meth:`Predictor.__call__`. ``.backend`` names what runs it.

    Raises
    ------
    csstflux.errors.ModelFileError, csstflux.errors.GridMismatchError
        As :func:`csstflux.model.card.load_model`; also a graph beside the archive or in the
        cache that was exported from another archive (its recorded checksum differs) or
        whose bytes differ from its record; and, for ``backend="onnx"``, ONNX Runtime
        missing or the graph neither found nor exportable.
    csstflux.errors.ConfigError
        ``backend`` is not one of :data:`BACKENDS`.
    """
    if backend not in BACKENDS:
        raise ConfigError("unknown predictor backend", expected=" or ".join(BACKENDS),
                          found=repr(backend))
    if backend == "auto" and accelerator_visible():
        log.info("an accelerator is visible to Keras: the network runs with Keras")
        backend = "keras"
    if backend != "keras":
        from csstflux.model.onnx_predictor import load_onnx_predictor
        from csstflux.model.onnx_session import BackendWarning, OnnxUnavailableError

        card, archive = verify_model_files(path)
        try:
            return load_onnx_predictor(card, archive, threads=threads, cache_dir=cache_dir)
        except OnnxUnavailableError as exc:
            if backend == "onnx":
                raise
            warnings.warn(f"the network runs with Keras, not ONNX Runtime: {exc.message}",
                          BackendWarning, stacklevel=2)
    model, card = load_model(path, for_inference=True)
    log.info("network of %s runs with Keras (%s)", Path(path).name, backend_info()["backend"])
    return Predictor(model, card)
