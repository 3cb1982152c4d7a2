"""The table kind's training: the rows of data/prepared as tf.data pipelines of named columns, the preprocessing
model of artifacts/preprocess/statistics.json (models/table_preprocessing.py), a table model from the registry on
its feature vector, and a head: softmax probabilities for a classification, the target in its own units for a
regression (models/table_layers.TargetTransform). A regression trains on the standardized target (its log for a
positive, right-skewed one: train.target_transform) with train.regression_loss, and reports MAE and RMSE in the
target's units. Reads data/prepared and artifacts/preprocess, writes nothing itself.
"""

from __future__ import annotations

import dataclasses
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
from models.table_layers import TargetTransform, head_standardization, regression_loss
from models.table_preprocessing import INPUT_DTYPES, build_table_preprocessor
from tfpipe import paths
from tfpipe.config import PARAMS_FILE, AugmentationParams, ParamsError, TrainParams
from tfpipe.table_encoding import read_prepared_split

HEAVY_TAIL = 3.0  # excess kurtosis above which regression_loss: auto is huber
SKEWED = 0.25  # a positive target right-skewed beyond this is learned as its log when the log is more symmetric
BATCH_RANGE = (32, 512)  # train.batch_size: auto for rows: a batch of 16 rows gives too noisy a gradient


def resolve(params: TrainParams, manifest: dict) -> TrainParams:
    """The schedule's auto values as for images (sized by the train rows, with a batch of 32 to 512 rows), no
    augmentation (a table has none), and for a regression its loss and target transform from the train split's
    target statistics (auto: huber for heavy tails, else mse; the log of a positive, right-skewed target when its log
    is more symmetric than its values)."""
    rows = manifest["splits"]["train"]["count"]
    if params.batch_size == "auto":
        batch = 2 ** round(math.log2(math.sqrt(max(1, rows))))
        params = dataclasses.replace(params, batch_size=int(min(max(batch, BATCH_RANGE[0]), BATCH_RANGE[1])))
    params = resolve_train_schedule(params, rows)
    params = dataclasses.replace(params, augmentation=AugmentationParams())
    if manifest["task"] != "regression":
        return params
    target = read_statistics()["target_statistics"]
    loss = params.regression_loss
    if loss == "auto":
        loss = "huber" if target["excess_kurtosis"] > HEAVY_TAIL else "mse"
    transform = params.target_transform
    if transform == "auto":
        symmetric = abs(target.get("log_skewness", math.inf)) < abs(target["skewness"])
        transform = "log" if target["min"] > 0 and target["skewness"] > SKEWED and symmetric else "none"
    if transform == "log" and target["min"] <= 0:
        raise ParamsError(
            f"{PARAMS_FILE}: train.target_transform: log needs a positive target; its train minimum is {target['min']}"
        )
    return dataclasses.replace(params, regression_loss=loss, target_transform=transform)


def check(params: TrainParams, candidates: list[str]) -> None:
    check_candidates(params, candidates, "table")


def objective(params: TrainParams, manifest: dict) -> Objective:
    if manifest["task"] == "classification":
        return classification_objective(params)
    mean, std, log = head_standardization(read_statistics()["target_statistics"], params.target_transform)
    return Objective(
        regression_loss(params.regression_loss, mean, std, log),
        (keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")),
        monitor="val_mae",
        higher_is_better=False,
    )


def split_arrays(manifest: dict, statistics: dict, split: str) -> tuple[dict, np.ndarray, pd.DataFrame]:
    """(the model's inputs, the targets: int32 class ids or float32 values, the split's rows as stored)."""
    frame, inputs, targets = read_prepared_split(paths.PREPARED, manifest, statistics, split)
    return inputs, targets.astype(np.int32 if manifest["task"] == "classification" else np.float32), frame


def prepare_data(params: TrainParams, manifest: dict, plan, cache: str) -> TrainingData:
    statistics = read_statistics()
    inputs, labels, _ = split_arrays(manifest, statistics, "train")
    train_rows = tf.data.Dataset.from_tensor_slices((inputs, labels))
    # The rows are in memory: shuffled whole, whatever train.shuffle_buffer says (a file sorted by class, as
    # folders of classes and many tables are, would otherwise give batches of one class).
    shuffle = max(1, len(labels))

    def train(epochs: range) -> tf.data.Dataset:
        batch = params.batch_size
        return build_input_pipeline(train_rows, batch, True, shuffle, params.seed, cache=cache, epochs=epochs)

    val = None
    if manifest["splits"]["val"]["count"]:
        val_inputs, val_labels, _ = split_arrays(manifest, statistics, "val")
        val_rows = tf.data.Dataset.from_tensor_slices((val_inputs, val_labels))
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
    """(the training model: named columns -> preprocessing -> the registry's model -> head, its preprocessing
    model), built under the strategy in the plan's precision."""
    statistics = read_statistics()
    with strategy.scope():
        preprocessor = build_table_preprocessor(statistics)
        hardware.apply_precision(plan)
        classification = manifest["task"] == "classification"
        outputs = len(manifest["class_names"]) if classification else 1
        l2 = 0.0 if params.optimizer == "adamw" else params.weight_decay
        core = registry.get_builder(params.model)(
            input_shape=(statistics["output_size"],),
            num_classes=outputs,
            dropout_rate=params.dropout_rate,
            weight_decay=l2,
            batch_norm=params.batch_norm,
            layout=statistics["layout"],
            **options_for(params.model, params.model_options),
        )
        inputs = {
            item["input"]: keras.Input(shape=(1,), dtype=INPUT_DTYPES[item["type"]], name=item["input"])
            for item in statistics["inputs"]
        }
        logits = core(preprocessor(inputs))
        if classification:
            head = keras.layers.Activation("softmax", dtype="float32", name="probabilities")
        else:
            standardization = head_standardization(statistics["target_statistics"], params.target_transform)
            head = TargetTransform(*standardization, name="prediction")
        model = keras.Model(inputs, head(logits), name="trained_model")
    return model, preprocessor


def float32_copy(trained: keras.Model, preprocessor: keras.Model, params: TrainParams, manifest: dict) -> keras.Model:
    return in_memory.float32_copy(build_model, trained, params, manifest)


def deployable(trained: keras.Model, preprocessor: keras.Model) -> keras.Model:
    """The model train saves: the trained one (its preprocessing is inside it)."""
    return trained


resolve_cache = in_memory.resolve_cache


def resolved_params(params: TrainParams, preprocessor: keras.Model) -> dict:
    resolved = {"features": int(preprocessor.output_shape[-1])}
    if params.regression_loss != "auto":
        resolved["train.regression_loss"] = params.regression_loss
        resolved["train.target_transform"] = params.target_transform
    return resolved


def log_examples(params: TrainParams, log_dir: Path, count: int) -> None:
    """Nothing to show: a table's rows are in the run's dataset (mlflow.data)."""


def dataset_file(manifest: dict) -> tuple[Path, str]:
    return paths.PREPARED / manifest["splits"]["train"]["file"], manifest["target"]


def description(manifest: dict, params: TrainParams) -> dict:
    """What evaluate, export and predict need beside the model: the task, the target and the preprocessing
    statistics (the export ships them beside the TFLite models as encoding.json)."""
    return {"task": manifest["task"], "target": manifest["target"], "table": read_statistics()}
