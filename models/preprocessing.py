"""The preprocessing model every trained and served model starts with: resize to the model's input size, then
normalize by the train split's statistics (artifacts/preprocess/statistics.json, which the preprocess stage writes).
Train builds it into the trained model, export serves it inside the SavedModel: the same pixels, no skew.
"""

from __future__ import annotations

import json
from pathlib import Path

import tf_keras as keras

from tfpipe import paths

STATISTICS_FILE = paths.PREPROCESS / "statistics.json"


def build_preprocessor(
    input_shape, image_height: int, image_width: int, mean, variance, normalize: bool = True
) -> keras.Model:
    """float32 raw pixels [H,W,C] -> resized, normalized features; the same model trains and serves.

    normalize=False keeps raw pixel values, for models that bring their own input preprocessing
    (the pretrained backbones: their weights expect ImageNet's, not this dataset's, statistics).
    """
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="pixels")
    x = inputs
    if tuple(input_shape[:2]) != (image_height, image_width):
        x = keras.layers.Resizing(image_height, image_width, name="resize")(x)
    if normalize:
        # A channel that never varies (variance 0) would divide by zero; Keras adds epsilon there.
        x = keras.layers.Normalization(axis=-1, mean=list(mean), variance=list(variance), name="normalize")(x)
    elif x is inputs:
        x = keras.layers.Identity(name="raw_pixels")(x)  # a Model needs at least one layer
    return keras.Model(inputs, x, name="preprocessing")


def load_preprocessor(statistics_file: Path = STATISTICS_FILE, normalize: bool = True) -> keras.Model:
    """The preprocessing model the preprocess stage analyzed, rebuilt from its statistics."""
    if not statistics_file.is_file():
        raise FileNotFoundError(f"{statistics_file}: not found; run the preprocess stage first (dvc repro preprocess)")
    with statistics_file.open() as stream:
        statistics = json.load(stream)
    height, width = statistics["output_shape"][:2]
    return build_preprocessor(
        statistics["input_shape"], height, width, statistics["mean"], statistics["variance"], normalize
    )
