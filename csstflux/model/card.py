"""Model files: a ``.keras`` archive plus a JSON model card that vouches for it.

``save_model`` writes ``<name>.keras`` and ``<name>.json`` side by side. The card records what the
model is (name, id, versions, backend), the grids it was trained on, the normalisation it
expects, where its training data came from, its metrics, an optional uncertainty calibration,
the creation time and the SHA-256 of the archive. ``load_model`` refuses an archive whose
checksum differs from its card's (tampered or corrupt), a card whose grids differ from
:mod:`csstflux.grids`, and loads the archive with Keras' ``safe_mode=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from csstflux._version import __version__
from csstflux.config import from_dict
from csstflux.errors import ConfigError, GridMismatchError, ModelFileError
from csstflux.grids import CONTINUUM_WINDOW, INPUT_GRID, OUTPUT_GRID, SCALING_WINDOW
from csstflux.io.atomic import atomic_path, write_text
from csstflux.io.stores.arrays import file_sha256 as sha256_file
from csstflux.model.backend import backend_info, import_keras, use_full_float32

if TYPE_CHECKING:
    import keras

__all__ = ["ModelCard", "save_model", "load_model", "read_card", "verify_model_files",
           "sha256_file", "CARD_FORMAT", "custom_objects", "DEFAULT_MODEL_NAME",
           "default_model_path"]

#: Version of the card's JSON layout.
CARD_FORMAT: int = 1


def custom_objects() -> dict[str, Any]:
    """Objects a UaRA-net archive needs to deserialise (imports Keras: reading a card or
    verifying files does not)."""
    from csstflux.model import layers, loss

    return {
        "SoftThresholdAttention": layers.SoftThresholdAttention,
        "SubUnit": layers.SubUnit,
        "GaussianHead": layers.GaussianHead,
        "uaranet_loss": loss.uaranet_loss,
        "BetaNLL": loss.BetaNLL,
    }


def __getattr__(name: str) -> Any:
    # CUSTOM_OBJECTS stays importable by name, built (and Keras imported) on first access
    if name == "CUSTOM_OBJECTS":
        return custom_objects()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Stem of the model shipped inside the package, ``csstflux/data/models/<stem>.keras`` + ``.json``.
DEFAULT_MODEL_NAME: str = "uaranet-default"


def default_model_path() -> Path:
    """The archive of the model shipped with csstflux (``csstflux/data/models``).

    Returns
    -------
    Path
        ``.../csstflux/data/models/uaranet-default.keras``; its card lies beside it.

    Raises
    ------
    ModelFileError
        This installation ships no model (archive or card missing).
    """
    from importlib.resources import files

    folder = Path(str(files("csstflux") / "data" / "models"))
    archive = folder / f"{DEFAULT_MODEL_NAME}.keras"
    card = archive.with_suffix(".json")
    missing = [p.name for p in (archive, card) if not p.is_file()]
    if missing:
        raise ModelFileError("no default model is shipped with this installation of csstflux; "
                             "pass --model PATH (a .keras archive with its .json card)",
                             path=folder, expected=f"{archive.name} and {card.name}",
                             found=f"missing {', '.join(missing)}")
    return archive


def _default_normalisation() -> dict[str, Any]:
    return {"continuum_window": CONTINUUM_WINDOW, "scaling_window": list(SCALING_WINDOW)}


@dataclass(frozen=True)
class ModelCard:
    """Provenance and contract of one trained model, stored as ``<name>.json``."""

    name: str
    """Model name; also the stem of the archive and card files."""
    model_id: str
    """Unique identifier (default: name and the first 12 hex digits of the archive SHA-256)."""
    archive: str
    """File name of the archive, relative to the card."""
    archive_sha256: str
    """SHA-256 hex digest of the archive."""
    csstflux_version: str
    """csstflux version that wrote the model."""
    keras_version: str
    """Keras version that wrote the model."""
    keras_backend: str
    """Keras backend that wrote the model (the archive loads on any backend)."""
    created: str
    """Creation time, ISO 8601 UTC."""
    input_grid: dict[str, Any] = field(default_factory=INPUT_GRID.to_attrs)
    """``INPUT_GRID.to_attrs()`` of the input spectra."""
    output_grid: dict[str, Any] = field(default_factory=OUTPUT_GRID.to_attrs)
    """``OUTPUT_GRID.to_attrs()`` of the predicted SEDs."""
    normalisation: dict[str, Any] = field(default_factory=_default_normalisation)
    """Normalisation the inputs and targets need: continuum window (pixels), scaling window (Å)."""
    training_data: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance of the training data (files, hashes, selection, SNRs)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Free-form evaluation metrics."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """Uncertainty calibration (:mod:`csstflux.model.calibrate`): ``"sigma_scale"``, per-pixel σ
    factors ``s`` (``n_out`` positive floats), and ``"sigma_floor"``, per-pixel floors ``τ`` in
    relative units (``n_out`` non-negative floats); either may be absent (s = 1, τ = 0). The
    predictor's relative error is ``sqrt((s σ)² + τ²)``. ``"sed_factor"``, per-pixel factors
    ``k`` (``n_out`` positive floats, absent: 1), corrects the mean: the predictor returns
    ``k μ``. ``"reference_sigma"``, per-pixel terms ``ρ`` (``n_out`` non-negative floats,
    absent: none measured), is the part of the error against an independent spectrophotometric
    library that the σ calibration, fitted on the training library's flux scale, leaves out
    (:func:`csstflux.model.calibrate.fit_reference_sigma`); it is reported beside ``sed_err``,
    never folded into it."""
    card_format: int = CARD_FORMAT
    """Version of this JSON layout."""

    def __post_init__(self) -> None:
        if len(self.archive_sha256) != 64:
            raise ValueError(f"archive_sha256 must be 64 hex digits, got {self.archive_sha256!r}")
        if self.card_format != CARD_FORMAT:
            raise ValueError(f"unsupported card_format {self.card_format} (this csstflux reads "
                             f"{CARD_FORMAT})")
        n = int(self.output_grid.get("n", -1))
        for key, what, ok in (("sigma_scale", "positive", lambda v: v > 0),
                              ("sigma_floor", "non-negative", lambda v: v >= 0),
                              ("sed_factor", "positive", lambda v: v > 0),
                              ("reference_sigma", "non-negative", lambda v: v >= 0)):
            values = self.calibration.get(key)
            if values is not None and (
                    not isinstance(values, list | tuple) or len(values) != n
                    or not all(isinstance(v, int | float) and not isinstance(v, bool)
                               and math.isfinite(v) and ok(v) for v in values)):
                raise ValueError(f"calibration.{key} must be {n} {what} finite numbers")

    @property
    def sigma_scale(self) -> list[float] | None:
        """Per-pixel σ calibration factors ``s`` (n_out,), or None."""
        scale = self.calibration.get("sigma_scale")
        return None if scale is None else [float(v) for v in scale]

    @property
    def sigma_floor(self) -> list[float] | None:
        """Per-pixel σ floors ``τ`` (n_out,) in relative units, or None."""
        floor = self.calibration.get("sigma_floor")
        return None if floor is None else [float(v) for v in floor]

    @property
    def sed_factor(self) -> list[float] | None:
        """Per-pixel factors ``k`` (n_out,) on the predicted SED, or None."""
        factor = self.calibration.get("sed_factor")
        return None if factor is None else [float(v) for v in factor]

    @property
    def reference_sigma(self) -> list[float] | None:
        """Per-pixel reference term ``ρ`` (n_out,) in relative units, or None: the SED's
        relative 1σ against an independent library is ``sqrt((sed_err/|sed|)² + ρ²)``."""
        rho = self.calibration.get("reference_sigma")
        return None if rho is None else [float(v) for v in rho]

    def to_json(self) -> str:
        """The card as indented JSON text."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, path: str | os.PathLike[str] | None = None) -> ModelCard:
        """Parse a card; malformed JSON, unknown or missing keys raise :class:`ModelFileError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"model card is not valid JSON: {exc}", path=path) from exc
        if not isinstance(data, dict):
            raise ModelFileError("model card is not a JSON object", path=path)
        try:
            return from_dict(cls, data)
        except ConfigError as exc:
            raise ModelFileError(f"invalid model card: {exc.message}", path=path,
                                 expected=exc.expected, found=exc.found) from exc


def _jsonable(value: Any) -> Any:
    """Numpy arrays and scalars inside card sections made plain lists and numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def _paths(path: str | os.PathLike[str], name: str | None) -> tuple[Path, Path, str]:
    p = Path(path)
    if p.suffix in (".keras", ".json"):
        return p.with_suffix(".keras"), p.with_suffix(".json"), name or p.stem
    stem = name or "uaranet"
    return p / f"{stem}.keras", p / f"{stem}.json", stem


def save_model(model: keras.Model, path: str | os.PathLike[str], *, name: str | None = None,
               model_id: str | None = None, training_data: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
               normalisation: dict[str, Any] | None = None,
               overwrite: bool = False) -> ModelCard:
    """Write ``<name>.keras`` and its card ``<name>.json``.

    Parameters
    ----------
    model : keras.Model
        The network (as built by :func:`csstflux.model.network.build_uaranet`).
    path : path-like
        A directory (created if needed; files ``<name>.keras``/``.json`` inside it) or a file
        name ending in ``.keras`` or ``.json`` (its stem names both files).
    name, model_id : str or None
        Card name (default: the file stem, or ``"uaranet"``) and id (default:
        ``"<name>-<first 12 hex digits of the archive SHA-256>"``).
    training_data, metrics, calibration, normalisation : dict or None
        Free-form card sections; see :class:`ModelCard`. ``normalisation`` defaults to the
        csstflux constants (continuum window 51 pixels, scaling window 5526–5586 Å). Numpy
        arrays and scalars in them are stored as lists and numbers.
    overwrite : bool
        Replace existing files; otherwise an existing archive or card raises
        :class:`ModelFileError`.

    Returns
    -------
    ModelCard
        The card written.

    Raises
    ------
    ModelFileError
        A file exists and ``overwrite`` is False.
    ValueError, TypeError
        A card section is invalid (e.g. ``sigma_scale`` of the wrong length) or not JSON;
        nothing is written.
    """
    archive, card_path, stem = _paths(path, name)
    if not overwrite:
        for p in (archive, card_path):
            if p.exists():
                raise ModelFileError("model file exists; pass overwrite=True to replace it",
                                     path=p)
    info = backend_info()
    draft = ModelCard(   # validated and JSON-checked before anything is written
        name=stem, model_id=model_id or stem, archive=archive.name, archive_sha256="0" * 64,
        csstflux_version=__version__, keras_version=info["keras"],
        keras_backend=info["backend"], created=datetime.now(UTC).isoformat(timespec="seconds"),
        normalisation=_jsonable(normalisation) if normalisation else _default_normalisation(),
        training_data=_jsonable(training_data or {}), metrics=_jsonable(metrics or {}),
        calibration=_jsonable(calibration or {}),
    )
    draft.to_json()
    archive.parent.mkdir(parents=True, exist_ok=True)
    keras = import_keras()
    with atomic_path(archive, suffix=".keras") as tmp_archive:
        keras.saving.save_model(model, tmp_archive)
        digest = sha256_file(tmp_archive)
        card = dataclasses.replace(draft, archive_sha256=digest,
                                   model_id=model_id or f"{stem}-{digest[:12]}")
        card_text = card.to_json()
    write_text(card_path, card_text)   # archive first: a card never vouches for a stale one
    return card


def read_card(path: str | os.PathLike[str]) -> tuple[ModelCard, Path, Path]:
    """Read a model's card; return it, its path and the archive's path (not yet verified).

    ``path`` is the ``.keras`` archive, its ``.json`` card, or a directory holding one card.
    """
    p = Path(path)
    if p.is_dir():
        cards = sorted(p.glob("*.json"))
        if len(cards) != 1:
            raise ModelFileError("a model directory must hold exactly one .json model card",
                                 path=p, expected="1 card", found=len(cards))
        p = cards[0]
    _, card_path, _ = _paths(p, None)
    try:
        text = card_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelFileError("model card not found", path=card_path) from exc
    card = ModelCard.from_json(text, path=card_path)
    return card, card_path, card_path.with_name(Path(card.archive).name)


def _check_grids(card: ModelCard, card_path: Path) -> None:
    for what, grid, attrs in (("input", INPUT_GRID, card.input_grid),
                              ("output", OUTPUT_GRID, card.output_grid)):
        if not grid.matches_attrs(attrs):
            raise GridMismatchError(f"model was trained on another {what} grid", path=card_path,
                                    expected=grid.to_attrs(), found=attrs)


def verify_model_files(path: str | os.PathLike[str]) -> tuple[ModelCard, Path]:
    """Check a model's files without loading the network (cheap: one read of the archive).

    Parameters
    ----------
    path : path-like
        The ``.keras`` archive, its ``.json`` card, or a directory holding one card.

    Returns
    -------
    card : ModelCard
        The card.
    archive : Path
        The archive it vouches for.

    Raises
    ------
    ModelFileError
        Card or archive missing, card malformed, archive checksum differing from the card's
        (tampered or corrupt), or the archive not a sound zip file (truncated, or a member
        that fails its CRC: corrupt even though the card was rewritten to match).
    GridMismatchError
        The card's grids differ from :mod:`csstflux.grids`.
    """
    card, card_path, archive = read_card(path)
    _check_grids(card, card_path)
    if not archive.is_file():
        raise ModelFileError("model archive not found", path=archive)
    digest = sha256_file(archive)
    if digest != card.archive_sha256:
        raise ModelFileError("model archive does not match its card's checksum (tampered or "
                             "corrupt)", path=archive, expected=card.archive_sha256, found=digest)
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise ModelFileError(f"model archive is not a readable .keras (zip) file, truncated or "
                             f"corrupt ({exc})", path=archive) from exc
    if bad is not None:
        raise ModelFileError(f"model archive is corrupt: member {bad!r} fails its CRC check",
                             path=archive)
    return card, archive


#: Initialisers that cost nothing to run; any other one in an archive's configuration is
#: replaced by zeros when the network is rebuilt for inference (:func:`load_model`).
_CHEAP_INITIALISERS = frozenset({"Zeros", "Ones", "Constant"})


def _zero_initialisers(config: Any) -> Any:
    """A copy of a Keras configuration with every costly ``*_initializer`` set to zeros."""
    if isinstance(config, list):
        return [_zero_initialisers(v) for v in config]
    if not isinstance(config, dict):
        return config
    out: dict[str, Any] = {}
    for key, value in config.items():
        if (key.endswith("_initializer") and isinstance(value, dict)
                and value.get("class_name") not in _CHEAP_INITIALISERS):
            out[key] = {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                        "registered_name": None}
        else:
            out[key] = _zero_initialisers(value)
    return out


def _load_for_inference(archive: Path) -> keras.Model:
    """The archive's network and weights, built without drawing random initial weights.

    ``keras.saving.load_model`` builds every layer with its initialiser and then overwrites
    the weights from the archive. Here the network is rebuilt from the archive's configuration
    with zero initialisers (the configuration's own, and those the csstflux layers make,
    :func:`csstflux.model.layers.weights_follow`), then the archive's weights are loaded as
    ``load_model`` loads them. Measured with JAX on 2 CPU cores: 15 s -> under 1 s (JAX
    compiles each random initialiser for its shape). The weights are the same; the returned
    network's configuration names zeros initialisers, so it is for prediction, not for saving.
    """
    with zipfile.ZipFile(archive) as zf:
        config = json.loads(zf.read("config.json"))
    from csstflux.model import layers

    keras = import_keras()
    with layers.weights_follow():
        model = keras.saving.deserialize_keras_object(_zero_initialisers(config),
                                                      custom_objects=custom_objects(),
                                                      safe_mode=True)
    model.load_weights(archive)
    return model


def load_model(path: str | os.PathLike[str], *, compile: bool = False,
               for_inference: bool = False) -> tuple[keras.Model, ModelCard]:
    """Verify and load a model written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
        The ``.keras`` archive, its ``.json`` card, or a directory holding one card.
    compile : bool
        Restore the training configuration (optimizer, loss) as well.
    for_inference : bool
        Skip the random initial weights that the saved ones replace anyway (fast with JAX, see
        :func:`_load_for_inference`); the network is then for prediction only (its
        configuration names zeros initialisers). Not with ``compile``.

    Returns
    -------
    model : keras.Model
        Inputs ``flux``, ``flux_err`` (N, 2238); output (N, 2, 574).
    card : ModelCard
        Its card.

    Raises
    ------
    ModelFileError
        Card or archive missing, card malformed, archive checksum differing from the card's
        (tampered or corrupt), archive not a sound zip file, or archive unreadable by Keras
        (:func:`verify_model_files` runs first).
    GridMismatchError
        The card's or the network's grids differ from :mod:`csstflux.grids`.
    """
    if compile and for_inference:
        raise ValueError("a model loaded for inference has no training configuration")
    card, archive = verify_model_files(path)
    use_full_float32()
    try:
        if for_inference:
            model = _load_for_inference(archive)
        else:
            model = import_keras().saving.load_model(archive, custom_objects=custom_objects(),
                                            compile=compile, safe_mode=True)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"Keras cannot load the model archive: {exc}", path=archive) from exc
    found_in = tuple(model.inputs[0].shape[1:])
    found_out = tuple(model.outputs[0].shape[1:])
    if found_in != (INPUT_GRID.n,) or found_out != (2, OUTPUT_GRID.n):
        raise GridMismatchError("network shapes do not match the grids", path=archive,
                                expected=f"input ({INPUT_GRID.n},), output (2, {OUTPUT_GRID.n})",
                                found=f"input {found_in}, output {found_out}")
    return model, card
