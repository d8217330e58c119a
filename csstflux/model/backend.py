"""Keras backend facts, reached only through the model layer."""

from __future__ import annotations


def backend_info() -> dict[str, str]:
    """``{"backend": name, "keras": version}`` of the Keras installation in use."""
    import keras

    return {"backend": str(keras.backend.backend()), "keras": str(keras.__version__)}
