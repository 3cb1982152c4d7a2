"""The image kind's training: the schedule sized by the train split, a classifier's objective, the TFRecord input
pipelines with augmentation (components/train/fit.py, data.py), the preprocessing model with the registry's
classifier (components/train/model.py) and an augmented batch in TensorBoard. Reads data/prepared and
artifacts/preprocess, writes nothing itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tf_keras as keras

from components.train import fit, model, resume
from components.train.run_log import log_augmented_batch
from components.train.schedule import (
    Objective,
    check_candidates,
    check_model_params,
    classification_objective,
    resolve_train_schedule,
)
from tfpipe import paths
from tfpipe.config import TrainParams


def resolve(params: TrainParams, manifest: dict) -> TrainParams:
    return resolve_train_schedule(params, manifest["splits"]["train"]["count"])


def check(params: TrainParams, candidates: list[str]) -> None:
    for name in candidates:
        check_model_params(dataclasses.replace(params, model=name))
    check_candidates(params, candidates, "image")


def objective(params: TrainParams, manifest: dict) -> Objective:
    return classification_objective(params)


def prepare_data(params: TrainParams, manifest: dict, plan, cache: str) -> fit.TrainingData:
    return dataclasses.replace(fit.prepare_data(params, manifest, plan, cache), objective=objective(params, manifest))


def build_model(params: TrainParams, plan, strategy, manifest: dict) -> tuple[keras.Model, keras.Model]:
    return model.build_model(params, plan, strategy, len(manifest["class_names"]))


def float32_copy(trained: keras.Model, preprocessor: keras.Model, params: TrainParams, manifest: dict) -> keras.Model:
    return model.float32_copy(
        trained, preprocessor, params, preprocessor.output_shape[1:], len(manifest["class_names"])
    )


def deployable(trained: keras.Model, preprocessor: keras.Model) -> keras.Model:
    """The model train saves: the trained one (its preprocessing is inside it)."""
    return trained


def resolve_cache(cache: str, manifest: dict) -> str:
    return resume.resolve_cache(cache, manifest)


def resolved_params(params: TrainParams, preprocessor: keras.Model) -> dict:
    height, width = preprocessor.output_shape[1:3]
    return {"preprocess.image_height": height, "preprocess.image_width": width}


def log_examples(params: TrainParams, log_dir: Path, count: int) -> None:
    """One augmented batch in TensorBoard, from an augmenter of its own (same settings and seed): logging cannot
    change what the model was trained on."""
    log_augmented_batch(fit.train_split(params, "none", range(1)), log_dir, count)


def dataset_file(manifest: dict) -> tuple[Path, str]:
    return paths.PREPARED / "examples.csv", "label"


def description(manifest: dict, params: TrainParams) -> dict:
    return {"image_shape": manifest["image_shape"]}
