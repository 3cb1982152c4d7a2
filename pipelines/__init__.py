"""The shared code the stages in components/ are built on, and the command-line tools a user runs around them.

Shared code: params (config), paths, the TFRecord format (records), tf.data (input_pipeline), hardware,
tracking, content keys (lineage), atomic outputs (outputs), the TFLite runtime (tflite).
Command-line tools (`python -m pipelines` lists them): materialize, schema, presets, predict, tracking.
"""

import os

# tensorflow-model-optimization cannot prune or quantize Keras 3 models, so every entry point
# must select the Keras 2 API (tf_keras) before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# No secret leaves the process: credentials in a tracking URI are redacted from tracebacks and logs.
from pipelines import redaction  # noqa: E402

redaction.install()
