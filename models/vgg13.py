"""VGG13 (Simonyan & Zisserman, 2014) for small images: five conv blocks of 2 layers each."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register

BLOCK_FILTERS = (64, 128, 256, 512, 512)


@register("vgg13", min_input_size=32)  # CIFAR-style: five 2x2 poolings
def build_vgg13(input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=True, width=1.0):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for filters in BLOCK_FILTERS:
        for _ in range(2):
            x = keras.layers.Conv2D(
                int(filters * width), 3, padding="same", kernel_regularizer=regularizer, use_bias=not batch_norm
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        # Small inputs (28x28) cannot be halved five times; stop pooling at 1x1.
        if x.shape[1] > 1 and x.shape[2] > 1:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    for units in (256, 256):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="vgg13")
