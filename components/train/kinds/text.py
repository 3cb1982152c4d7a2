"""The text kind's training: the documents of data/prepared as tf.data pipelines of strings, the preprocessing model of
artifacts/preprocess/statistics.json (models/text_preprocessing.py: markup stripped, TextVectorization), a text model
from the registry on what it outputs (token ids for the sequence models, a TF-IDF vector for the bag-of-n-grams
one: each model says which, models/registry.py's text_input), and a softmax. The trained model takes raw strings.
Reads data/prepared and artifacts/preprocess, writes nothing itself.
"""

from __future__ import annotations

import dataclasses
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
from components.train.schedule import (
    Objective,
    check_model_options,
    classification_objective,
    options_for,
    resolve_train_schedule,
)
from models import registry
from models.text_preprocessing import build_text_preprocessor, input_size
from tfpipe import paths
from tfpipe.config import PARAMS_FILE, AugmentationParams, ParamsError, TrainParams

STATISTICS_FILE = paths.PREPROCESS / "statistics.json"


def read_statistics() -> dict:
    if not STATISTICS_FILE.is_file():
        raise FileNotFoundError(f"{STATISTICS_FILE}: not found; run the preprocess stage first (dvc repro preprocess)")
    return json.loads(STATISTICS_FILE.read_text())


def resolve(params: TrainParams, manifest: dict) -> TrainParams:
    """The schedule's auto values as for images (sized by the train documents); no augmentation."""
    params = resolve_train_schedule(params, manifest["splits"]["train"]["count"])
    return dataclasses.replace(params, augmentation=AugmentationParams())


def check(params: TrainParams, candidates: list[str]) -> None:
    for name in candidates:
        try:
            registry.check_kind(name, "text")
        except ValueError as error:
            raise ParamsError(f"{PARAMS_FILE}: train.model: {error}") from None
    check_model_options(candidates, params.model_options)


def objective(params: TrainParams, manifest: dict) -> Objective:
    return classification_objective(params)


def split_arrays(manifest: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_parquet(paths.PREPARED / manifest["splits"][split]["file"])
    return frame["text"].to_numpy(dtype=object), frame["label"].to_numpy(dtype=np.int32)


def prepare_data(params: TrainParams, manifest: dict, plan, cache: str) -> TrainingData:
    texts, labels = split_arrays(manifest, "train")
    train_rows = tf.data.Dataset.from_tensor_slices((texts, labels))
    shuffle = min(params.shuffle_buffer, max(1, len(labels)))

    def train(epochs: range) -> tf.data.Dataset:
        batch = params.batch_size
        return build_input_pipeline(train_rows, batch, True, shuffle, params.seed, cache=cache, epochs=epochs)

    val = None
    if manifest["splits"]["val"]["count"]:
        val_rows = tf.data.Dataset.from_tensor_slices(split_arrays(manifest, "val"))
        val = build_input_pipeline(val_rows, params.batch_size, False, cache=cache)
    return TrainingData(
        train,
        val,
        math.ceil(len(labels) / params.batch_size),
        manifest["class_names"],
        None,
        objective(params, manifest),
    )


def build_model(params: TrainParams, plan, strategy, manifest: dict) -> tuple[keras.Model, keras.Model]:
    """(the training model: strings -> preprocessing -> the registry's model -> softmax, its preprocessing model)."""
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
        inputs = keras.Input(shape=(), dtype="string", name="text")
        features = preprocessor(inputs)  # a sequence model's int32 input casts TextVectorization's int64 ids
        outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(core(features))
        model = keras.Model(inputs, outputs, name="trained_model")
    return model, preprocessor


def float32_copy(trained: keras.Model, preprocessor: keras.Model, params: TrainParams, manifest: dict) -> keras.Model:
    float32 = hardware.HardwarePlan("float32", False, "default", "CPU")
    copy, _ = build_model(params, float32, tf.distribute.get_strategy(), manifest)
    copy.set_weights(trained.get_weights())
    return copy


def resolve_cache(cache: str, manifest: dict) -> str:
    """The documents are in memory already (numpy arrays of strings): tf.data keeps them there."""
    return cache if cache not in ("auto", "none", "memory") else "memory"


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
