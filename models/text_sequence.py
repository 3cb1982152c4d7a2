"""The text models that read token ids in order: the textbook's bidirectional LSTM and a 1-D
convolution. Each embeds the ids (`layout["vocabulary_size"]` of them: the vocabulary, padding and the
out-of-vocabulary slot); none masks the padding, so TFLite converts them to its fused LSTM op and to
int8 (the padding, id 0, is what the model learns to skip)."""

from __future__ import annotations

import tf_keras as keras

from models.registry import register


def embedded(input_shape, layout: dict | None, embedding: int, regularizer):
    if not layout or "vocabulary_size" not in layout:
        raise ValueError("a text model needs the vocabulary's size (layout['vocabulary_size'])")
    # int32 ids: a full-integer TFLite model keeps an int32 input as it is (an id is no int8 value) and gathers
    # the int8 embedding rows with it.
    inputs = keras.Input(shape=input_shape, dtype="int32", name="token_ids")
    x = keras.layers.Embedding(
        layout["vocabulary_size"], embedding, embeddings_regularizer=regularizer, name="embedding"
    )(inputs)
    return inputs, x


def head(x, num_classes: int, dropout_rate: float, width: int, regularizer, name: str) -> keras.Model:
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate)(x)
    x = keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer, name="dense")(x)
    return keras.layers.Dense(num_classes, name="logits")(x)


@register("text_lstm", kinds=("text",), search=True, text_input="sequence", cost=4)
def build_text_lstm(
    input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False, layout=None, width=32, embedding=64
):
    """The textbook's IMDB model: an embedding, then a bidirectional LSTM of `width` units each way."""
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs, x = embedded(input_shape, layout, embedding, regularizer)
    x = keras.layers.Bidirectional(keras.layers.LSTM(width), name="lstm")(x)
    return keras.Model(inputs, head(x, num_classes, dropout_rate, width, regularizer, "text_lstm"), name="text_lstm")


@register("text_cnn", kinds=("text",), search=True, text_input="sequence", cost=2)
def build_text_cnn(
    input_shape, num_classes, dropout_rate=0.0, weight_decay=0.0, batch_norm=False, layout=None, width=64, embedding=64
):
    """A 1-D convolution over 5-token windows, max-pooled over the document (Kim 2014's idea, one width)."""
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs, x = embedded(input_shape, layout, embedding, regularizer)
    x = keras.layers.Conv1D(width, 5, activation="relu", kernel_regularizer=regularizer, name="conv")(x)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    return keras.Model(inputs, head(x, num_classes, dropout_rate, width, regularizer, "text_cnn"), name="text_cnn")


# No GRU: TFLite has no fused GRU op, and its int8 calibration of the converted loop crashed the process (a
# segmentation fault in the calibrator, TensorFlow 2.21): a model the export cannot quantize is not offered.
