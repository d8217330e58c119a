"""UaRA-net: the network, its loss and training, model cards, predictors (Keras, ONNX Runtime),
σ calibration and evaluation.

Keras (and with it TensorFlow) is imported only by the modules that need it, through
:func:`csstflux.model.backend.import_keras`: reading a card, verifying model files and running
the exported graph with ONNX Runtime (:mod:`csstflux.model.onnx_predictor`) do not import it, so
a CPU worker that predicts with ONNX Runtime never loads TensorFlow.
"""
