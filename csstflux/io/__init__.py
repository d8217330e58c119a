"""Reading and writing: ``formats/`` (readers with ``identify()`` and ``read()``, registered in
``registry``), ``fits/`` (the FITS decoder and the LAMOST writer), ``stores/`` (products on
disk), ``atomic`` (the atomic file and folder writers), ``lock``, ``validate`` (is a spectrum as
read usable) and ``inspect``."""

from csstflux.io.registry import identify, read, reader_for, readers

__all__ = ["identify", "read", "reader_for", "readers"]
