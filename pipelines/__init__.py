"""Wiring for tfpipe: params schema, tracking set-up, TFRecord format, data materialization."""
import os

# tensorflow-model-optimization cannot prune or quantize Keras 3 models, so every entry point
# must select the Keras 2 API (tf_keras) before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
