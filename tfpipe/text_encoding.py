"""What a text model's preprocessing computes, in numpy, for the TFLite models (a TFLite model holds no
TextVectorization): token ids padded or cut to the sequence length, or the TF-IDF vector of words and word pairs,
from the vocabulary the export ships beside them (vocabulary.json: the preprocess stage's statistics). A test holds
it equal to the Keras preprocessing model (models/text_preprocessing.py). Reads and writes nothing.
"""

from __future__ import annotations

import numpy as np

from tfpipe.texts import clean, tokens

PADDING, OUT_OF_VOCABULARY = 0, 1  # TextVectorization's int ids: 0 pads, 1 is a token the vocabulary lacks


def token_ids(texts: list[str], statistics: dict) -> np.ndarray:
    """int32 [N, length]: the ids of each text's tokens (2.. in vocabulary order), padded with 0 or cut at the end."""
    sequence = statistics["sequence"]
    index = {token: position + 2 for position, token in enumerate(sequence["vocabulary"])}
    length = int(sequence["length"])
    ids = np.zeros((len(texts), length), np.int32)
    for row, text in enumerate(texts):
        values = [index.get(token, OUT_OF_VOCABULARY) for token in tokens(clean(text, statistics["strip_markup"]))]
        ids[row, : min(length, len(values))] = values[:length]
    return ids


def ngrams(words: list[str], order: int) -> list[str]:
    """Every run of 1..order words, joined by a space (TextVectorization's ngrams)."""
    return [
        " ".join(words[start : start + size]) for size in range(1, order + 1) for start in range(len(words) - size + 1)
    ]


def tf_idf(texts: list[str], statistics: dict) -> np.ndarray:
    """float32 [N, vocabulary + 1]: each n-gram's count times its idf; slot 0 sums the n-grams the vocabulary lacks,
    weighted by the mean idf (TextVectorization's own rule when given idf weights); of unit length with
    `normalize: l2` (Keras' UnitNormalization: x / sqrt(max(sum(x^2), 1e-12)))."""
    bag = statistics["bag"]
    index = {gram: position + 1 for position, gram in enumerate(bag["vocabulary"])}
    idf = np.concatenate([[np.mean(bag["idf"])], np.asarray(bag["idf"], np.float64)]).astype(np.float32)
    vectors = np.zeros((len(texts), len(index) + 1), np.float32)
    for row, text in enumerate(texts):
        for gram in ngrams(tokens(clean(text, statistics["strip_markup"])), bag["ngrams"]):
            vectors[row, index.get(gram, 0)] += 1.0
    vectors *= idf
    if bag.get("normalize") == "l2":
        vectors /= np.sqrt(np.maximum(np.sum(np.square(vectors), axis=1, keepdims=True), 1e-12))
    return vectors


ENCODERS = {"sequence": token_ids, "bag": tf_idf}
