"""The image kind's preprocess: reads the train split of data/prepared, writes artifacts/preprocess/statistics.json.

Analyze once, apply everywhere (TFX Transform's idea): the resize and the per-channel normalization statistics of
the train split define a small Keras model, `preprocessing` (models/preprocessing.py), that the training model and
the exported serving model both contain, so there is no train/serve skew. `preprocess.image_height/width: auto`
is resolved here (resolve_image_size). The stage stores the statistics rather than a saved .keras file because a
.keras archive carries its save time: the same analysis must give the same bytes, or DVC would retrain after every
forced rerun.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.preprocessing import build_preprocessor
from tfpipe import paths, records
from tfpipe.config import PARAMS_FILE, Params, ParamsError, PreprocessParams, model_candidates
from tfpipe.outputs import atomic_directory, write_json

STATISTICS_BATCH = 4096  # images per batch of the streamed statistics (a smaller split is one batch)


def compute_statistics(batches, image_height: int, image_width: int) -> dict:
    """Per-channel mean and variance of the (resized) images, in raw pixel units. `batches`: an image array or an
    iterable of them (the train split streamed: memory for one batch, whatever the split's size); the batches'
    moments are merged exactly (Chan et al.), so one batch gives numpy's mean and var."""
    if isinstance(batches, np.ndarray):
        batches = [batches]
    count, num_images, mean, squares = 0, 0, None, None
    for images in batches:
        if not len(images):
            continue
        resized = resize_images(images.astype(np.float32), image_height, image_width)
        pixels = resized.reshape(-1, resized.shape[-1]).astype(np.float64)
        batch_mean = pixels.mean(axis=0)
        batch_squares = np.square(pixels - batch_mean).sum(axis=0)
        if count == 0:
            mean, squares = batch_mean, batch_squares
        else:
            delta, total = batch_mean - mean, count + len(pixels)
            mean = mean + delta * len(pixels) / total
            squares = squares + batch_squares + np.square(delta) * count * len(pixels) / total
        count += len(pixels)
        num_images += len(images)
    if num_images == 0:
        raise ValueError("the train split is empty: nothing to compute normalization statistics from")
    return {"mean": mean.tolist(), "variance": (squares / count).tolist(), "num_images": num_images}


def resize_images(images: np.ndarray, image_height: int, image_width: int) -> np.ndarray:
    if images.shape[1:3] == (image_height, image_width):
        return images
    return tf.image.resize(images, (image_height, image_width)).numpy()


def resolve_image_size(
    params: PreprocessParams, data_height: int, data_width: int, model_min_size: int, model_max_size: int | None = None
) -> tuple[int, int]:
    """preprocess.image_height/width: an auto side is the data's, scaled (both sides alike) until the shorter side
    lies within the model's designed range: up to model_min_size, down to model_max_size (a CPU-sized model never
    works on a photo's full size); a number is taken as it is."""
    shorter = max(1, min(data_height, data_width))
    target = shorter
    if shorter < model_min_size:
        target = model_min_size
    elif model_max_size is not None and shorter > model_max_size:
        target = model_max_size

    def scaled(side: int) -> int:  # integer arithmetic: 25 x 28/25 is exactly 28
        return side if target == shorter else max(1, -(-side * target // shorter))

    height = scaled(data_height) if params.image_height == "auto" else params.image_height
    width = scaled(data_width) if params.image_width == "auto" else params.image_width
    return int(height), int(width)


def model_input_size(params: Params, data_height: int, data_width: int) -> tuple[int, int]:
    """preprocess.image_height/width, with `auto` resolved for the data and train.model (models/registry.py); with
    train.model: auto, for every model the search may choose, so that they all take the same input."""
    from models import applications, registry

    candidates = model_candidates(params.train)
    try:
        minimum, maximum = registry.input_size_range(candidates)
    except ValueError as error:
        raise ParamsError(f"{PARAMS_FILE}: train.model: {error}") from None
    if any(applications.is_backbone(model) for model in candidates):
        # A backbone resizes its input up to train.backbone.min_image_size itself: resized here to that size, the
        # images are resized once, not twice (28 -> 32 here, then 32 -> 96 inside the model).
        minimum = max(minimum, params.train.backbone.min_image_size)
        maximum = None if maximum is None else max(maximum, minimum)
    return resolve_image_size(params.preprocess, data_height, data_width, minimum, maximum)


def preprocess(params: Params, manifest: dict) -> None:
    """Analyzes the train split and writes artifacts/preprocess/statistics.json."""
    height, width = model_input_size(params, *manifest["image_shape"][:2])
    train = records.read_split(paths.PREPARED, "train").batch(STATISTICS_BATCH)
    statistics = compute_statistics((images for images, _ in train.as_numpy_iterator()), height, width)
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
