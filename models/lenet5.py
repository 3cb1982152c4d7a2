"""LeNet-5 (LeCun et al., 1998) as in the textbook's CNN chapter, with ReLU and max pooling."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register


def conv_block(x, filters: int, kernel_size: int, regularizer, batch_norm: bool):
    """Conv (no bias under batch norm) -> batch norm -> ReLU."""
    x = keras.layers.Conv2D(
        filters, kernel_size, padding="same", kernel_regularizer=regularizer, use_bias=not batch_norm
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def dense_head(x, num_classes: int, regularizer, dropout_rate: float):
    """LeNet-5's classifier: flatten, dense 120 and 84 (ReLU, dropout), logits."""
    x = keras.layers.Flatten()(x)
    for units in (120, 84):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate)(x)
    return keras.layers.Dense(num_classes, name="logits")(x)


@register("lenet5", min_input_size=28, max_input_size=32)  # designed for 28-32 px digits
def build_lenet5(input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for filters in (6, 16):
        x = keras.layers.MaxPooling2D(2)(conv_block(x, filters, 5, regularizer, batch_norm))
    return keras.Model(inputs, dense_head(x, num_classes, regularizer, dropout_rate), name="lenet5")
