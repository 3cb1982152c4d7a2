"""Train stage: reads data/prepared and artifacts/preprocess, writes artifacts/train/ and an MLflow run.

The trained model takes raw pixels (float32, 0..255) and contains the preprocessing model, the
classifier from the models/ registry, and a float32 softmax: export wraps it for uint8 serving.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components.preprocess import load_preprocessor
from models import applications, registry
from pipelines import hardware, records, tracking
from pipelines.config import Params, TrainParams, load_params
from pipelines.input_pipeline import build_augmenter, build_input_pipeline
from pipelines.outputs import atomic_directory, file_sha256, write_json

PREPARED_DIR = Path("data/prepared")
OUTPUT_DIR = Path("artifacts/train")
CACHE_ROOT = Path(".cache")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: a failure, never a model."""


def experiment_name_for(source: str) -> str:
    """One MLflow experiment per dataset ('tfds:cifar10' -> 'tfds-cifar10')."""
    return source.replace(":", "-").replace("/", "-")


def build_training_model(preprocessor: keras.Model, classifier: keras.Model) -> keras.Model:
    """raw pixels -> preprocessing -> classifier logits -> float32 softmax probabilities."""
    inputs = keras.Input(shape=preprocessor.input_shape[1:], dtype="float32", name="image")
    logits = classifier(preprocessor(inputs))
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="trained_model")


def build_classifier(params: TrainParams, input_shape, num_classes: int, load_weights: bool = True) -> keras.Model:
    """The registry's model; a pretrained backbone also gets its weights (unless load_weights is False)."""
    # AdamW decays weights itself (decoupled); an L2 penalty on top would apply weight_decay twice.
    l2 = 0.0 if params.optimizer == "adamw" else params.weight_decay
    options = {}
    if applications.is_backbone(params.model):
        backbone = params.backbone
        image_size = applications.backbone_input_size(input_shape, backbone.min_image_size)[0]
        weights = applications.resolve_weights(params.model, backbone.weights, image_size) if load_weights else None
        options = {"weights": weights, "imagenet": backbone.weights == "imagenet", "min_image_size": backbone.min_image_size}
    return registry.get_builder(params.model)(
        input_shape=tuple(input_shape), num_classes=num_classes,
        dropout_rate=params.dropout_rate, weight_decay=l2, batch_norm=params.batch_norm, **options,
    )


@dataclass(frozen=True)
class Phase:
    """A fit() over epochs [initial_epoch, end_epoch) at its own rate, with some backbone layers frozen."""

    name: str
    initial_epoch: int
    end_epoch: int
    learning_rate: float
    warmup_epochs: int
    trainable_top_layers: int | None  # backbone layers that train; None: every layer (and any model without a backbone)


def plan_phases(params: TrainParams) -> list[Phase]:
    """One phase; for a pretrained backbone, the head on the frozen backbone, then a fine-tune of its top layers.

    A backbone with weights: none trains every layer from the first epoch: freezing random weights
    would teach the head nothing.
    """
    if not applications.is_backbone(params.model) or params.backbone.weights == "none":
        return [Phase("train", 0, params.epochs, params.learning_rate, params.warmup_epochs, None)]
    head, phases = params.backbone.head_epochs, []
    if head:
        phases.append(Phase("head", 0, head, params.learning_rate, params.warmup_epochs, 0))
    if params.epochs > head:
        phases.append(Phase("fine_tune", head, params.epochs, params.backbone.fine_tune_learning_rate, 0, params.backbone.fine_tune_layers))
    return phases


def build_learning_rate(params: TrainParams, steps_per_epoch: int, phase: Phase | None = None):
    """A constant rate, or a cosine/exponential decay over the run (or phase) with an optional linear warmup."""
    phase = phase or plan_phases(params)[0]
    learning_rate = phase.learning_rate
    total_steps = max(1, (phase.end_epoch - phase.initial_epoch) * steps_per_epoch)
    warmup_steps = phase.warmup_epochs * steps_per_epoch
    if params.lr_schedule == "cosine":
        # CosineDecay ramps from initial_learning_rate up to warmup_target during warmup_steps.
        start = learning_rate / 10 if warmup_steps else learning_rate
        return keras.optimizers.schedules.CosineDecay(start, max(1, total_steps - warmup_steps), alpha=0.01,
                                                       warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
    if params.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=steps_per_epoch, decay_rate=0.9)
    return learning_rate


def build_optimizer(params: TrainParams, steps_per_epoch: int = 1, phase: Phase | None = None) -> keras.optimizers.Optimizer:
    rate = build_learning_rate(params, steps_per_epoch, phase)
    options = {"learning_rate": rate, "clipnorm": params.clipnorm}
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=params.momentum, nesterov=params.nesterov, **options)
    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=params.momentum, **options)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=params.weight_decay or 1e-4, **options)
    return keras.optimizers.Adam(**options)


def build_loss(label_smoothing: float):
    """Sparse labels everywhere; Keras 2's sparse loss has no label smoothing, so one-hot it inside."""
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy()

    def smoothed_crossentropy(labels, probabilities):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(probabilities)[-1])
        return keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=label_smoothing)

    return smoothed_crossentropy


def compile_model(model, params: TrainParams, steps_per_epoch: int, jit_compile: bool, phase: Phase | None = None) -> None:
    model.compile(optimizer=build_optimizer(params, steps_per_epoch, phase), loss=build_loss(params.label_smoothing),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile, steps_per_execution=params.steps_per_execution)


def fit_model(model, train_data, val_data, params: TrainParams, callbacks, phase: Phase | None = None) -> keras.callbacks.History:
    """Fits a compiled model; raises TrainingDiverged if the loss became NaN (Keras itself exits quietly)."""
    phase = phase or plan_phases(params)[0]
    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=params.early_stopping_patience, restore_best_weights=True),
        *callbacks,
    ]
    history = model.fit(train_data, validation_data=val_data, initial_epoch=phase.initial_epoch, epochs=phase.end_epoch,
                        callbacks=callbacks, verbose=2)
    losses = np.asarray(history.history.get("loss", []), dtype=np.float64)
    if len(losses) == 0 or not np.all(np.isfinite(losses)):
        raise TrainingDiverged(f"training diverged: loss per epoch {losses.tolist()}; lower train.learning_rate or check the input data")
    return history


def run_key(params: Params) -> str:
    """Keys the backup and checkpoint directories, so a changed config never resumes a stale run."""
    relevant = {"train": asdict(params.train), "preprocess": asdict(params.preprocess), "data": asdict(params.data)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def describe_phases(phases: list[Phase]) -> str:
    """'head: epochs 1-3, lr 0.002, backbone frozen; fine_tune: epochs 4-10, lr 1e-05, top 20 backbone layers'"""
    def layers(phase: Phase) -> str:
        if phase.trainable_top_layers is None:
            return "every layer"
        return "backbone frozen" if phase.trainable_top_layers == 0 else f"top {phase.trainable_top_layers} backbone layers (batch norm frozen)"

    return "; ".join(f"{phase.name}: epochs {phase.initial_epoch + 1}-{phase.end_epoch}, lr {phase.learning_rate:g}, {layers(phase)}"
                     for phase in phases)


def history_frame(history: keras.callbacks.History, phase: str) -> pd.DataFrame:
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.asarray(history.epoch) + 1)  # a resumed run starts past epoch 1
    frame.insert(1, "phase", phase)
    return frame


class CorruptedBackup(RuntimeError):
    """A BackupAndRestore checkpoint exists but cannot be read: never silently restart from epoch 1."""


def verify_backup(backup_dir: Path) -> int | None:
    """The epoch a killed run would resume from, or None without a backup; raises CorruptedBackup."""
    files = [path for path in backup_dir.rglob("*") if path.is_file()] if backup_dir.exists() else []
    if not files:
        return None
    hint = f"delete {backup_dir} to start training from the first epoch"
    latest = tf.train.latest_checkpoint(str(backup_dir / "chief"))
    if latest is None:
        raise CorruptedBackup(f"{backup_dir}: training backup has files but no readable checkpoint index; {hint}")
    try:
        reader = tf.train.load_checkpoint(latest)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        epoch = next((reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if "ckpt_saved_epoch" in name), None)
    except (tf.errors.OpError, ValueError) as error:
        raise CorruptedBackup(f"{latest}: training backup is corrupted ({type(error).__name__}: {str(error).splitlines()[0]}); {hint}") from None
    return None if epoch is None else int(epoch) + 1


def log_augmented_batch(train_data: tf.data.Dataset, log_dir: Path, count: int) -> None:
    """Shows what the model really sees: one augmented batch as images in TensorBoard."""
    images, _ = next(iter(train_data))
    with tf.summary.create_file_writer(str(log_dir / "images")).as_default():
        tf.summary.image("augmented_train_batch", tf.cast(images[:count], tf.float32) / 255.0, step=0, max_outputs=count)


def float32_copy(model: keras.Model, preprocessor: keras.Model, params: TrainParams, input_shape, num_classes: int) -> keras.Model:
    """The same weights in a float32 model: what evaluate and export (TFLite, tfmot) expect."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build_training_model(preprocessor, build_classifier(params, input_shape, num_classes, load_weights=False))
    for source, target in zip(model.get_layer(params.model).layers, copy.get_layer(params.model).layers):
        target.trainable = source.trainable  # get_weights() lists trainable weights first: the same split, the same order
    copy.set_weights(model.get_weights())
    return copy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """False only on a MultiWorkerMirroredStrategy worker that is not the chief (task chief, or worker 0 without one)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def main() -> None:
    all_params = load_params()
    params = all_params.train
    phases = plan_phases(params)
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    plan = hardware.plan_hardware(params.mixed_precision, params.jit_compile, params.distribute)
    strategy = hardware.build_strategy(plan)

    manifest = records.read_manifest(PREPARED_DIR)
    num_classes = len(manifest["class_names"])
    has_val = manifest["splits"].get("val", {}).get("count", 0) > 0
    # Batch size is global: a strategy with N replicas gives each batch_size / N examples.
    augmenter = build_augmenter(params.augmentation, params.seed)
    train_data = build_input_pipeline(records.read_split(PREPARED_DIR, "train"), params.batch_size, True, params.shuffle_buffer,
                                      params.seed, augmenter, params.cache)
    val_data = build_input_pipeline(records.read_split(PREPARED_DIR, "val"), params.batch_size, False) if has_val else None
    steps_per_epoch = -(-manifest["splits"]["train"]["count"] // params.batch_size)
    if plan.strategy_name == "multi_worker":
        # Each worker reads every shard and keeps its share of the batches: the default FILE sharding
        # fails when a split has fewer shards than there are workers.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_data, val_data = train_data.with_options(options), val_data.with_options(options) if val_data is not None else None

    with strategy.scope():
        # A pretrained backbone brings the input preprocessing its weights were trained with.
        preprocessor = load_preprocessor(normalize=not registry.takes_raw_pixels(params.model))
        hardware.apply_precision(plan)
        classifier_input = preprocessor.output_shape[1:]
        model = build_training_model(preprocessor, build_classifier(params, classifier_input, num_classes))

    experiment_name = experiment_name_for(all_params.data.source)
    # Multi-worker: every worker runs the same fit() and the same saves (their collective ops must match),
    # but only the chief tracks in MLflow and writes outputs; the others save into a temporary directory
    # of their own, Keras' multi-worker rule (BackupAndRestore, ModelCheckpoint and TensorBoard do the same).
    chief = is_chief(strategy)
    if not chief:  # under .cache/ (ignored by git and DVC), so a killed worker leaves nothing in /tmp
        CACHE_ROOT.mkdir(exist_ok=True)
    worker_dir = None if chief else Path(tempfile.mkdtemp(prefix="train-worker-", dir=CACHE_ROOT))
    run_name = f"{params.model}-{all_params.data.source}"
    tracked = tracking.background_stage_run(experiment_name, run_name=run_name, system_metrics=True) if chief else contextlib.nullcontext()
    with tracked as run:
        if chief:
            # Queued on the run's own thread, which works while the model trains (tracking.BackgroundRun).
            tensorboard = tracking.tensorboard_name(run_name)
            log_dir = tracking.tensorboard_dir(tensorboard)
            run.mlflow("log_params", tracking.flatten("", json.loads(json.dumps(asdict(all_params)))))
            tags = {"tensorflow.version": tf.__version__, "device": plan.device, "precision": plan.precision_policy,
                    "jit_compile": str(plan.jit_compile).lower(), "strategy": f"{plan.strategy_name} ({strategy.num_replicas_in_sync} replicas)",
                    "host.python": platform.python_version(), "stage": "train", "tensorboard.dir": str(tracking.TENSORBOARD_DIR / tensorboard)}
            if len(phases) > 1 or phases[0].name != "train":
                tags["train.phases"] = describe_phases(phases)
            run.submit(tracking.set_lineage_tags, ("ingest", "preprocess"), tags)
            if Path("reports/ingest").is_dir():
                run.mlflow("log_artifacts", "reports/ingest", artifact_path="ingest")  # data docs, statistics, pictures
            if Path("metrics/ingest.json").is_file():
                run.mlflow("log_artifact", "metrics/ingest.json", artifact_path="ingest")
            run.submit(tracking.log_dataset, PREPARED_DIR / "examples.csv", name=all_params.data.source)
            run.submit(tracking.log_hparams, log_dir, tracking.flatten("", {"data": {"source": all_params.data.source}, "train": asdict(params)}, as_text=False),
                       trial_id=tensorboard)
        else:
            log_dir = worker_dir / "tensorboard"
        if params.log_augmented_images and chief:
            log_augmented_batch(train_data, log_dir, params.log_augmented_images)
        key = run_key(all_params)
        backup_root, checkpoint_root = CACHE_ROOT / "train-backup" / key, CACHE_ROOT / "train-checkpoints" / key
        histories = []
        for phase in phases:
            # Each phase has its own backup: a run killed in the fine-tune redoes the (deterministic)
            # head phase, then the fine-tune's backup restores its weights, optimizer and epoch.
            backup_dir = backup_root if len(phases) == 1 else backup_root / phase.name
            resume_epoch = verify_backup(backup_dir)
            if resume_epoch is not None:
                print(f"resuming from the backup in {backup_dir}: epoch {resume_epoch + 1} onwards")
                if chief:
                    run.mlflow("set_tag", "resumed_from_epoch", str(resume_epoch + 1))
            with strategy.scope():
                if phase.name != "train":
                    applications.freeze_backbone(model.get_layer(params.model), phase.trainable_top_layers)
                compile_model(model, params, steps_per_epoch, plan.jit_compile, phase)
            callbacks = [
                # Restores model, optimizer and epoch after a killed run. It comes before the loggers, so an
                # epoch that MLflow shows as done is always an epoch a rerun resumes after.
                keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
                keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=params.histogram_freq, profile_batch=0),
                *([tracking.mlflow_epoch_callback(run)] if chief else []),
                keras.callbacks.ModelCheckpoint(str(checkpoint_root / phase.name / "best.h5"), save_best_only=True,
                                                save_weights_only=True, monitor="val_loss" if has_val else "loss"),
            ]
            print(f"phase {phase.name}: epochs {phase.initial_epoch + 1}-{phase.end_epoch}")
            histories.append(fit_model(model, train_data, val_data, params, callbacks, phase))
        if plan.precision_policy != "float32":
            model = float32_copy(model, preprocessor, params, classifier_input, num_classes)
        if not chief:
            model.save(worker_dir / "model.keras")  # the chief's save reads the same variables collectively
            shutil.rmtree(worker_dir, ignore_errors=True)
            print(f"worker {strategy.cluster_resolver.task_type}:{strategy.cluster_resolver.task_id} done; the chief writes {OUTPUT_DIR}")
            return
        for finished in (backup_root, checkpoint_root):  # a later run with the same config starts fresh
            shutil.rmtree(finished, ignore_errors=True)

        frame = pd.concat([history_frame(history, phase.name) for history, phase in zip(histories, phases)], ignore_index=True)
        with atomic_directory(OUTPUT_DIR) as staging:
            model.save(staging / "model.keras")
            write_json(staging / "model.json", {"model": params.model, "class_names": manifest["class_names"], "image_shape": manifest["image_shape"],
                                                "model_sha256": file_sha256(staging / "model.keras")})
            frame.to_csv(staging / "history.csv", index=False)
            tracking.write_run_reference(staging / "run.json", run, experiment_name, tensorboard)
        Path("plots").mkdir(exist_ok=True)
        frame.to_csv("plots/history.csv", index=False)
        final = {key: float(value) for key, value in frame.iloc[-1].items() if key not in ("epoch", "phase")}
        write_json("metrics/train.json", {**final, "epochs_run": int(len(frame)), "run_id": run.info.run_id})
        run.mlflow("log_artifact", str(OUTPUT_DIR / "history.csv"))
        run.mlflow("log_artifacts", str(log_dir), artifact_path="tensorboard")
    print(f"{OUTPUT_DIR}: {params.model} trained for {len(frame)} epochs on {plan.device}; MLflow run {run.info.run_id}")


if __name__ == "__main__":
    main()
