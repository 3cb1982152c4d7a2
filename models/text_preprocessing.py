"""The preprocessing model every text model starts with: raw strings in, what the model reads out. Markup stripped
(when the schema says so), then Keras' TextVectorization with the vocabulary the preprocess stage adapted on the
train split (components/preprocess/kinds/text.py): token ids in order, padded or cut to the sequence length (the
sequence models), or a TF-IDF vector of words and word pairs (the bag-of-n-grams model). Train builds it into the
trained model and export serves it inside the SavedModel, which so takes raw strings. A TFLite model takes what it
outputs, and the vocabulary ships beside it (tfpipe/text_encoding.py computes the same in numpy).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tfpipe.texts import MARKUP

STANDARDIZE = "lower_and_strip_punctuation"  # tfpipe/texts.tokens is its numpy twin


@keras.utils.register_keras_serializable(package="tfpipe")
class StripMarkup(keras.layers.Layer):
    """Tags such as <br /> become a space (tfpipe/texts.MARKUP), as the reader strips them at ingest."""

    def call(self, inputs):
        return tf.strings.regex_replace(inputs, MARKUP.pattern, " ")


def build_text_preprocessor(statistics: dict, text_input: str) -> keras.Model:
    """[N] strings -> [N, length] int ids ("sequence") or [N, size] float TF-IDF ("bag", of unit length when the
    statistics say `normalize: l2`)."""
    inputs = keras.Input(shape=(), dtype="string", name="text")
    text = StripMarkup(name="strip_markup")(inputs) if statistics["strip_markup"] else inputs
    if text_input == "sequence":
        sequence = statistics["sequence"]
        vectorizer = keras.layers.TextVectorization(
            standardize=STANDARDIZE,
            output_mode="int",
            output_sequence_length=sequence["length"],
            vocabulary=sequence["vocabulary"],
            name="vectorize",
        )
    else:
        bag = statistics["bag"]
        vectorizer = keras.layers.TextVectorization(
            standardize=STANDARDIZE,
            output_mode="tf_idf",
            ngrams=bag["ngrams"],
            vocabulary=bag["vocabulary"],
            idf_weights=bag["idf"],
            name="vectorize",
        )
    outputs = vectorizer(text)
    if text_input == "bag" and statistics["bag"].get("normalize") == "l2":
        # unit length, as a TF-IDF vector is for a linear model: a long review weighs as much as a short one, and the
        # int8 input keeps its resolution (the out-of-vocabulary slot of a long document reached 11,000 before)
        outputs = keras.layers.UnitNormalization(name="l2")(outputs)
    return keras.Model(inputs, outputs, name="preprocessing")


def input_size(statistics: dict, text_input: str) -> int:
    """The width of what the preprocessing model outputs: a sequence's length, or the bag's vocabulary plus its
    out-of-vocabulary slot."""
    if text_input == "sequence":
        return int(statistics["sequence"]["length"])
    return len(statistics["bag"]["vocabulary"]) + 1
