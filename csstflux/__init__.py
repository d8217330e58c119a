"""csstflux: star-based flux calibration of the CSST slitless spectroscopic survey."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("csstflux")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
