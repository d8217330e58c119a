"""Keras, imported once with its backend's C++ start-up lines held back.

The modules that need Keras at import time take it from here (``from csstflux.model._keras
import keras``); the others call :func:`csstflux.model.backend.import_keras` when they need it.
"""

from csstflux.logs import quiet_native_stderr, verbose

# TensorFlow's C++ start-up lines are held back (csstflux.logs.quiet_native_stderr; -v shows them)
with quiet_native_stderr(restore=verbose()):
    import keras

__all__ = ["keras"]
