"""One module per DVC stage: ingest, preprocess, train, evaluate, export."""

import pipelines  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
