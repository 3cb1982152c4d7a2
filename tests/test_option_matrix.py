"""Every registered model x every augmentation option, through the train stage's real code: one step, then TFLite.

A model that computes with its input's static shape (lenet5_s2d's SpaceToDepth, a Flatten before a Dense) broke
when an augmentation lost that shape (RandomCropWithPadding did). The matrix iterates the registry, so a new model
is covered without touching this file. One test per model (pytest-xdist spreads them); inside it the model is
built and compiled once and every option fits one step on the same traced train function.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.export.variants import convert_to_tflite
from components.preprocess.kinds.image import compute_statistics
from components.train.data import build_augmenter, build_input_pipeline
from components.train.model import build_classifier, build_training_model
from components.train.schedule import compile_model
from models import applications, registry
from models.loading import SpaceToDepth
from models.preprocessing import build_preprocessor
from tests.conftest import make_images, write_prepared
from tfpipe import records, tflite
from tfpipe.config import AugmentationParams, BackboneParams, TrainParams

IMAGE_SHAPE = (32, 32, 3)  # the smallest size every registered model accepts (the backbones' minimum)
NUM_CLASSES = 3
BATCH_SIZE = 4
SEED = 5
# One entry per option the params schema has (every flip mode on its own), then all of them at once.
OPTIONS = {
    "crop_padding": AugmentationParams(crop_padding=0.125),
    "flip_horizontal": AugmentationParams(flip="horizontal"),
    "flip_vertical": AugmentationParams(flip="vertical"),
    "flip_horizontal_and_vertical": AugmentationParams(flip="horizontal_and_vertical"),
    "rotation": AugmentationParams(rotation=0.1),
    "zoom": AugmentationParams(zoom=0.2),
    "translation": AugmentationParams(translation=0.2),
    "contrast": AugmentationParams(contrast=0.5),
    "erasing": AugmentationParams(erasing=1.0),
    "all": AugmentationParams(
        flip="horizontal", rotation=0.1, zoom=0.2, translation=0.2, contrast=0.5, crop_padding=0.125, erasing=0.5
    ),
}


def test_the_options_cover_every_augmentation_field():
    """A field added to AugmentationParams must be added to OPTIONS (and so to the matrix)."""
    covered = {field for params in OPTIONS.values() for field in _changed_fields(params)}
    assert covered == {field.name for field in dataclasses.fields(AugmentationParams)}


def _changed_fields(params: AugmentationParams) -> set[str]:
    default = AugmentationParams()
    return {
        field.name
        for field in dataclasses.fields(params)
        if getattr(params, field.name) != getattr(default, field.name)
    }


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("shape", [(None, 28, 28, 1), (BATCH_SIZE, *IMAGE_SHAPE), (None, None, None, 3)])
def test_every_augmentation_keeps_the_static_shape_of_its_input(option, shape):
    """Inside tf.data (a traced function) each augmenter returns the static shape it was given, unknown dims too."""
    augmenter = build_augmenter(OPTIONS[option], seed=SEED)
    traced = tf.function(lambda images: augmenter(images, training=True))
    assert traced.get_concrete_function(tf.TensorSpec(shape, tf.float32)).structured_outputs.shape.as_list() == list(
        shape
    )


@pytest.mark.parametrize("height, width", [(28, 28), (30, 29)])
def test_space_to_depth_pads_sides_known_only_at_run_time_as_it_pads_static_ones(height, width):
    layer = SpaceToDepth(4)
    images = tf.constant(np.random.default_rng(0).normal(size=(2, height, width, 3)), tf.float32)
    static = layer(images)
    dynamic = tf.function(layer).get_concrete_function(tf.TensorSpec((None, None, None, 3), tf.float32))
    assert dynamic.structured_outputs.shape.as_list() == [None, None, None, 48]
    np.testing.assert_array_equal(dynamic(images).numpy(), static.numpy())
    assert static.shape == (2, -(-height // 4), -(-width // 4), 48)
    assert layer.compute_output_shape((None, None, width, None)).as_list() == [None, None, -(-width // 4), None]
    assert layer.compute_output_shape((None, height, width, 3)).as_list() == [None, *static.shape[1:]]


def test_space_to_depth_config_is_unchanged():
    """Saved models name the layer and its block size only: they load with models.loading as before."""
    config = SpaceToDepth(4, name="space_to_depth").get_config()
    assert config["block_size"] == 4 and config["name"] == "space_to_depth"
    assert SpaceToDepth.from_config(config).block_size == 4


@pytest.fixture(scope="module")
def colour_prepared(tmp_path_factory):
    """A prepared folder (ingest's format) of 3 toy classes of 32x32 RGB images, 8 each; its train statistics."""
    images, labels = make_images(num_classes=NUM_CLASSES, per_class=8, shape=IMAGE_SHAPE)
    directory = tmp_path_factory.mktemp("option_matrix") / "prepared"
    write_prepared(directory, images, labels, ["a", "b", "c"])
    train_images, _ = records.load_split_arrays(directory, "train")
    return directory, compute_statistics(train_images, *IMAGE_SHAPE[:2])


# The image models: a table's and a text's go through their own stages in tests/test_tables_e2e.py and
# tests/test_texts_e2e.py (they take feature vectors and token ids, not images).
@pytest.mark.parametrize("name", [name for name in registry.names() if "image" in registry.get_builder(name).kinds])
def test_every_model_trains_a_step_with_every_augmentation_and_exports(name, colour_prepared):
    """Built as the train stage builds it (preprocessor, classifier, softmax; a backbone without downloaded
    weights), one fit step per option on the real input pipeline, then (not for a backbone) a float32 TFLite
    file that agrees with the Keras model."""
    directory, statistics = colour_prepared
    keras.utils.set_random_seed(SEED)
    # weights none: nothing is downloaded, and a backbone then trains in one phase like any other model.
    params = TrainParams(model=name, epochs=1, batch_size=BATCH_SIZE, backbone=BackboneParams(weights="none"))
    preprocessor = build_preprocessor(
        list(IMAGE_SHAPE),
        *IMAGE_SHAPE[:2],
        statistics["mean"],
        statistics["variance"],
        normalize=not registry.takes_raw_pixels(name),
    )
    classifier = build_classifier(params, preprocessor.output_shape[1:], NUM_CLASSES, load_weights=False)
    model = build_training_model(preprocessor, classifier)
    compile_model(model, params, steps_per_epoch=1, jit_compile=False)
    split = records.read_split(directory, "train")
    for option, augmentation in OPTIONS.items():
        data = build_input_pipeline(
            split,
            BATCH_SIZE,
            True,
            shuffle_buffer=16,
            seed=SEED,
            augmenter=build_augmenter(augmentation, SEED),
            cache="none",
            epochs=range(1),
        )
        history = model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), f"{name} with {option}: loss {history.history['loss']}"
    if applications.is_backbone(name):
        # Converting a backbone takes 12-26 s on 2 cores (mobilenet_v2 to resnet50), three times the rest of its
        # row; test_applications.py already converts each one after a training step (to int8, and runs it).
        return
    images, _ = records.load_split_arrays(directory, "test")
    runner = tflite.TFLiteClassifier(convert_to_tflite(model, "float32"))
    np.testing.assert_allclose(
        runner.predict(images), model(images.astype(np.float32), training=False).numpy(), rtol=1e-4, atol=1e-5
    )
