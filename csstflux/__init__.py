"""csstflux: star-based flux calibration of the CSST slitless spectroscopic survey."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("csstflux")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from csstflux.io.predstore import open_predictions

__all__ = ["__version__", "open_predictions"]


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so that ``import csstflux`` does not import zarr and xarray."""
    if name == "open_predictions":
        from csstflux.io.predstore import open_predictions

        return open_predictions
    raise AttributeError(f"module 'csstflux' has no attribute {name!r}")
