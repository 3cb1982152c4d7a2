"""Fitting: the prepared splits as tf.data pipelines (a seeded shuffle per epoch, augmentation on train), and the fit
of each phase with backup and restore, TensorBoard, MLflow and resumable early stopping; reads data/prepared, writes
the backups under .cache/train-backup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components.train import hardware
from components.train.data import build_augmenter, build_input_pipeline
from components.train.resume import (
    ResumableEarlyStopping,
    early_stopping_options,
    verify_backup,
)
from components.train.schedule import (
    Objective,
    Phase,
    compile_model,
    plan_phases,
)
from models import applications
from tfpipe import paths, records, run_records, tracking
from tfpipe.config import TrainParams


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: a failure, never a model."""


def fit_model(
    model,
    train_data,
    val_data,
    params: TrainParams,
    callbacks,
    phase: Phase | None = None,
    steps_per_epoch: int | None = None,
    early_stopping: keras.callbacks.EarlyStopping | None = None,
) -> keras.callbacks.History:
    """Fits a compiled model; raises TrainingDiverged if the loss became NaN (Keras itself exits quietly).

    With steps_per_epoch, train_data holds every remaining epoch one after the other (each shuffled
    with its own seed: build_input_pipeline's `epochs`), so a resumed run sees the same batches.
    """
    phase = phase or plan_phases(params)[0]
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        *callbacks,
        early_stopping or keras.callbacks.EarlyStopping(**early_stopping_options(params, val_data is not None)),
    ]
    history = model.fit(
        train_data,
        validation_data=val_data,
        initial_epoch=phase.initial_epoch,
        epochs=phase.end_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=2,
    )
    losses = np.asarray(history.history.get("loss", []), dtype=np.float64)
    if len(losses) == 0 or not np.all(np.isfinite(losses)):
        raise TrainingDiverged(
            f"training diverged: loss per epoch {losses.tolist()}; lower train.learning_rate or check the input data"
        )
    return history


def history_frame(history: keras.callbacks.History, phase: str) -> pd.DataFrame:
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.asarray(history.epoch) + 1)  # a resumed run starts past epoch 1
    frame.insert(1, "phase", phase)
    return frame


def distribute_options(plan: hardware.HardwarePlan) -> tf.data.Options | None:
    """Multi-worker: each worker reads every shard and keeps its share of the batches (the default FILE
    sharding fails when a split has fewer shards than there are workers)."""
    if plan.strategy_name != "multi_worker":
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


@dataclass(frozen=True)
class TrainingData:
    """The prepared splits as the fit needs them. `train(epochs)` is the train split for those epochs, each
    shuffled by its own seed (a resumed run sees the same batches)."""

    train: Callable[[range], tf.data.Dataset]
    val: tf.data.Dataset | None
    steps_per_epoch: int
    class_names: list[str]  # empty for a regression
    image_shape: list[int] | None  # images: [H, W, C] as stored; other kinds: None
    objective: Objective | None = None  # the loss, metrics and monitored metric; None: a classifier's


def train_split(params: TrainParams, cache: str, epochs: range, augmenter=None) -> tf.data.Dataset:
    """The train split's batches for these epochs: shuffled per epoch by its seed, augmented (a new augmenter
    with the params' settings and seed unless one is given)."""
    return build_input_pipeline(
        records.read_split(paths.PREPARED, "train"),
        params.batch_size,
        True,
        params.shuffle_buffer,
        params.seed,
        build_augmenter(params.augmentation, params.seed) if augmenter is None else augmenter,
        cache,
        epochs=epochs,
    )


def prepare_data(params: TrainParams, manifest: dict, plan: hardware.HardwarePlan, cache: str) -> TrainingData:
    """tf.data pipelines of the train and val splits (batch size global: split across replicas)."""
    augmenter = build_augmenter(params.augmentation, params.seed)
    options = distribute_options(plan)

    def train(epochs: range) -> tf.data.Dataset:
        dataset = train_split(params, cache, epochs, augmenter)
        return dataset if options is None else dataset.with_options(options)

    val = None
    if manifest["splits"].get("val", {}).get("count", 0) > 0:
        # The val split is cached like train (a file prefix: in memory, val being the smaller split).
        val_cache = "none" if cache == "none" else "memory"
        val = build_input_pipeline(records.read_split(paths.PREPARED, "val"), params.batch_size, False, cache=val_cache)
        val = val if options is None else val.with_options(options)
    return TrainingData(
        train,
        val,
        -(-manifest["splits"]["train"]["count"] // params.batch_size),
        manifest["class_names"],
        manifest["image_shape"],
    )


def fit_phases(
    model: keras.Model,
    data: TrainingData,
    params: TrainParams,
    phases: list[Phase],
    *,
    plan: hardware.HardwarePlan,
    strategy,
    key: str,
    log_dir: Path,
    histogram_freq: int,
    run: tracking.BackgroundRun | None,
) -> list[keras.callbacks.History]:
    """Fits each phase with backup and restore (a killed run resumes), TensorBoard, MLflow (run given: the chief)
    and resumable early stopping (which keeps the best weights), all keyed on `key`."""
    backup_root = paths.CACHE / "train-backup" / key
    histories = []
    for phase in phases:
        # Each phase has its own backup: a run killed in the fine-tune redoes the (deterministic)
        # head phase, then the fine-tune's backup restores its weights, optimizer and epoch.
        backup_dir = backup_root if len(phases) == 1 else backup_root / phase.name
        resume_epoch = verify_backup(backup_dir)
        first_epoch = phase.initial_epoch
        if resume_epoch is not None:
            first_epoch = max(first_epoch, resume_epoch)
            print(f"resuming from the backup in {backup_dir}: epoch {resume_epoch + 1} onwards")
            if run is not None:
                run.set_tags({"resumed_from_epoch": resume_epoch + 1})
        with strategy.scope():
            if phase.name != "train":
                applications.freeze_backbone(model.get_layer(params.model), phase.trainable_top_layers)
            compile_model(model, params, data.steps_per_epoch, plan.jit_compile, phase, data.objective)
        callbacks = [
            # Restores model, optimizer and epoch after a killed run. It comes before the loggers, so an
            # epoch that MLflow shows as done is always an epoch a rerun resumes after.
            keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
            keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=histogram_freq, profile_batch=0),
            *([run_records.mlflow_epoch_callback(run)] if run is not None else []),
        ]
        early_stopping = ResumableEarlyStopping(
            backup_dir / "early_stopping",
            resume_epoch,
            write=run is not None,
            **early_stopping_options(params, data.val is not None),
        )
        print(f"phase {phase.name}: epochs {phase.initial_epoch + 1}-{phase.end_epoch}")
        epochs = range(first_epoch, max(first_epoch + 1, phase.end_epoch))
        histories.append(
            fit_model(
                model, data.train(epochs), data.val, params, callbacks, phase, data.steps_per_epoch, early_stopping
            )
        )
    return histories
