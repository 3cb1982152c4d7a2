"""Every registered model builds, gives one output per class and trains a step."""

import numpy as np
import pytest
import tf_keras as keras

from models import applications, registry


# The pretrained backbones once each here; tests/test_applications.py builds them at three shapes,
# trains, prunes and quantizes them.
@pytest.mark.parametrize(
    "name, input_shape",
    [
        (name, shape)
        for name in registry.names()
        for shape in ([(28, 28, 1), (32, 32, 3)] if "image" in registry.get_builder(name).kinds else [(12,)])
        if shape == (32, 32, 3) or not applications.is_backbone(name)
    ],
)
def test_every_registered_model_builds_and_trains_a_step(name, input_shape):
    builder = registry.get_builder(name)
    sequence = getattr(builder, "text_input", None) == "sequence"  # token ids of a 50-word vocabulary
    layout = {"vocabulary_size": 50} if sequence else None
    extra = {"layout": layout} if layout else {}
    model = builder(input_shape=input_shape, num_classes=10, dropout_rate=0.1, weight_decay=1e-4, **extra)
    assert model.output_shape == (None, 10)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 50, size=(4, *input_shape)) if sequence else rng.normal(size=(4, *input_shape))
    images = images.astype("int32" if sequence else "float32")
    before = [weight.copy() for weight in model.get_weights()]
    loss = model.train_on_batch(images, np.array([0, 1, 2, 3]))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_unknown_model_lists_known_names():
    with pytest.raises(
        ValueError,
        match="unknown model 'alexnet'; known models: "
        "efficientnet_b0, lenet5, lenet5_s2d, mlp, mobilenet_v2, resnet18, resnet50, resnet_small, table_mlp, "
        "table_resnet, text_cnn, text_lstm, text_ngrams, vgg13",
    ):
        registry.get_builder("alexnet")


def test_duplicate_name_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("lenet5")(lambda **kwargs: None)
