"""A residual MLP for tables (after Gorishniy et al. 2021, "Revisiting deep learning models for tabular data": the
ResNet they found a strong baseline): embeddings, a dense projection to `width`, then `depth` blocks of a dense layer
of twice the width, batch norm, ReLU, dropout and a dense layer back, each added to its input. Batch norm sits right
after a dense layer (not before it, as in the paper), where the int8 conversion and tfmot's QAT fold it into that
layer."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register
from models.table_blocks import check_vector, embedded_features, regularizer_for


@register("table_resnet", kinds=("table",), search=True, cost=2)
def build_table_resnet(
    input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=True, layout=None, width=64, depth=2
):
    check_vector(input_shape)
    regularizer = regularizer_for(weight_decay)
    inputs = keras.Input(shape=input_shape, name="features")
    x = embedded_features(inputs, layout, regularizer)
    x = keras.layers.Dense(width, kernel_regularizer=regularizer, name="projection")(x)
    for index in range(depth):
        y = keras.layers.Dense(
            2 * width, kernel_regularizer=regularizer, use_bias=not batch_norm, name=f"block_{index}_a"
        )(x)
        if batch_norm:
            y = keras.layers.BatchNormalization(name=f"block_{index}_norm")(y)
        y = keras.layers.ReLU(name=f"block_{index}_relu")(y)
        if dropout_rate:
            y = keras.layers.Dropout(dropout_rate)(y)
        y = keras.layers.Dense(width, kernel_regularizer=regularizer, name=f"block_{index}_b")(y)
        x = keras.layers.Add(name=f"block_{index}")([x, y])
    x = keras.layers.ReLU(name="head_relu")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="table_resnet")
