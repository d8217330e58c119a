"""Readers and writers: one module per data product, each with ``identify()`` and ``read()``."""

from csstflux.io.registry import identify, read, reader_for, readers

__all__ = ["identify", "read", "reader_for", "readers"]
