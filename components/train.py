"""Train stage: reads data/prepared and artifacts/preprocess, writes artifacts/train/ and an MLflow run.

The trained model takes raw pixels (float32, 0..255) and contains the preprocessing model, the
classifier from the models/ registry, and a float32 softmax: export wraps it for uint8 serving.
"""
from __future__ import annotations

import contextlib
import io
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
from pipelines import hardware, lineage, records, tracking
from pipelines.config import PARAMS_FILE, Params, ParamsError, TrainParams, dataset_name, load_params, resolve_train_schedule
from pipelines.input_pipeline import build_augmenter, build_input_pipeline
from pipelines.outputs import atomic_directory, file_sha256, write_bytes, write_csv, write_json

PREPARED_DIR = Path("data/prepared")
PREPROCESS_DIR = Path("artifacts/preprocess")
OUTPUT_DIR = Path("artifacts/train")
CACHE_ROOT = Path(".cache")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: a failure, never a model."""


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


def check_model_params(params: TrainParams) -> None:
    """The params that need the model registry (checked here, not in pipelines/config.py, so that
    the other stages do not import model code): a known model, a backbone schedule that fits."""
    try:
        registry.get_builder(params.model)
    except ValueError as error:
        raise ParamsError(f"{PARAMS_FILE}: train.model: {error}") from None
    if applications.is_backbone(params.model) and params.backbone.weights != "none" and params.backbone.head_epochs > params.epochs:
        raise ParamsError(f"{PARAMS_FILE}: train.backbone.head_epochs ({params.backbone.head_epochs}) is above train.epochs "
                          f"({params.epochs}): epochs counts both phases")


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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose state (best value, epochs waited, best weights) survives a killed run.

    BackupAndRestore restores the model, the optimizer and the epoch, not the callbacks: a resumed
    run's EarlyStopping would forget the epochs before the kill and could restore a worse epoch's
    weights at the end. This one saves its state into the run's backup directory after every epoch
    and reads it back when it belongs to the epoch the backup resumes after. Only the chief writes;
    every worker of a multi-worker run reads the chief's, as they do with BackupAndRestore.
    """

    def __init__(self, state_dir: Path, resume_epoch: int | None, write: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.state_dir, self.resume_epoch, self.write = Path(state_dir), resume_epoch, write

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state_file = self.state_dir / "state.json"
        if self.resume_epoch is None or not state_file.is_file():
            return
        state = json.loads(state_file.read_text())
        if state["epoch"] != self.resume_epoch - 1:  # killed between the two saves: keep the backup, restart the patience
            print(f"early stopping: its saved state is of epoch {state['epoch'] + 1}, the backup of epoch {self.resume_epoch}; "
                  "it counts its patience from the resumed epoch")
            return
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
        if self.restore_best_weights and (self.state_dir / "best_weights.npz").is_file():
            with np.load(self.state_dir / "best_weights.npz") as saved:
                self.best_weights = [saved[f"arr_{index}"] for index in range(len(saved.files))]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if not self.write:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch == epoch:
            buffer = io.BytesIO()
            np.savez(buffer, *self.best_weights)
            write_bytes(self.state_dir / "best_weights.npz", buffer.getvalue())
        write_json(self.state_dir / "state.json", {"epoch": epoch, "wait": self.wait, "best": float(self.best), "best_epoch": self.best_epoch})


def fit_model(model, train_data, val_data, params: TrainParams, callbacks, phase: Phase | None = None,
              steps_per_epoch: int | None = None, early_stopping: keras.callbacks.EarlyStopping | None = None) -> keras.callbacks.History:
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
    history = model.fit(train_data, validation_data=val_data, initial_epoch=phase.initial_epoch, epochs=phase.end_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=2)
    losses = np.asarray(history.history.get("loss", []), dtype=np.float64)
    if len(losses) == 0 or not np.all(np.isfinite(losses)):
        raise TrainingDiverged(f"training diverged: loss per epoch {losses.tolist()}; lower train.learning_rate or check the input data")
    return history


def early_stopping_options(params: TrainParams, has_val: bool) -> dict:
    if params.epochs == "auto":
        raise ValueError("train.epochs is 'auto': resolve the schedule first (config.resolve_train_schedule)")
    patience = resolve_train_schedule(params, train_count=1).early_stopping_patience  # "auto" follows the epochs
    return {"monitor": "val_loss" if has_val else "loss", "patience": patience, "restore_best_weights": True}


def run_key(params: Params, prepared_dir: Path = PREPARED_DIR, preprocess_dir: Path = PREPROCESS_DIR) -> str:
    """Keys the backup, checkpoint and tf.data cache files on what the stage reads, so a change never resumes stale state.

    That is the content of its inputs (the prepared shards and the preprocessing statistics, as
    DVC's hashes would see them), every param the stage reads (data.source and train; tracking
    is logging only), and the source of every project module the stage imports.
    """
    return lineage.content_key(
        data={"source": params.data.source, "name": params.data.name}, train=asdict(params.train),
        inputs={str(prepared_dir): lineage.tree_digest(prepared_dir), str(preprocess_dir): lineage.tree_digest(preprocess_dir)},
        code=lineage.code_digest("components.train"))


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
    checkpoints = backup_dir / "chief"  # BackupAndRestore's own files (early_stopping/ beside it is ResumableEarlyStopping's)
    files = [path for path in checkpoints.rglob("*") if path.is_file()] if checkpoints.exists() else []
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


def cache_location(cache: str, key: str, worker: str = "") -> str:
    """train.cache as tf.data takes it: a file prefix gets the run key (and worker) appended, so a cache
    file written from other data or params is never read; a killed run's partial cache files are removed."""
    if cache in ("memory", "none"):
        return cache
    prefix = Path(f"{cache}-{key}{worker}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if not Path(f"{prefix}.index").is_file():  # TF refuses to write over a killed run's lockfile
        for partial in prefix.parent.glob(f"{prefix.name}*"):
            print(f"removing a partial tf.data cache file of a killed run: {partial}")
            partial.unlink()
    return str(prefix)


def distribute_options(plan: hardware.HardwarePlan) -> tf.data.Options | None:
    """Multi-worker: each worker reads every shard and keeps its share of the batches (the default FILE
    sharding fails when a split has fewer shards than there are workers)."""
    if plan.strategy_name != "multi_worker":
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def start_tracking(run: tracking.BackgroundRun, all_params: Params, params: TrainParams, plan, strategy, phases: list[Phase],
                   label: str) -> tuple[str, Path]:
    """Queues the run's params, lineage tags, ingest reports, dataset and HParams (params: train's, "auto" resolved);
    returns the TensorBoard name and directory."""
    tensorboard = tracking.tensorboard_name(label)
    log_dir = tracking.tensorboard_dir(tensorboard)
    run.log_params(tracking.flatten("", json.loads(json.dumps(asdict(all_params)))))
    tags = {"tensorflow.version": tf.__version__, "device": plan.device, "precision": plan.precision_policy,
            "jit_compile": str(plan.jit_compile).lower(), "strategy": f"{plan.strategy_name} ({strategy.num_replicas_in_sync} replicas)",
            "host.python": platform.python_version(), "stage": "train", "tensorboard.dir": str(tracking.TENSORBOARD_DIR / tensorboard)}
    if len(phases) > 1 or phases[0].name != "train":
        tags["train.phases"] = describe_phases(phases)
    run.submit(tracking.set_lineage_tags, ("ingest", "preprocess"), tags)
    if Path("reports/ingest").is_dir():
        run.submit(lambda: run.client.log_artifacts(run.run_id, "reports/ingest", artifact_path="ingest"))  # data docs, pictures
    if Path("metrics/ingest.json").is_file():
        run.submit(lambda: run.client.log_artifact(run.run_id, "metrics/ingest.json", artifact_path="ingest"))
    run.submit(tracking.log_dataset, PREPARED_DIR / "examples.csv", name=dataset_name(all_params))
    run.submit(tracking.log_hparams, log_dir, tracking.flatten("", {"data": {"source": all_params.data.source}, "train": asdict(params)}, as_text=False),
               trial_id=tensorboard)
    return tensorboard, log_dir


def main() -> None:
    all_params = load_params()
    manifest = records.read_manifest(PREPARED_DIR)
    params = resolve_train_schedule(all_params.train, manifest["splits"]["train"]["count"])  # the "auto" settings
    check_model_params(params)
    phases = plan_phases(params)
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    plan = hardware.plan_hardware(params.mixed_precision, params.jit_compile, params.distribute)
    strategy = hardware.build_strategy(plan)
    chief = is_chief(strategy)
    key = run_key(all_params)

    num_classes = len(manifest["class_names"])
    has_val = manifest["splits"].get("val", {}).get("count", 0) > 0
    # Batch size is global: a strategy with N replicas gives each batch_size / N examples.
    augmenter = build_augmenter(params.augmentation, params.seed)
    resolver = strategy.cluster_resolver
    cache = cache_location(params.cache, key, "" if chief else f"-{resolver.task_type}{resolver.task_id}")
    options = distribute_options(plan)

    def train_data(epochs: range) -> tf.data.Dataset:
        dataset = build_input_pipeline(records.read_split(PREPARED_DIR, "train"), params.batch_size, True, params.shuffle_buffer,
                                       params.seed, augmenter, cache, epochs=epochs)
        return dataset if options is None else dataset.with_options(options)

    val_data = build_input_pipeline(records.read_split(PREPARED_DIR, "val"), params.batch_size, False) if has_val else None
    if val_data is not None and options is not None:
        val_data = val_data.with_options(options)
    steps_per_epoch = -(-manifest["splits"]["train"]["count"] // params.batch_size)

    with strategy.scope():
        # A pretrained backbone brings the input preprocessing its weights were trained with.
        preprocessor = load_preprocessor(PREPROCESS_DIR / "statistics.json", normalize=not registry.takes_raw_pixels(params.model))
        hardware.apply_precision(plan)
        classifier_input = preprocessor.output_shape[1:]
        model = build_training_model(preprocessor, build_classifier(params, classifier_input, num_classes))
    plan = hardware.settle_jit_compile(plan, model, params.jit_compile, params.deterministic)

    experiment_name = dataset_name(all_params)  # one MLflow experiment per dataset
    # Multi-worker: every worker runs the same fit() and the same saves (their collective ops must match),
    # but only the chief tracks in MLflow and writes outputs; the others save into a temporary directory
    # of their own, Keras' multi-worker rule (BackupAndRestore, ModelCheckpoint and TensorBoard do the same).
    if not chief:  # under .cache/ (ignored by git and DVC), so a killed worker leaves nothing in /tmp
        CACHE_ROOT.mkdir(exist_ok=True)
    worker_dir = None if chief else Path(tempfile.mkdtemp(prefix="train-worker-", dir=CACHE_ROOT))
    flat_params = json.loads(json.dumps(asdict(all_params)))
    run_name = tracking.run_name(params.model, flat_params) if chief else ""
    tracked = tracking.background_stage_run(experiment_name, run_name=run_name, system_metrics=True) if chief else contextlib.nullcontext()
    resolved = {"resolved.train.batch_size": params.batch_size, "resolved.train.epochs": params.epochs,
                "resolved.train.early_stopping_patience": params.early_stopping_patience,
                "resolved.preprocess.image_height": classifier_input[0], "resolved.preprocess.image_width": classifier_input[1]}
    print("resolved: " + ", ".join(f"{key.removeprefix('resolved.')} {value}" for key, value in resolved.items()))
    with tracked as run:
        if chief:
            # Queued on the run's own thread, which works while the model trains (tracking.BackgroundRun).
            tensorboard, log_dir = start_tracking(run, all_params, params, plan, strategy, phases, f"{params.model}-{experiment_name}")
            changed = tracking.changed_params(flat_params)
            training = f"{params.model} on {experiment_name}, " + (f"params changed from the commit: {', '.join(changed)}" if changed
                                                                  else "params as committed")
            run.set_tags({"tfpipe.training": training, "mlflow.note.content": training})  # evaluate adds the result
            run.log_params(resolved)
        else:
            log_dir = worker_dir / "tensorboard"
        backup_root, checkpoint_root = CACHE_ROOT / "train-backup" / key, CACHE_ROOT / "train-checkpoints" / key
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
                if chief:
                    run.set_tags({"resumed_from_epoch": resume_epoch + 1})
            with strategy.scope():
                if phase.name != "train":
                    applications.freeze_backbone(model.get_layer(params.model), phase.trainable_top_layers)
                compile_model(model, params, steps_per_epoch, plan.jit_compile, phase)
            callbacks = [
                # Restores model, optimizer and epoch after a killed run. It comes before the loggers, so an
                # epoch that MLflow shows as done is always an epoch a rerun resumes after.
                keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
                keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=all_params.tracking.histogram_freq, profile_batch=0),
                *([tracking.mlflow_epoch_callback(run)] if chief else []),
                keras.callbacks.ModelCheckpoint(str(checkpoint_root / phase.name / "best.h5"), save_best_only=True,
                                                save_weights_only=True, monitor="val_loss" if has_val else "loss"),
            ]
            early_stopping = ResumableEarlyStopping(backup_dir / "early_stopping", resume_epoch, write=chief,
                                                    **early_stopping_options(params, has_val))
            print(f"phase {phase.name}: epochs {phase.initial_epoch + 1}-{phase.end_epoch}")
            epochs = range(first_epoch, max(first_epoch + 1, phase.end_epoch))
            histories.append(fit_model(model, train_data(epochs), val_data, params, callbacks, phase, steps_per_epoch, early_stopping))
        if plan.precision_policy != "float32":
            model = float32_copy(model, preprocessor, params, classifier_input, num_classes)
        if not chief:
            model.save(worker_dir / "model.keras")  # the chief's save reads the same variables collectively
            shutil.rmtree(worker_dir, ignore_errors=True)
            print(f"worker {resolver.task_type}:{resolver.task_id} done; the chief writes {OUTPUT_DIR}")
            return
        for finished in (backup_root, checkpoint_root):  # a later run with the same config starts fresh
            shutil.rmtree(finished, ignore_errors=True)
        if all_params.tracking.log_augmented_images:
            # After training, with an augmenter of its own (same settings and seed): logging
            # settings cannot change what the model was trained on (tracking is logging only).
            first = build_input_pipeline(records.read_split(PREPARED_DIR, "train"), params.batch_size, True, params.shuffle_buffer,
                                         params.seed, build_augmenter(params.augmentation, params.seed), "none", epochs=range(1))
            log_augmented_batch(first, log_dir, all_params.tracking.log_augmented_images)

        frame = pd.concat([history_frame(history, phase.name) for history, phase in zip(histories, phases)], ignore_index=True)
        with atomic_directory(OUTPUT_DIR) as staging:
            model.save(staging / "model.keras")
            write_json(staging / "model.json", {"model": params.model, "class_names": manifest["class_names"], "image_shape": manifest["image_shape"],
                                                "model_sha256": file_sha256(staging / "model.keras"), "run_key": key})
            write_csv(staging / "history.csv", frame)
            tracking.write_run_reference(staging / "run.json", run, experiment_name, tensorboard)
        write_csv("plots/history.csv", frame)
        final = {name: float(value) for name, value in frame.iloc[-1].items() if name not in ("epoch", "phase")}
        write_json("metrics/train.json", {**final, "epochs_run": int(len(frame)), "run_id": run.info.run_id})
        run.submit(lambda: run.client.log_artifact(run.run_id, str(OUTPUT_DIR / "history.csv")))
        run.submit(lambda: run.client.log_artifacts(run.run_id, str(log_dir), artifact_path="tensorboard"))
    print(f"{OUTPUT_DIR}: {params.model} trained for {len(frame)} epochs on {plan.device}; MLflow run {run.info.run_id}")


if __name__ == "__main__":
    main()
