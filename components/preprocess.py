"""Preprocess stage: reads the train split of data/prepared, writes artifacts/preprocess/statistics.json.

Analyze once, apply everywhere (TFX Transform's idea): the resize and the per-channel
normalization statistics of the train split define a small Keras model, `preprocessing`
(build_preprocessor), that the training model and the exported serving model both contain, so
there is no train/serve skew. The stage stores the statistics rather than a saved .keras file
because a .keras archive carries its save time: the same analysis must give the same bytes, or
DVC would retrain after every forced rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines import paths, records
from pipelines.config import PARAMS_FILE, Params, ParamsError, load_params, resolve_image_size
from pipelines.outputs import atomic_directory, run_stage, write_json

STATISTICS_FILE = paths.PREPROCESS / "statistics.json"


def compute_statistics(images: np.ndarray, image_height: int, image_width: int) -> dict:
    """Per-channel mean and variance of the (resized) images, in raw pixel units."""
    if len(images) == 0:
        raise ValueError("the train split is empty: nothing to compute normalization statistics from")
    resized = resize_images(images.astype(np.float32), image_height, image_width)
    pixels = resized.reshape(-1, resized.shape[-1]).astype(np.float64)
    return {
        "mean": pixels.mean(axis=0).tolist(),
        "variance": pixels.var(axis=0).tolist(),
        "num_images": int(len(images)),
    }


def resize_images(images: np.ndarray, image_height: int, image_width: int) -> np.ndarray:
    if images.shape[1:3] == (image_height, image_width):
        return images
    return tf.image.resize(images, (image_height, image_width)).numpy()


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


def model_input_size(params: Params, data_height: int, data_width: int) -> tuple[int, int]:
    """preprocess.image_height/width, with `auto` resolved for the data and train.model (models/registry.py); with
    train.model: auto, for every model the search may choose, so that they all take the same input."""
    from components.train_search import candidate_models
    from models import registry

    try:
        minimum, maximum = registry.input_size_range(candidate_models(params.train))
    except ValueError as error:
        raise ParamsError(f"{PARAMS_FILE}: train.model: {error}") from None
    return resolve_image_size(params.preprocess, data_height, data_width, minimum, maximum)


def main() -> None:
    params = load_params()
    manifest = records.read_manifest(paths.PREPARED)
    height, width = model_input_size(params, *manifest["image_shape"][:2])
    images, _ = records.load_split_arrays(paths.PREPARED, "train")
    statistics = compute_statistics(images, height, width)
    preprocessor = build_preprocessor(
        manifest["image_shape"], height, width, statistics["mean"], statistics["variance"]
    )
    with atomic_directory(paths.PREPROCESS) as staging:
        write_json(
            staging / "statistics.json",
            {
                **statistics,
                "input_shape": manifest["image_shape"],
                "output_shape": list(preprocessor.output_shape[1:]),
                "image_size": {
                    "height": height,
                    "width": width,
                    "requested": [params.preprocess.image_height, params.preprocess.image_width],
                    "model": params.train.model,
                },
            },
        )
    print(
        f"{paths.PREPROCESS}: {manifest['image_shape'][0]}x{manifest['image_shape'][1]} images "
        f"-> {height}x{width} for {params.train.model} "
        f"(preprocess.image_height/width: {params.preprocess.image_height}/{params.preprocess.image_width}); "
        f"mean {np.round(statistics['mean'], 3).tolist()}, std {np.round(np.sqrt(statistics['variance']), 3).tolist()}"
    )


if __name__ == "__main__":
    run_stage("preprocess", main)
