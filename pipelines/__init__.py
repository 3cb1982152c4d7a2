"""The command-line tools a user runs around the stages (`python -m pipelines` lists them): materialize, schema,
presets, predict and store (MLflow store upkeep). They sit on top: they may use the stages (components/), the
models and the foundation (tfpipe/); nothing below imports them."""

import tfpipe  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
