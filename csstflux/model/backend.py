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
exported graph with ONNX Runtime on the CPU otherwise. It asks the backend only where an
accelerator may exist (:func:`accelerator_possible`: a device node or driver of one): on a
CPU-only Linux machine the answer comes without importing Keras and its backend.

Importing Keras
---------------
Keras is imported in one place, :mod:`csstflux.model._keras`, with TensorFlow's C++ start-up
lines held back (:func:`csstflux.logs.quiet_native_stderr`; ``-v`` shows them);
:func:`import_keras` reaches it from code that needs Keras only on some paths.
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
from typing import Any

#: Device nodes and driver folders of accelerators Keras backends use: NVIDIA (CUDA), AMD
#: (ROCm), Google TPU (``/dev/accel*``, ``/dev/vfio``).
ACCELERATOR_PATHS: tuple[str, ...] = ("/dev/nvidiactl", "/dev/nvidia[0-9]*",
                                      "/proc/driver/nvidia/gpus/*", "/dev/kfd", "/dev/accel*",
                                      "/dev/vfio/[0-9]*")


def import_keras() -> Any:
    """The ``keras`` module, imported on first call with the backend's start-up noise held
    back."""
    return importlib.import_module("csstflux.model._keras").keras


def accelerator_possible() -> bool:
    """Whether an accelerator may be visible here, without importing any backend.

    False when ``CUDA_VISIBLE_DEVICES`` hides every device (``""`` or ``-1``) and no TPU
    is named, or on Linux when none of :data:`ACCELERATOR_PATHS` exists; True otherwise
    (other systems: the backend has to be asked).
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1")
    tpu_named = bool(os.environ.get("TPU_NAME") or os.environ.get("TPU_ACCELERATOR_TYPE"))
    if hidden and not tpu_named and not os.path.exists("/dev/kfd"):
        return False
    if not sys.platform.startswith("linux"):
        return True
    return tpu_named or any(glob.glob(pattern) for pattern in ACCELERATOR_PATHS)


def backend_info() -> dict[str, str]:
    """``{"backend": name, "keras": version}`` of the Keras installation in use."""
    keras = import_keras()

    return {"backend": str(keras.backend.backend()), "keras": str(keras.__version__)}


def use_full_float32() -> str:
    """Make the active Keras backend compute float32 products in full float32 (no TF32).

    Returns the setting applied, as text for provenance. Safe to call more than once and on
    machines without a GPU (the settings then change nothing).
    """
    keras = import_keras()

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
    them); False on CPU-only machines and for backends without a device query. Keras is
    imported only where :func:`accelerator_possible`."""
    if not accelerator_possible():
        return False
    keras = import_keras()

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
