"""What the table models share: the input block that embeds each categorical's one-hot slice of the feature vector
and keeps the numbers as they are (models/table_preprocessing.py lays the vector out). Reads and writes nothing."""

from __future__ import annotations

import tf_keras as keras

from models.table_layers import FeatureSlice


def embedding_size(categories: int) -> int:
    """fast.ai's rule of thumb for an embedding's width, at most 16: 3 categories -> 3, 50 -> 14."""
    return int(min(16, max(2, round(1.6 * categories**0.56))))


def embedded_features(inputs, layout: dict | None, regularizer=None, prefix: str = ""):
    """The numbers and indicators as they are, each categorical block through its own embedding (a linear map of
    its one-hot block: TFLite's FULLY_CONNECTED, which runs in int8), concatenated. Without a layout the whole
    vector is taken as numbers."""
    if not layout or not layout.get("slices"):
        return inputs
    dense_size = int(layout["numeric"]) + int(layout["indicators"])
    parts = [FeatureSlice(0, dense_size, name=f"{prefix}numbers")(inputs)] if dense_size else []
    for index, (start, size) in enumerate(layout["slices"]):
        one_hot = FeatureSlice(start, size, name=f"{prefix}categories_{index}")(inputs)
        parts.append(
            keras.layers.Dense(
                embedding_size(size), use_bias=False, kernel_regularizer=regularizer, name=f"{prefix}embedding_{index}"
            )(one_hot)
        )
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name=f"{prefix}embedded")(parts)


def regularizer_for(weight_decay: float):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def check_vector(input_shape) -> None:
    if len(input_shape) != 1:
        raise ValueError(f"a table model takes a feature vector, got an input of shape {tuple(input_shape)}")
