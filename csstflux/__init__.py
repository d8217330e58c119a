"""csstflux: star-based flux calibration of the CSST slitless spectroscopic survey."""

from typing import TYPE_CHECKING, Any

from csstflux._version import __version__

if TYPE_CHECKING:
    from csstflux.api import anchor, load_model, predict
    from csstflux.io.stores.predictions import open_predictions

__all__ = ["__version__", "anchor", "load_model", "open_predictions", "predict"]


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so that ``import csstflux`` does not import zarr, xarray or Keras."""
    if name == "open_predictions":
        from csstflux.io.stores.predictions import open_predictions

        return open_predictions
    if name in ("predict", "anchor", "load_model"):
        from csstflux import api

        return getattr(api, name)
    raise AttributeError(f"module 'csstflux' has no attribute {name!r}")
