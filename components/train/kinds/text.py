"""The text kind's training: the documents of data/prepared, vectorized once by the preprocessing model of
artifacts/preprocess/statistics.json (models/text_preprocessing.py: markup stripped, TextVectorization) into what a
text model from the registry reads (token ids for the sequence models, a TF-IDF vector for the bag-of-n-grams one:
each model says which, models/registry.py's text_input); the model and a softmax train on those vectors, and the
model saved (`deployable`) is the preprocessing model followed by them: it takes raw strings. Vectorizing once, not
in every step, is what makes an epoch of IMDB seconds rather than minutes on a CPU (the same vectors: the same
layer, run once). Reads data/prepared and artifacts/preprocess, writes nothing itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components.train import hardware
from components.train.data import build_input_pipeline
from components.train.fit import TrainingData
from components.train.kinds import in_memory
from components.train.kinds.in_memory import read_statistics
from components.train.schedule import (
    Objective,
    check_candidates,
    classification_objective,
    options_for,
    resolve_train_schedule,
)
from models import registry
from models.text_preprocessing import build_text_preprocessor, input_size
from tfpipe import paths
from tfpipe.config import AugmentationParams, TrainParams


def resolve(params: TrainParams, manifest: dict) -> TrainParams:
    """The schedule's auto values as for images (sized by the train documents); no augmentation."""
    params = resolve_train_schedule(params, manifest["splits"]["train"]["count"])
    return dataclasses.replace(params, augmentation=AugmentationParams())


def check(params: TrainParams, candidates: list[str]) -> None:
    check_candidates(params, candidates, "text")


def objective(params: TrainParams, manifest: dict) -> Objective:
    return classification_objective(params)


VECTORIZE_BATCH = 512  # documents a call: a bag's dense TF-IDF batch is 512 x (vocabulary + 1) floats (~40 MB)


def vectorized(file: str, text_input: str) -> tuple[tf.Tensor | tf.SparseTensor, np.ndarray]:
    """A split's documents as the model reads them, computed once a process for the same split file, statistics
    and text_input (a search's candidates of one text_input share them): int32 token ids [N, length], or the
    TF-IDF vectors [N, width] as a SparseTensor (a document holds a few hundred of the 20,000 words and pairs); and
    the labels."""
    split = (paths.PREPARED / file).resolve()
    statistics = in_memory.STATISTICS_FILE.resolve()
    versions = tuple((path.stat().st_mtime_ns, path.stat().st_size) for path in (split, statistics))
    return _vectorized(split, statistics, versions, text_input)


@functools.lru_cache(maxsize=4)  # train and val of one text_input, and of another during a search
def _vectorized(
    split: Path, statistics_file: Path, versions: tuple, text_input: str
) -> tuple[tf.Tensor | tf.SparseTensor, np.ndarray]:
    frame = pd.read_parquet(split)
    texts, labels = frame["text"].to_numpy(dtype=object), frame["label"].to_numpy(dtype=np.int32)
    statistics = json.loads(statistics_file.read_text())
    preprocessor = build_text_preprocessor(statistics, text_input)
    apply = tf.function(
        lambda batch: preprocessor(batch, training=False), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    batches = [  # one call on an empty split too: its [0, width] shape
        apply(tf.constant(texts[start : start + VECTORIZE_BATCH], dtype=tf.string))
        for start in range(0, max(1, len(texts)), VECTORIZE_BATCH)
    ]
    if text_input == "sequence":
        return tf.cast(tf.concat(batches, axis=0), tf.int32), labels
    return tf.sparse.concat(0, [tf.sparse.from_dense(batch) for batch in batches]), labels


def densify(features, labels):
    """A batch of sparse TF-IDF rows as the dense vector the model (and the preprocessing model) gives it."""
    return (tf.sparse.to_dense(features) if isinstance(features, tf.SparseTensor) else features), labels


def vector_pipeline(rows: tf.data.Dataset, *args, **kwargs) -> tf.data.Dataset:
    return build_input_pipeline(rows, *args, **kwargs).map(densify, num_parallel_calls=tf.data.AUTOTUNE)


def prepare_data(params: TrainParams, manifest: dict, plan, cache: str) -> TrainingData:
    text_input = registry.get_builder(params.model).text_input
    features, labels = vectorized(manifest["splits"]["train"]["file"], text_input)
    train_rows = tf.data.Dataset.from_tensor_slices((features, labels))
    # The documents are in memory: shuffled whole, whatever train.shuffle_buffer says (a file sorted by class, as
    # folders of classes and many tables are, would otherwise give batches of one class).
    shuffle = max(1, len(labels))

    def train(epochs: range) -> tf.data.Dataset:
        batch = params.batch_size
        return vector_pipeline(train_rows, batch, True, shuffle, params.seed, cache=cache, epochs=epochs)

    val = None
    if manifest["splits"]["val"]["count"]:
        val_rows = tf.data.Dataset.from_tensor_slices(vectorized(manifest["splits"]["val"]["file"], text_input))
        val = vector_pipeline(val_rows, params.batch_size, False, cache=cache)
    return TrainingData(
        train,
        val,
        math.ceil(len(labels) / params.batch_size),
        manifest["class_names"],
        None,
        objective(params, manifest),
    )


def build_model(params: TrainParams, plan, strategy, manifest: dict) -> tuple[keras.Model, keras.Model]:
    """(the training model: vectors -> the registry's model -> softmax, the preprocessing model: strings -> those
    vectors). `deployable` joins them."""
    statistics = read_statistics()
    builder = registry.get_builder(params.model)
    with strategy.scope():
        preprocessor = build_text_preprocessor(statistics, builder.text_input)
        hardware.apply_precision(plan)
        l2 = 0.0 if params.optimizer == "adamw" else params.weight_decay
        core = builder(
            input_shape=(input_size(statistics, builder.text_input),),
            num_classes=len(manifest["class_names"]),
            dropout_rate=params.dropout_rate,
            weight_decay=l2,
            batch_norm=params.batch_norm,
            layout={"vocabulary_size": len(statistics["sequence"]["vocabulary"]) + 2},
            **options_for(params.model, params.model_options),
        )
        inputs = keras.Input(shape=core.input_shape[1:], dtype=core.inputs[0].dtype, name="features")
        outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(core(inputs))
        model = keras.Model(inputs, outputs, name="vector_model")  # layers: the input, the core, the softmax
    return model, preprocessor


def deployable(trained: keras.Model, preprocessor: keras.Model) -> keras.Model:
    """The model train saves: strings -> the preprocessing model -> the trained model (a sequence model's int32
    input casts TextVectorization's int64 ids)."""
    core, head = trained.layers[1], trained.layers[-1]  # the registry's model, the softmax: their layers, shared
    inputs = keras.Input(shape=(), dtype="string", name="text")
    return keras.Model(inputs, head(core(preprocessor(inputs))), name="trained_model")


def float32_copy(trained: keras.Model, preprocessor: keras.Model, params: TrainParams, manifest: dict) -> keras.Model:
    return in_memory.float32_copy(build_model, trained, params, manifest)


resolve_cache = in_memory.resolve_cache


def resolved_params(params: TrainParams, preprocessor: keras.Model) -> dict:
    statistics = read_statistics()
    return {
        "preprocess.vocabulary_size": len(statistics["sequence"]["vocabulary"]),
        "preprocess.sequence_length": statistics["sequence"]["length"],
        "text_input": registry.get_builder(params.model).text_input,
    }


def log_examples(params: TrainParams, log_dir: Path, count: int) -> None:
    """Nothing to show: the documents are in the run's dataset (mlflow.data)."""


def dataset_file(manifest: dict) -> tuple[Path, str]:
    return paths.PREPARED / manifest["splits"]["train"]["file"], "label"


def description(manifest: dict, params: TrainParams) -> dict:
    """What evaluate, export and predict need beside the model: the preprocessing statistics (the vocabularies
    the export ships beside the TFLite models)."""
    return {
        "task": "classification",
        "text": read_statistics(),
        "text_input": registry.get_builder(params.model).text_input,  # what the model reads: sequence or bag
    }
