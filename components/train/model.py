"""The trained model: the preprocessing model, the registry's classifier and a float32 softmax, built under the
strategy in the planned precision; reads artifacts/preprocess, writes nothing.
"""

from __future__ import annotations

import tf_keras as keras

from components.train import hardware
from components.train.schedule import (
    options_for,
)
from models import applications, registry
from models.preprocessing import load_preprocessor
from tfpipe import paths
from tfpipe.config import TrainParams


def build_training_model(preprocessor: keras.Model, classifier: keras.Model) -> keras.Model:
    """raw pixels -> preprocessing -> classifier logits -> float32 softmax probabilities."""
    inputs = keras.Input(shape=preprocessor.input_shape[1:], dtype="float32", name="image")
    logits = classifier(preprocessor(inputs))
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="trained_model")


def build_classifier(params: TrainParams, input_shape, num_classes: int, load_weights: bool = True) -> keras.Model:
    """The registry's model; a pretrained backbone also gets its weights (unless load_weights is False)."""
    # AdamW decays weights itself (decoupled); an L2 penalty on top would apply weight_decay twice.
    l2 = 0.0 if params.optimizer == "adamw" else params.weight_decay
    options = {}
    if applications.is_backbone(params.model):
        backbone = params.backbone
        image_size = applications.backbone_input_size(input_shape, backbone.min_image_size)[0]
        weights = applications.resolve_weights(params.model, backbone.weights, image_size) if load_weights else None
        options = {
            "weights": weights,
            "imagenet": backbone.weights == "imagenet",
            "min_image_size": backbone.min_image_size,
        }
    options.update(options_for(params.model, params.model_options))
    return registry.get_builder(params.model)(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        dropout_rate=params.dropout_rate,
        weight_decay=l2,
        batch_norm=params.batch_norm,
        **options,
    )


def float32_copy(
    model: keras.Model, preprocessor: keras.Model, params: TrainParams, input_shape, num_classes: int
) -> keras.Model:
    """The same weights in a float32 model: what evaluate and export (TFLite, tfmot) expect."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build_training_model(preprocessor, build_classifier(params, input_shape, num_classes, load_weights=False))
    for source, target in zip(model.get_layer(params.model).layers, copy.get_layer(params.model).layers, strict=True):
        # get_weights() lists trainable weights first: the same split, the same order
        target.trainable = source.trainable
    copy.set_weights(model.get_weights())
    return copy


def build_model(
    params: TrainParams, plan: hardware.HardwarePlan, strategy, num_classes: int
) -> tuple[keras.Model, keras.Model]:
    """(the training model, its preprocessing model), built under the strategy in the plan's precision."""
    with strategy.scope():
        # A pretrained backbone brings the input preprocessing its weights were trained with.
        preprocessor = load_preprocessor(
            paths.PREPROCESS / "statistics.json", normalize=not registry.takes_raw_pixels(params.model)
        )
        hardware.apply_precision(plan)
        model = build_training_model(preprocessor, build_classifier(params, preprocessor.output_shape[1:], num_classes))
    return model, preprocessor
