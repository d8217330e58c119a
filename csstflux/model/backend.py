"""Keras backend facts and numerical settings, reached only through the model layer.

Full float32 arithmetic
-----------------------
On NVIDIA GPUs from Ampere on, every backend may run float32 matrix products and convolutions
in TF32 (10-bit mantissa) unless told not to: JAX does so by default for matrix products and
convolutions, PyTorch for cuDNN convolutions, TensorFlow for both. For UaRA-net that is not a
rounding detail. Measured on an H100 against the TensorFlow-CPU reference over 512 emulated
LAMOST spectra (``benchmarks/backend_check.py``): JAX with its defaults was off by up to 39 %
in ``sed``, PyTorch by 6 %; CPU backends agree to 1e-4. :func:`use_full_float32` switches
TF32 off for the backend in use, and the predictor and the trainers call it before they build
or load a network, so predictions do not depend on the card they run on.

Where the network runs
----------------------
:func:`accelerator_visible` tells whether the Keras backend sees a GPU (or TPU). The predictor
(:func:`csstflux.model.predictor.load_predictor`) keeps the Keras path there and runs the
exported graph with ONNX Runtime on the CPU otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any


def backend_info() -> dict[str, str]:
    """``{"backend": name, "keras": version}`` of the Keras installation in use."""
    import keras

    return {"backend": str(keras.backend.backend()), "keras": str(keras.__version__)}


def use_full_float32() -> str:
    """Make the active Keras backend compute float32 products in full float32 (no TF32).

    Returns the setting applied, as text for provenance. Safe to call more than once and on
    machines without a GPU (the settings then change nothing).
    """
    import keras

    backend = str(keras.backend.backend())
    if backend == "jax":
        jax: Any = importlib.import_module("jax")
        jax.config.update("jax_default_matmul_precision", "highest")
        return "jax_default_matmul_precision=highest"
    if backend == "torch":
        torch: Any = importlib.import_module("torch")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return "torch allow_tf32=False (matmul, cudnn)"
    if backend == "tensorflow":
        tf: Any = importlib.import_module("tensorflow")
        tf.config.experimental.enable_tensor_float_32_execution(False)
        return "tensorflow tensor_float_32_execution=False"
    return f"{backend}: no TF32 setting"


def accelerator_visible() -> bool:
    """True when the active Keras backend sees a GPU or TPU (``CUDA_VISIBLE_DEVICES=""`` hides
    them); False on CPU-only machines and for backends without a device query."""
    import keras

    backend = str(keras.backend.backend())
    if backend == "tensorflow":
        tf: Any = importlib.import_module("tensorflow")
        return bool(tf.config.list_physical_devices("GPU")
                    or tf.config.list_physical_devices("TPU"))
    if backend == "jax":
        jax: Any = importlib.import_module("jax")
        return str(jax.default_backend()) != "cpu"
    if backend == "torch":
        torch: Any = importlib.import_module("torch")
        return bool(torch.cuda.is_available())
    return False
