"""The installed csstflux version (one place; lower layers import it from here, not from the
package root, which re-exports the notebook API)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("csstflux")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
