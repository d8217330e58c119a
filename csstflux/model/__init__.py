"""UaRA-net: the network, its loss and training, model cards, predictors (Keras, ONNX Runtime),
σ calibration and evaluation."""

from csstflux.logs import quiet_native_stderr, verbose

# Keras imports its backend (TensorFlow) here, before any module of this package: with
# TensorFlow's C++ start-up lines held back (csstflux.logs.quiet_native_stderr; -v shows them)
with quiet_native_stderr(restore=verbose()):
    import keras  # noqa: F401
