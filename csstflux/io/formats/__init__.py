"""Format readers, one module per data product, each with ``FORMAT``, ``identify()`` and
``read()``."""
