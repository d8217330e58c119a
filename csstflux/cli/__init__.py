"""The ``csstflux`` command line: one click command per module, exit codes in ``errors``."""
