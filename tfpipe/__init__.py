"""The foundation every stage and tool builds on: params (config), paths, the TFRecord format (records), atomic
outputs, MLflow and TensorBoard (tracking), content keys (lineage), the TFLite runtime (tflite), image decoding
(images), model provenance (model_trust) and secret redaction. It imports nothing from components/, models/ or
pipelines/: those sit above it.
"""

import os

# tensorflow-model-optimization cannot prune or quantize Keras 3 models, so every entry point
# must select the Keras 2 API (tf_keras) before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# No secret leaves the process: credentials in a tracking URI are redacted from tracebacks and logs.
from tfpipe import redaction  # noqa: E402

redaction.install()
