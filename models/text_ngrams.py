"""A bag-of-n-grams network for text (fastText's idea, on a TF-IDF vector of words and word pairs): dropout, one dense
layer of `width`, the classes. Fast on a CPU, and as strong as the long models on sentiment, where the words say
most (the textbook's IMDB)."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register


@register("text_ngrams", kinds=("text",), search=True, text_input="bag", cost=1)
def build_text_ngrams(
    input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False, layout=None, width=64
):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Dropout(dropout_rate)(inputs) if dropout_rate else inputs
    x = keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer, name="dense")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="text_ngrams")
