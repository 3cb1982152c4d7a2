"""The text kind's preprocess: reads data/prepared/train.parquet, writes artifacts/preprocess/statistics.json.

From the train split only: the vocabulary of tokens (those seen twice or more, the most frequent first, at most
preprocess.vocabulary_size: auto is 20,000) with the sequence length (preprocess.sequence_length, auto: the 90th
percentile of the documents' token counts, 32..256) that the sequence models read; and the vocabulary of words and
word pairs with their inverse document frequencies (log(1 + documents / (1 + documents holding it)), Keras' own
formula) that the bag-of-n-grams model reads, as a vector of unit length. models/text_preprocessing.py builds
TextVectorization from them; the statistics are JSON, so the same analysis gives the same bytes.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from models.text_preprocessing import build_text_preprocessor
from tfpipe import paths
from tfpipe.config import Params
from tfpipe.outputs import atomic_directory, write_json
from tfpipe.text_encoding import ngrams
from tfpipe.texts import tokens

VOCABULARY = 20_000  # preprocess.vocabulary_size: auto's ceiling
# auto: the 90th percentile, within these (a recurrent step a token: 256 keeps an LSTM epoch of IMDB about a
# minute on 2 cores, where the 90th percentile, 452, took two)
LENGTH_RANGE = (32, 256)
NGRAMS = 2
MIN_COUNT = 2  # a token seen once in train teaches nothing the out-of-vocabulary slot does not


def top(counts: Counter, size: int) -> list[str]:
    kept = [(token, count) for token, count in counts.items() if count >= MIN_COUNT]
    return [token for token, _ in sorted(kept, key=lambda item: (-item[1], item[0]))[:size]]


def analyze(texts: list[str], params: Params, strip_markup: bool) -> dict:
    documents = [tokens(text) for text in texts]
    size = VOCABULARY if params.preprocess.vocabulary_size == "auto" else params.preprocess.vocabulary_size
    words = Counter(token for document in documents for token in document)
    vocabulary = top(words, size)
    lengths = np.array([len(document) for document in documents])
    length = params.preprocess.sequence_length
    if length == "auto":
        length = int(min(max(np.percentile(lengths, 90), LENGTH_RANGE[0]), LENGTH_RANGE[1]))
    grams = Counter(gram for document in documents for gram in ngrams(document, NGRAMS))
    frequency = Counter(gram for document in documents for gram in set(ngrams(document, NGRAMS)))
    bag = top(grams, size)
    idf = [math.log(1 + len(documents) / (1 + frequency[gram])) for gram in bag]
    return {
        "kind": "text",
        "strip_markup": strip_markup,
        "sequence": {"vocabulary": vocabulary, "length": length, "tokens_seen": len(words)},
        "bag": {"vocabulary": bag, "idf": idf, "ngrams": NGRAMS, "normalize": "l2"},
        "documents": len(texts),
        "requested": {
            "vocabulary_size": params.preprocess.vocabulary_size,
            "sequence_length": params.preprocess.sequence_length,
        },
    }


def preprocess(params: Params, manifest: dict) -> None:
    train = pd.read_parquet(paths.PREPARED / manifest["splits"]["train"]["file"])
    if not len(train):
        raise SystemExit("preprocess failed: the train split is empty: nothing to build a vocabulary from")
    statistics = analyze(train["text"].tolist(), params, manifest["strip_markup"])
    statistics["class_names"] = manifest["class_names"]
    for text_input in ("sequence", "bag"):  # built once here: a statistics file they cannot build fails now
        build_text_preprocessor(statistics, text_input)
    with atomic_directory(paths.PREPROCESS) as staging:
        write_json(staging / "statistics.json", statistics)
    print(
        f"{paths.PREPROCESS}: a vocabulary of {len(statistics['sequence']['vocabulary']):,} tokens (of "
        f"{statistics['sequence']['tokens_seen']:,} seen), sequences of {statistics['sequence']['length']} tokens, "
        f"{len(statistics['bag']['vocabulary']):,} words and word pairs with their idf, from {len(train):,} "
        "train documents"
    )
