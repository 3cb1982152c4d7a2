"""An MLP with embeddings for tables (the textbook's Auto MPG network, with each categorical column embedded): two
dense layers of `width` on the feature vector of models/table_preprocessing.py."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register
from models.table_blocks import check_vector, embedded_features, regularizer_for


@register("table_mlp", kinds=("table",), search=True, cost=1)
def build_table_mlp(
    input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False, layout=None, width=64, depth=2
):
    """Batch norm is not used: a small table's batches of 16 rows give statistics that are noise (batch_norm is
    accepted for a common signature and ignored)."""
    check_vector(input_shape)
    regularizer = regularizer_for(weight_decay)
    inputs = keras.Input(shape=input_shape, name="features")
    x = embedded_features(inputs, layout, regularizer)
    for index in range(depth):
        x = keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer, name=f"dense_{index}")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="table_mlp")
