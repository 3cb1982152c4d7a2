"""Train stage: reads data/prepared and artifacts/preprocess, writes artifacts/train/ and an MLflow run.

The trained model takes raw pixels (float32, 0..255) and contains the preprocessing model, the
classifier from the models/ registry, and a float32 softmax: export wraps it for uint8 serving.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from models import registry
from pipelines import records, tracking
from pipelines.config import AugmentationParams, TrainParams, load_params
from pipelines.outputs import atomic_directory, write_json

PREPARED_DIR = Path("data/prepared")
PREPROCESSOR_FILE = Path("artifacts/preprocess/preprocessor.keras")
OUTPUT_DIR = Path("artifacts/train")
BACKUP_ROOT = Path(".cache/train-backup")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: a failure, never a model."""


def experiment_name_for(source: str) -> str:
    """One MLflow experiment per dataset ('tfds:cifar10' -> 'tfds-cifar10')."""
    return source.replace(":", "-").replace("/", "-")


def build_augmenter(params: AugmentationParams, seed: int) -> keras.Sequential | None:
    """Random transforms on float pixel batches; None when every transform is off."""
    layers = []
    if params.flip != "none":
        layers.append(keras.layers.RandomFlip(params.flip, seed=seed))
    if params.rotation:
        layers.append(keras.layers.RandomRotation(params.rotation, fill_mode="constant", seed=seed + 1))
    if params.zoom:
        layers.append(keras.layers.RandomZoom(params.zoom, fill_mode="constant", seed=seed + 2))
    if params.translation:
        layers.append(keras.layers.RandomTranslation(params.translation, params.translation, fill_mode="constant", seed=seed + 3))
    return keras.Sequential(layers, name="augmentation") if layers else None


def build_input_pipeline(dataset: tf.data.Dataset, batch_size: int, training: bool, shuffle_buffer: int = 1,
                         seed: int = 0, augmenter: keras.Model | None = None) -> tf.data.Dataset:
    """Cache decoded images, shuffle (train only), batch, cast to float32 pixels, augment (train only), prefetch."""
    dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.float32), labels), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmenter is not None:
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def build_training_model(preprocessor: keras.Model, classifier: keras.Model) -> keras.Model:
    """raw pixels -> preprocessing -> classifier logits -> float32 softmax probabilities."""
    inputs = keras.Input(shape=preprocessor.input_shape[1:], dtype="float32", name="image")
    logits = classifier(preprocessor(inputs))
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="trained_model")


def build_learning_rate(params: TrainParams, steps_per_epoch: int):
    """A constant rate, or a cosine/exponential decay over the whole run with an optional linear warmup."""
    total_steps = max(1, params.epochs * steps_per_epoch)
    warmup_steps = params.warmup_epochs * steps_per_epoch
    if params.lr_schedule == "cosine":
        # CosineDecay ramps from initial_learning_rate up to warmup_target during warmup_steps.
        start = params.learning_rate / 10 if warmup_steps else params.learning_rate
        return keras.optimizers.schedules.CosineDecay(start, max(1, total_steps - warmup_steps), alpha=0.01,
                                                       warmup_target=params.learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
    if params.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(params.learning_rate, decay_steps=steps_per_epoch, decay_rate=0.9)
    return params.learning_rate


def build_optimizer(params: TrainParams, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return optimizers[params.optimizer](learning_rate=build_learning_rate(params, steps_per_epoch))


def fit_model(model, train_data, val_data, params: TrainParams, callbacks) -> keras.callbacks.History:
    """Compiles and fits; raises TrainingDiverged if the loss became NaN (Keras itself exits quietly)."""
    steps_per_epoch = int(train_data.cardinality()) if train_data.cardinality() > 0 else 1
    model.compile(optimizer=build_optimizer(params, steps_per_epoch), loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=params.early_stopping_patience, restore_best_weights=True),
        *callbacks,
    ]
    history = model.fit(train_data, validation_data=val_data, epochs=params.epochs, callbacks=callbacks, verbose=2)
    losses = np.asarray(history.history.get("loss", []), dtype=np.float64)
    if len(losses) == 0 or not np.all(np.isfinite(losses)):
        raise TrainingDiverged(f"training diverged: loss per epoch {losses.tolist()}; lower train.learning_rate or check the input data")
    return history


def backup_dir_for(params: TrainParams) -> Path:
    """BackupAndRestore's directory, keyed by the train params so a changed config never resumes a stale run."""
    key = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode()).hexdigest()[:12]
    return BACKUP_ROOT / f"{params.model}-{key}"


def main() -> None:
    all_params = load_params()
    params = all_params.train
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()

    manifest = records.read_manifest(PREPARED_DIR)
    has_val = manifest["splits"].get("val", {}).get("count", 0) > 0
    augmenter = build_augmenter(params.augmentation, params.seed)
    train_data = build_input_pipeline(records.read_split(PREPARED_DIR, "train"), params.batch_size, True, params.shuffle_buffer, params.seed, augmenter)
    val_data = build_input_pipeline(records.read_split(PREPARED_DIR, "val"), params.batch_size, False) if has_val else None

    preprocessor = keras.models.load_model(PREPROCESSOR_FILE)
    classifier = registry.get_builder(params.model)(
        input_shape=preprocessor.output_shape[1:], num_classes=len(manifest["class_names"]),
        dropout_rate=params.dropout_rate, weight_decay=params.weight_decay, batch_norm=params.batch_norm,
    )
    model = build_training_model(preprocessor, classifier)

    experiment_name = experiment_name_for(all_params.data.source)
    with tracking.stage_run(experiment_name, run_name=f"{params.model}-{all_params.data.source}") as run:
        mlflow.log_params(tracking.flatten("", json.loads(json.dumps(asdict(all_params)))))
        devices = [device.device_type for device in tf.config.list_physical_devices()]
        mlflow.set_tags({**tracking.git_tags(), "tensorflow.version": tf.__version__, "device": "GPU" if "GPU" in devices else "CPU",
                         "host.python": platform.python_version(), "stage": "train"})
        log_dir = tracking.tensorboard_dir(run.info.run_id)
        backup_dir = backup_dir_for(params)
        callbacks = [
            keras.callbacks.TensorBoard(log_dir=str(log_dir)),
            tracking.mlflow_epoch_callback(),
            keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
        ]
        history = fit_model(model, train_data, val_data, params, callbacks)
        shutil.rmtree(backup_dir, ignore_errors=True)

        frame = pd.DataFrame(history.history)
        frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
        with atomic_directory(OUTPUT_DIR) as staging:
            model.save(staging / "model.keras")
            write_json(staging / "model.json", {"model": params.model, "class_names": manifest["class_names"], "image_shape": manifest["image_shape"]})
            frame.to_csv(staging / "history.csv", index=False)
            tracking.write_run_reference(staging / "run.json", run, experiment_name)
        Path("plots").mkdir(exist_ok=True)
        frame.to_csv("plots/history.csv", index=False)
        final = {key: float(value) for key, value in frame.iloc[-1].items() if key != "epoch"}
        write_json("metrics/train.json", {**final, "epochs_run": int(len(frame)), "run_id": run.info.run_id})
        mlflow.log_artifact(str(OUTPUT_DIR / "history.csv"))
        mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard")
    print(f"{OUTPUT_DIR}: {params.model} trained for {len(frame)} epochs; MLflow run {run.info.run_id}")


if __name__ == "__main__":
    main()
