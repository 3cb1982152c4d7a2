"""LeNet-5 (LeCun et al., 1998) as in the textbook's CNN chapter, with ReLU and max pooling."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register


@register("lenet5", min_input_size=28)  # designed for 28-32 px digits
def build_lenet5(input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for filters in (6, 16):
        x = keras.layers.Conv2D(filters, 5, padding="same", kernel_regularizer=regularizer, use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    for units in (120, 84):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")
