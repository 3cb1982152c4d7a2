"""Multi-layer perceptron from the textbook's first chapters: flatten, two hidden layers."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register


@register("mlp")
def build_mlp(input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False, hidden_units=(256, 128)):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Flatten()(inputs)
    for units in hidden_units:
        x = keras.layers.Dense(units, kernel_regularizer=regularizer, use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")
