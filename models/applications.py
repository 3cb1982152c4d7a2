"""Pretrained Keras Applications backbones (MobileNetV2, ResNet50, EfficientNetB0) with a new head.

The classifier takes raw pixels (float 0..255, the preprocess stage only resizes them) and is one
flat Functional model, in three named parts:

- `input_*` adapter layers. Rule for small or grayscale images: one channel is repeated to three
  (ImageNet backbones take RGB), and an image smaller than `min_image_size` (at least 32, the Keras
  Applications minimum) is resized up to it (bilinear). Then comes the backbone's own
  `preprocess_input`, as layers: MobileNetV2 scales to [-1, 1]; ResNet50 swaps RGB to BGR and
  subtracts the ImageNet mean, which is a fixed 1x1 convolution here; EfficientNetB0 keeps its
  scaling inside the backbone.
- the backbone's layers, with their Keras names.
- `head_*` layers and `logits`: global average pooling, dropout, and a dense layer with L2 on
  its kernel. Pretrained weights are not decayed towards zero.

The model is flat, with no nested backbone model, because tfmot's quantize_model refuses nested
models. Weights are never downloaded. `imagenet` means the file Keras itself would download, read
from its cache (`$KERAS_HOME/models`, by default `~/.keras/models`). A path means a Keras .h5
weights file of the backbone, saved with `include_top=False`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tf_keras as keras

from models.registry import register
from tfpipe.outputs import StatedError

MIN_IMAGE_SIZE = 32  # the smallest input every Keras Applications backbone accepts
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)  # caffe-style preprocessing (ResNet50)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)  # EfficientNet's extra rescale (see _fold_efficientnet_rescale)
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)  # the input sizes Keras has MobileNetV2 ImageNet weights for


@dataclass(frozen=True)
class Backbone:
    constructor: Callable
    preprocessing: str  # "tf" ([-1, 1]), "caffe" (BGR minus mean), "none" (inside the backbone)
    weights_url: str  # the directory Keras downloads the no-top ImageNet weights from
    weights_file: Callable[[int], str]  # file name for a given input size
    file_hash: str | None  # the md5 Keras checks a downloaded file against; None: it checks nothing


# Where Keras downloads the no-top ImageNet weights, and the md5 it checks them against: copied from
# tf_keras 2.21's applications modules (public constants there are not part of its API).
BACKBONES = {
    "mobilenet_v2": Backbone(
        keras.applications.MobileNetV2,
        "tf",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
        lambda size: (
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_"
            f"{size if size in MOBILENET_V2_SIZES else 224}_no_top.h5"
        ),
        None,
    ),
    "resnet50": Backbone(
        keras.applications.ResNet50,
        "caffe",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
        lambda size: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "efficientnet_b0": Backbone(
        keras.applications.EfficientNetB0,
        "none",
        "https://storage.googleapis.com/keras-applications/",
        lambda size: "efficientnetb0_notop.h5",
        "50bc09e76180e00e4465e1a485ddc09d",
    ),
}


def file_md5(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "md5").hexdigest()


class WeightsNotFound(StatedError, FileNotFoundError):
    """ImageNet weights are not in the Keras cache, or a weights path does not exist."""


def is_backbone(name: str) -> bool:
    return name in BACKBONES


def keras_cache_dir() -> Path:
    """Where Keras looks for downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(name: str, weights: str, image_size: int) -> Path | None:
    """`none` -> None; `imagenet` -> the cached Keras file; a path -> that file. Never downloads."""
    if weights == "none":
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFound(
                f"train.backbone.weights: {path} is not a file; expected imagenet, none or the path to a "
                f"Keras .h5 weights file of {name} (include_top=False)"
            )
        return path
    backbone = BACKBONES[name]
    file_name = backbone.weights_file(image_size)
    path = keras_cache_dir() / file_name
    if not path.is_file():
        raise WeightsNotFound(
            f"train.backbone.weights: imagenet weights for {name} are not in the Keras cache: {path} does not exist "
            "(nothing is downloaded at run time). On a machine with a network, "
            f"download {backbone.weights_url}{file_name} "
            f"and copy it to {path} (or to $KERAS_HOME/models/), or set train.backbone.weights to the file's path, "
            "or to none to train from scratch"
        )
    if backbone.file_hash and file_md5(path) != backbone.file_hash:
        raise WeightsNotFound(
            f"train.backbone.weights: {path} does not match the hash Keras publishes for it "
            f"({backbone.file_hash}); it is truncated or a different file: download it again"
        )
    return path


def backbone_input_size(input_shape, min_image_size: int = MIN_IMAGE_SIZE) -> tuple[int, int]:
    """The (height, width) the backbone sees: the input, scaled up (keeping its aspect) if a side is below the
    minimum."""
    height, width = int(input_shape[0]), int(input_shape[1])
    minimum = max(min_image_size, MIN_IMAGE_SIZE)
    if min(height, width) >= minimum:
        return height, width
    scale = minimum / min(height, width)
    return math.ceil(height * scale), math.ceil(width * scale)


def build_adapter(inputs, preprocessing: str, min_image_size: int):
    """Grayscale -> RGB, small -> min_image_size, then the backbone's preprocess_input, all as `input_*` layers."""
    x = inputs
    if inputs.shape[-1] == 1:
        x = keras.layers.Concatenate(name="input_grayscale_to_rgb")([x, x, x])
    elif inputs.shape[-1] != 3:
        raise ValueError(f"pretrained backbones take 1- or 3-channel images, got {inputs.shape[-1]} channels")
    size = backbone_input_size(inputs.shape[1:3], min_image_size)
    if size != tuple(inputs.shape[1:3]):
        x = keras.layers.Resizing(*size, name="input_resize")(x)
    if preprocessing == "tf":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="input_scale_to_unit_range")(x)
    elif preprocessing == "caffe":
        # RGB -> BGR and minus the ImageNet mean: a fixed 1x1 convolution, which tfmot and the int8
        # converter treat like any other conv (a channel-reversing op would have to stay float).
        swap = keras.layers.Conv2D(3, 1, name="input_rgb_to_bgr_minus_mean", trainable=False)
        x = swap(x)
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for channel in range(3):
            kernel[0, 0, channel, 2 - channel] = 1.0
        swap.set_weights([kernel, -np.array(IMAGENET_MEAN_RGB[::-1], np.float32)])
    return x


def load_backbone_weights(
    backbone: Backbone, flat_layers: list, weights_path: Path, input_shape, fold_rescale: bool
) -> None:
    """Loads the file the way Keras does, into a standalone backbone, then copies it layer by layer.

    Copying layer by layer, not by name, keeps it right when this process already built another
    backbone and Keras numbered an auto-named layer (`rescaling_1`) differently from the file.
    """
    reference = backbone.constructor(include_top=False, weights=None, input_shape=tuple(input_shape))
    try:
        reference.load_weights(str(weights_path))
    except (ValueError, OSError) as error:
        raise ValueError(
            f"train.backbone.weights: {weights_path} cannot be loaded into {reference.name} "
            f"(include_top=False): {str(error).splitlines()[0]}"
        ) from None
    sources = [layer for layer in reference.layers if layer.weights]
    targets = [layer for layer in flat_layers if layer.weights]
    if [type(layer) for layer in sources] != [type(layer) for layer in targets]:
        raise RuntimeError(f"{reference.name}: the flat model's layers do not line up with the reference backbone's")
    for source, target in zip(sources, targets, strict=True):
        target.set_weights(source.get_weights())
    if fold_rescale:
        _fold_efficientnet_rescale(targets)


def _fold_efficientnet_rescale(layers: list) -> None:
    """Keras adds `x * 1/sqrt(stddev)` after EfficientNet's Normalization only when it loads
    weights="imagenet" itself (tensorflow#49930). Here that factor is folded into the Normalization's
    variance, which gives the same function without a layer that cannot be serialized safely."""
    normalization = next(layer for layer in layers if isinstance(layer, keras.layers.Normalization))
    mean, variance, count = normalization.get_weights()
    normalization.set_weights([mean, variance * np.reshape(IMAGENET_STDDEV_RGB, variance.shape), count])


def build_backbone_classifier(
    name: str,
    input_shape,
    num_classes: int,
    dropout_rate: float = 0.0,
    weight_decay: float = 0.0,
    batch_norm: bool = True,
    weights: Path | str | None = None,
    imagenet: bool = False,
    min_image_size: int = MIN_IMAGE_SIZE,
) -> keras.Model:
    """The flat classifier. `weights` is an already resolved file (resolve_weights) or None, and
    `imagenet` says whether it is Keras' ImageNet file (for EfficientNet's extra rescale)."""
    del batch_norm  # the backbones bring their own batch norm
    backbone = BACKBONES[name]
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    adapted = build_adapter(inputs, backbone.preprocessing, min_image_size)
    application = backbone.constructor(include_top=False, weights=None, input_tensor=adapted)
    adapter_names = {layer.name for layer in keras.Model(inputs, adapted).layers}
    backbone_layers = [layer for layer in application.layers if layer.name not in adapter_names]
    if weights is not None:
        load_backbone_weights(
            backbone,
            backbone_layers,
            Path(weights),
            adapted.shape[1:],
            fold_rescale=imagenet and name == "efficientnet_b0",
        )
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(application.output)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def backbone_layers(classifier: keras.Model) -> list:
    """The backbone's own layers, input to output: everything but the adapter, the head and the input."""
    return [
        layer
        for layer in classifier.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not layer.name.startswith(("input_", "head_"))
        and layer.name != "logits"
    ]


def freeze_backbone(classifier: keras.Model, trainable_top_layers: int | None) -> int:
    """Freezes the backbone but its top N layers (None: the whole backbone trains); returns how many train.

    Batch norm layers stay frozen whenever the backbone is pretrained: in Keras 2 a frozen
    BatchNormalization runs in inference mode, so its ImageNet statistics are kept.
    """
    layers = backbone_layers(classifier)
    if trainable_top_layers is None:
        for layer in layers:
            layer.trainable = True
        return len(layers)
    top = layers[len(layers) - trainable_top_layers :] if trainable_top_layers else []
    for layer in layers:
        layer.trainable = layer in top and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(layer.trainable for layer in layers)


def _register(name: str) -> None:
    def build(input_shape, num_classes, **options):
        return build_backbone_classifier(name, input_shape, num_classes, **options)

    build.__name__ = f"build_{name}"
    build.takes_raw_pixels = True  # the backbone's own preprocessing replaces the dataset normalization
    register(name, min_input_size=MIN_IMAGE_SIZE)(build)


for _name in BACKBONES:
    _register(_name)
