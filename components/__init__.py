"""The DVC stages, one folder each (ingest, preprocess, train, evaluate, export): `python -m components.<stage>`
runs the stage's main (its __main__.py); the helpers only that stage uses sit beside it."""

import tfpipe  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
