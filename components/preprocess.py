"""Preprocess stage: reads the train split of data/prepared, writes artifacts/preprocess/.

Analyze once, apply everywhere (TFX Transform's idea): the resize and the per-channel
normalization statistics of the train split become a small Keras model, `preprocessing`, that the
training model and the exported serving model both contain, so there is no train/serve skew.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines import records
from pipelines.config import load_params
from pipelines.outputs import atomic_directory, write_json

PREPARED_DIR = Path("data/prepared")
OUTPUT_DIR = Path("artifacts/preprocess")
PREPROCESSOR_FILE = "preprocessor.keras"


def compute_statistics(images: np.ndarray, image_height: int, image_width: int) -> dict:
    """Per-channel mean and variance of the (resized) images, in raw pixel units."""
    if len(images) == 0:
        raise ValueError("the train split is empty: nothing to compute normalization statistics from")
    resized = resize_images(images.astype(np.float32), image_height, image_width)
    pixels = resized.reshape(-1, resized.shape[-1]).astype(np.float64)
    return {"mean": pixels.mean(axis=0).tolist(), "variance": pixels.var(axis=0).tolist(), "num_images": int(len(images))}


def resize_images(images: np.ndarray, image_height: int, image_width: int) -> np.ndarray:
    if images.shape[1:3] == (image_height, image_width):
        return images
    return tf.image.resize(images, (image_height, image_width)).numpy()


def build_preprocessor(input_shape, image_height: int, image_width: int, mean, variance) -> keras.Model:
    """float32 raw pixels [H,W,C] -> resized, normalized features; the same model trains and serves."""
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="pixels")
    x = inputs
    if tuple(input_shape[:2]) != (image_height, image_width):
        x = keras.layers.Resizing(image_height, image_width, name="resize")(x)
    # A channel that never varies (variance 0) would divide by zero; Keras adds epsilon there.
    x = keras.layers.Normalization(axis=-1, mean=list(mean), variance=list(variance), name="normalize")(x)
    return keras.Model(inputs, x, name="preprocessing")


def main() -> None:
    params = load_params().preprocess
    manifest = records.read_manifest(PREPARED_DIR)
    images, _ = records.load_split_arrays(PREPARED_DIR, "train")
    statistics = compute_statistics(images, params.image_height, params.image_width)
    preprocessor = build_preprocessor(
        manifest["image_shape"], params.image_height, params.image_width, statistics["mean"], statistics["variance"]
    )
    with atomic_directory(OUTPUT_DIR) as staging:
        preprocessor.save(staging / PREPROCESSOR_FILE)
        write_json(
            staging / "statistics.json",
            {**statistics, "input_shape": manifest["image_shape"], "output_shape": list(preprocessor.output_shape[1:])},
        )
    print(f"{OUTPUT_DIR}: mean {np.round(statistics['mean'], 3).tolist()}, std {np.round(np.sqrt(statistics['variance']), 3).tolist()}")


if __name__ == "__main__":
    main()
