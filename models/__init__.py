"""Model architectures by name: one builder per file, collected in models.registry."""

import tfpipe  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
