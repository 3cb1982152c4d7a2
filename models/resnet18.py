"""ResNet18 (He et al., 2015) with the CIFAR-style stem: a 3x3 conv, no max pooling."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register


def _basic_block(x, filters, stride, regularizer):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=regularizer)(
        x
    )
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer)(y)
    y = keras.layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        # Projection shortcut when the block changes resolution or width.
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, kernel_regularizer=regularizer)(
            shortcut
        )
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


@register("resnet18", min_input_size=32)  # CIFAR stem
def build_resnet18(input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=True, width=1.0):
    del batch_norm  # ResNet always uses batch norm; accepted for a uniform builder signature.
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Conv2D(int(64 * width), 3, padding="same", use_bias=False, kernel_regularizer=regularizer)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, int(filters * width), stride, regularizer)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet18")
