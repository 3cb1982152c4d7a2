"""A small CIFAR-style ResNet (He et al., 2016, section 4.2) for colour photos on a CPU: three stages of basic blocks.

The default, width 16 and depth 1 (one basic block per stage, 16/32/64 channels, strides 1/2/2), has 79k
parameters: the size of a hand-written reference that reached 0.944 on 32x32 colour photo tiles in 145 s on 2
cores (benchmarks/reference_recipe.py is that recipe, to compare with). Every convolution is 3x3 without bias
and followed by batch norm (which the TFLite converter folds into it); a block that changes the resolution or
the width has a 1x1 projection shortcut; global average pooling, then the logits.

Why no space-to-depth stem (lenet5_s2d has one): on an AVX-512 VNNI CPU without AMX (AMD EPYC, 2 cores) the
full-integer TFLite file takes 0.34x the float32 one's invoke time (47 vs 138 us, batch 1, 1 thread). On an AMX CPU,
benchmarks/RESULTS.md's fit of XNNPACK's int8 kernel (6 us + 65 ns per 16 output pixels per kernel tap, up to 64
channels) puts these convolutions near 190 us, an estimate, not a measurement, below float32 there (about 250 us,
scaled by LeNet-5's float32 time on both CPUs). A SpaceToDepth(2) stem, which halves every stage's resolution, cuts
that estimate to about 90 us but cost 2.2 points of val+test accuracy on 11 classes of photo tiles with 80 train
images per class (0.958 vs 0.980, mean of 3 seeds): not offered.
"""

from __future__ import annotations

import tf_keras as keras

from models.registry import register

STRIDES = (1, 2, 2)  # per stage: 32x32 -> 32x32 -> 16x16 -> 8x8 at the minimum input size


def _positive_int(name: str, value) -> int:
    # bool is an int in Python; True as a width is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"resnet_small: {name} must be a positive integer, got {value!r}")
    return value


def _conv_bn(x, filters: int, kernel_size: int, stride: int, regularizer, name: str):
    """Convolution without bias (batch norm's offset replaces it), then batch norm."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",  # ReLU networks: keeps the activations' scale through the blocks
        kernel_regularizer=regularizer,
        name=f"{name}_conv",
    )(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def _basic_block(x, filters: int, stride: int, regularizer, name: str):
    """conv-bn-relu, conv-bn, plus the shortcut, then relu (a 1x1 projection when the shape changes)."""
    y = _conv_bn(x, filters, 3, stride, regularizer, f"{name}_1")
    y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
    y = _conv_bn(y, filters, 3, 1, regularizer, f"{name}_2")
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, regularizer, f"{name}_shortcut")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


# 32: the CIFAR design size (like resnet18's CIFAR stem). The two stride-2 stages leave 8x8 at 32 px; smaller
# images (MNIST's 28) are resized up by the preprocess stage, so the last stage never works on fewer than 8x8.
@register("resnet_small", min_input_size=32, max_input_size=64)  # larger photos: 4x the cost at 64
def build_resnet_small(
    input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=True, width=16, depth=1
) -> keras.Model:
    """Stages of `width`, 2*`width` and 4*`width` channels, `depth` basic blocks each; logits out.

    Batch norm is part of the architecture (it is what lets the residual stack train at a high rate), so
    `batch_norm` is accepted for the uniform builder signature and ignored, as resnet18 does.
    """
    del batch_norm
    width, depth = _positive_int("width", width), _positive_int("depth", depth)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = _conv_bn(inputs, width, 3, 1, regularizer, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, stride in enumerate(STRIDES, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, depth + 1):
            x = _basic_block(x, filters, stride if block == 1 else 1, regularizer, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet_small")
