"""Train stage: reads data/prepared and artifacts/preprocess, writes artifacts/train/ and an MLflow run.

The trained model takes raw pixels (float32, 0..255) and contains the preprocessing model, the
classifier from the models/ registry, and a float32 softmax: export wraps it for uint8 serving.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components import train_search
from components.preprocess import load_preprocessor
from components.train_resume import (
    ResumableEarlyStopping,
    cache_location,
    early_stopping_options,
    run_key,
    verify_backup,
)
from components.train_schedule import (
    Phase,
    check_model_options,
    check_model_params,
    compile_model,
    describe_phases,
    options_for,
    plan_phases,
)
from models import applications, registry
from pipelines import hardware, paths, records, tracking
from pipelines.config import Params, TrainParams, dataset_name, load_params, resolve_train_schedule
from pipelines.input_pipeline import build_augmenter, build_input_pipeline
from pipelines.outputs import atomic_directory, file_sha256, run_stage, write_csv, write_json


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
        options = {
            "weights": weights,
            "imagenet": backbone.weights == "imagenet",
            "min_image_size": backbone.min_image_size,
        }
    options.update(options_for(params.model, params.model_options))
    return registry.get_builder(params.model)(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        dropout_rate=params.dropout_rate,
        weight_decay=l2,
        batch_norm=params.batch_norm,
        **options,
    )


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


def log_augmented_batch(train_data: tf.data.Dataset, log_dir: Path, count: int) -> None:
    """Shows what the model really sees: one augmented batch as images in TensorBoard."""
    images, _ = next(iter(train_data))
    with tf.summary.create_file_writer(str(log_dir / "images")).as_default():
        tf.summary.image(
            "augmented_train_batch", tf.cast(images[:count], tf.float32) / 255.0, step=0, max_outputs=count
        )


def float32_copy(
    model: keras.Model, preprocessor: keras.Model, params: TrainParams, input_shape, num_classes: int
) -> keras.Model:
    """The same weights in a float32 model: what evaluate and export (TFLite, tfmot) expect."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build_training_model(preprocessor, build_classifier(params, input_shape, num_classes, load_weights=False))
    for source, target in zip(model.get_layer(params.model).layers, copy.get_layer(params.model).layers, strict=True):
        # get_weights() lists trainable weights first: the same split, the same order
        target.trainable = source.trainable
    copy.set_weights(model.get_weights())
    return copy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """False only on a MultiWorkerMirroredStrategy worker that is not the chief (task chief, or worker 0 without
    one)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def distribute_options(plan: hardware.HardwarePlan) -> tf.data.Options | None:
    """Multi-worker: each worker reads every shard and keeps its share of the batches (the default FILE
    sharding fails when a split has fewer shards than there are workers)."""
    if plan.strategy_name != "multi_worker":
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def start_tracking(
    run: tracking.BackgroundRun,
    all_params: Params,
    params: TrainParams,
    plan,
    strategy,
    phases: list[Phase],
    label: str,
) -> tuple[str, Path]:
    """Queues the run's params, lineage tags, ingest reports, dataset and HParams (params: train's, "auto" resolved);
    returns the TensorBoard name and directory."""
    tensorboard = tracking.tensorboard_name(label)
    log_dir = tracking.tensorboard_dir(tensorboard)
    run.log_params(tracking.flatten("", json.loads(json.dumps(asdict(all_params)))))
    tags = {
        "tensorflow.version": tf.__version__,
        "device": plan.device,
        "precision": plan.precision_policy,
        "jit_compile": str(plan.jit_compile).lower(),
        "strategy": f"{plan.strategy_name} ({strategy.num_replicas_in_sync} replicas)",
        "host.python": platform.python_version(),
        "stage": "train",
        "tensorboard.dir": str(paths.TENSORBOARD / tensorboard),
    }
    if len(phases) > 1 or phases[0].name != "train":
        tags["train.phases"] = describe_phases(phases)
    run.submit(tracking.set_lineage_tags, ("ingest", "preprocess"), tags)
    if paths.INGEST_REPORTS.is_dir():
        run.submit(
            lambda: run.client.log_artifacts(run.run_id, str(paths.INGEST_REPORTS), artifact_path="ingest")
        )  # data docs, pictures
    if paths.INGEST_METRICS.is_file():
        run.submit(lambda: run.client.log_artifact(run.run_id, str(paths.INGEST_METRICS), artifact_path="ingest"))
    run.submit(tracking.log_dataset, paths.PREPARED / "examples.csv", name=dataset_name(all_params))
    run.submit(
        tracking.log_hparams,
        log_dir,
        tracking.flatten("", {"data": {"source": all_params.data.source}, "train": asdict(params)}, as_text=False),
        trial_id=tensorboard,
    )
    return tensorboard, log_dir


@dataclass(frozen=True)
class TrainingData:
    """The prepared splits as the fit needs them. `train(epochs)` is the train split for those epochs, each
    shuffled by its own seed (a resumed run sees the same batches)."""

    train: Callable[[range], tf.data.Dataset]
    val: tf.data.Dataset | None
    steps_per_epoch: int
    class_names: list[str]
    image_shape: list[int]


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
        val = build_input_pipeline(records.read_split(paths.PREPARED, "val"), params.batch_size, False)
        val = val if options is None else val.with_options(options)
    return TrainingData(
        train,
        val,
        -(-manifest["splits"]["train"]["count"] // params.batch_size),
        manifest["class_names"],
        manifest["image_shape"],
    )


def build_model(
    params: TrainParams, plan: hardware.HardwarePlan, strategy, num_classes: int
) -> tuple[keras.Model, keras.Model]:
    """(the training model, its preprocessing model), built under the strategy in the plan's precision."""
    with strategy.scope():
        # A pretrained backbone brings the input preprocessing its weights were trained with.
        preprocessor = load_preprocessor(
            paths.PREPROCESS / "statistics.json", normalize=not registry.takes_raw_pixels(params.model)
        )
        hardware.apply_precision(plan)
        model = build_training_model(preprocessor, build_classifier(params, preprocessor.output_shape[1:], num_classes))
    return model, preprocessor


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
            compile_model(model, params, data.steps_per_epoch, plan.jit_compile, phase)
        callbacks = [
            # Restores model, optimizer and epoch after a killed run. It comes before the loggers, so an
            # epoch that MLflow shows as done is always an epoch a rerun resumes after.
            keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
            keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=histogram_freq, profile_batch=0),
            *([tracking.mlflow_epoch_callback(run)] if run is not None else []),
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


def write_outputs(
    model: keras.Model,
    frame: pd.DataFrame,
    data: TrainingData,
    params: TrainParams,
    *,
    key: str,
    run: tracking.BackgroundRun,
    experiment_name: str,
    tensorboard: str,
    search: train_search.SearchResult | None = None,
) -> None:
    """artifacts/train (model, its sha256 and description, history, run reference), then the DVC metrics and plot."""
    chosen = (
        {
            "model": search.chosen.model,
            "augmentation": search.chosen.augmentation,
            "reason": search.reason,
            "val_accuracy": {trial.candidate.name: round(trial.val_accuracy, 4) for trial in search.trials},
        }
        if search is not None
        else None
    )
    with atomic_directory(paths.TRAIN) as staging:
        model.save(staging / "model.keras")
        write_json(
            staging / "model.json",
            {
                "model": params.model,
                "class_names": data.class_names,
                "image_shape": data.image_shape,
                "model_sha256": file_sha256(staging / "model.keras"),
                "run_key": key,
                **({"search": chosen} if chosen else {}),
            },
        )
        write_csv(staging / "history.csv", frame)
        tracking.write_run_reference(staging / "run.json", run, experiment_name, tensorboard)
    write_csv(paths.HISTORY_PLOT, frame)
    final = {name: float(value) for name, value in frame.iloc[-1].items() if name not in ("epoch", "phase")}
    write_json(
        paths.TRAIN_METRICS,
        {**final, "epochs_run": int(len(frame)), "run_id": run.info.run_id, **({"search": chosen} if chosen else {})},
    )


@dataclass
class Setup:
    """What one training run works with, resolved once: train's params ("auto" settled), the phases, the hardware
    plan and strategy, the run key, whether this process is the chief, the data and the model."""

    params: TrainParams
    phases: list[Phase]
    plan: hardware.HardwarePlan
    strategy: tf.distribute.Strategy
    key: str
    chief: bool
    data: TrainingData
    model: keras.Model
    preprocessor: keras.Model
    search: train_search.SearchResult | None = None  # what train.model / augmentation: auto chose, and why

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.preprocessor.output_shape[1:]

    def fit(self, log_dir: Path, run: tracking.BackgroundRun | None, histogram_freq: int) -> list:
        return fit_phases(
            self.model,
            self.data,
            self.params,
            self.phases,
            plan=self.plan,
            strategy=self.strategy,
            key=self.key,
            log_dir=log_dir,
            histogram_freq=histogram_freq,
            run=run,
        )

    def float32_model(self) -> keras.Model:
        """The trained model as evaluate and export take it (a float32 copy after mixed precision)."""
        if self.plan.precision_policy == "float32":
            return self.model
        return float32_copy(self.model, self.preprocessor, self.params, self.input_shape, len(self.data.class_names))


def train_candidate(
    params: TrainParams,
    candidate: train_search.Candidate,
    round_number: int,
    *,
    manifest: dict,
    plan: hardware.HardwarePlan,
    strategy,
) -> train_search.Trial:
    """One search candidate's short run (params: Candidate.shortened's), scored on the validation split."""
    keras.utils.set_random_seed(params.seed)
    data = prepare_data(params, manifest, plan, "memory")
    model, _ = build_model(params, plan, strategy, len(data.class_names))
    candidate_plan = hardware.settle_jit_compile(plan, model, params.jit_compile, params.deterministic)
    phase = plan_phases(params)[0]
    with strategy.scope():
        compile_model(model, params, data.steps_per_epoch, candidate_plan.jit_compile, phase)
    epochs = phase.end_epoch  # params are the candidate's short run (Candidate.shortened)
    started = time.time()
    history = model.fit(
        data.train(range(epochs)),
        validation_data=data.val,
        epochs=epochs,
        steps_per_epoch=data.steps_per_epoch,
        callbacks=[keras.callbacks.TerminateOnNaN()],
        verbose=0,
    )
    seconds = time.time() - started
    rows = [
        {name: float(values[epoch]) for name, values in history.history.items()} for epoch in range(len(history.epoch))
    ]
    last = rows[-1] if rows else {}
    trial = train_search.Trial(
        candidate,
        round_number,
        val_accuracy=last.get("val_accuracy", math.nan) if math.isfinite(last.get("loss", math.nan)) else math.nan,
        val_loss=last.get("val_loss", math.nan),
        history=rows,
        seconds=round(seconds, 2),
        images_per_second=round(len(rows) * manifest["splits"]["train"]["count"] / max(seconds, 1e-9), 1),
        started_ms=int(started * 1000),
        ended_ms=int(time.time() * 1000),
    )
    print(
        f"search round {round_number}: {candidate.name}: val_accuracy {trial.val_accuracy:.4f} after {len(rows)} "
        f"epoch(s), {seconds:.1f} s ({trial.images_per_second:,.0f} images/s)"
    )
    return trial


def search_candidates(
    params: TrainParams, manifest: dict, plan: hardware.HardwarePlan, strategy, key: str
) -> train_search.SearchResult:
    """train.model / train.augmentation: auto resolved (components/train_search.py). The choice is cached under the
    run key, so a killed run that resumes does not search again."""
    cache = paths.CACHE / "train-search" / f"{key}.json"
    if cache.is_file():
        result = train_search.SearchResult.from_dict(json.loads(cache.read_text()))
        print(f"search: the choice of a killed run with the same inputs: {result.chosen.name}")
        return result
    if manifest["splits"].get("val", {}).get("count", 0) == 0:
        chosen = train_search.first_round(params)[0]
        return train_search.SearchResult(
            chosen, "no validation split (ingest.val_fraction is 0): the first candidate, not compared", [], 0
        )
    print(train_search.describe_budget(params))
    train = functools.partial(train_candidate, manifest=manifest, plan=plan, strategy=strategy)
    result = train_search.search(params, train)
    write_json(cache, result.to_dict())
    print(f"search: {result.chosen.name}, {result.reason}")
    return result


def set_up(all_params: Params) -> Setup:
    """Seeds, hardware, the search when a choice is auto, data and model, in that order (the strategy must exist
    before any model)."""
    manifest = records.read_manifest(paths.PREPARED)
    params = resolve_train_schedule(all_params.train, manifest["splits"]["train"]["count"])  # the "auto" settings
    candidates = train_search.candidate_models(params)
    for model in candidates:
        check_model_params(dataclasses.replace(params, model=model))
    check_model_options(candidates, params.model_options)
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    plan = hardware.plan_hardware(params.mixed_precision, params.jit_compile, params.distribute)
    strategy = hardware.build_strategy(plan)
    chief, key = is_chief(strategy), run_key(all_params)
    search = None
    if train_search.needs_search(params):
        search = search_candidates(params, manifest, plan, strategy, key)
        params = search.resolved(params)
        keras.utils.set_random_seed(params.seed)  # the chosen run starts from the seed, as without a search
    resolver = strategy.cluster_resolver
    worker_suffix = "" if chief else f"-{resolver.task_type}{resolver.task_id}"
    data = prepare_data(params, manifest, plan, cache_location(params.cache, key, worker_suffix))
    model, preprocessor = build_model(params, plan, strategy, len(data.class_names))
    plan = hardware.settle_jit_compile(plan, model, params.jit_compile, params.deterministic)
    setup = Setup(params, plan_phases(params), plan, strategy, key, chief, data, model, preprocessor, search)
    print(
        f"resolved: train.model {params.model}, train.batch_size {params.batch_size}, train.epochs {params.epochs}, "
        f"train.early_stopping_patience {params.early_stopping_patience}, preprocess.image_height "
        f"{setup.input_shape[0]}, preprocess.image_width {setup.input_shape[1]}"
        + (f", train.augmentation {search.chosen.augmentation}" if search else "")
    )
    return setup


def train_as_worker(setup: Setup, histogram_freq: int) -> None:
    """Multi-worker, not the chief: every worker runs the same fit() and the same saves (their collective ops must
    match), but only the chief tracks in MLflow and writes outputs. The others save into a directory of their own
    under .cache/ (ignored by git and DVC): Keras' multi-worker rule (BackupAndRestore and TensorBoard do
    the same)."""
    paths.CACHE.mkdir(exist_ok=True)
    worker_dir = Path(tempfile.mkdtemp(prefix="train-worker-", dir=paths.CACHE))
    setup.fit(worker_dir / "tensorboard", None, histogram_freq)
    setup.float32_model().save(worker_dir / "model.keras")  # the chief's save reads the same variables collectively
    shutil.rmtree(worker_dir, ignore_errors=True)
    resolver = setup.strategy.cluster_resolver
    print(f"worker {resolver.task_type}:{resolver.task_id} done; the chief writes {paths.TRAIN}")


def describe_run(run: tracking.BackgroundRun, setup: Setup, changed: list[str], experiment_name: str) -> None:
    """The run's description (what was trained, which params differ from the commit; evaluate adds the result)
    and the values "auto" resolved to."""
    training = f"{setup.params.model} on {experiment_name}, " + (
        f"params changed from the commit: {', '.join(changed)}" if changed else "params as committed"
    )
    run.set_tags({"tfpipe.training": training, "mlflow.note.content": training})
    search = setup.search
    if search is not None:
        run.set_tags({"search.chosen": search.chosen.name, "search.reason": search.reason[:5000]})
        # run.client is made on the run's own thread, after the run opened the store (its tracking URI).
        run.submit(lambda: tracking.log_child_runs(run.client, run.run_id, search.trials, search.chosen.name))
    run.log_params(
        {
            "resolved.train.model": setup.params.model,
            "resolved.train.augmentation": search.chosen.augmentation if search else "as set",
            "resolved.train.batch_size": setup.params.batch_size,
            "resolved.train.epochs": setup.params.epochs,
            "resolved.train.early_stopping_patience": setup.params.early_stopping_patience,
            "resolved.preprocess.image_height": setup.input_shape[0],
            "resolved.preprocess.image_width": setup.input_shape[1],
        }
    )


def train_as_chief(setup: Setup, all_params: Params) -> None:
    """Fits the phases inside the model's MLflow run (its calls queued on the run's own thread, which works while
    the model trains: tracking.BackgroundRun), then writes artifacts/train and the stage's metrics and plots."""
    params, experiment_name = setup.params, dataset_name(all_params)  # one MLflow experiment per dataset
    flat_params = json.loads(json.dumps(asdict(all_params)))
    changed = tracking.changed_params(flat_params)  # from the committed params.yaml (a `git show`)
    with tracking.background_stage_run(
        experiment_name, run_name=tracking.run_name(params.model, flat_params, changed), system_metrics=True
    ) as run:
        tensorboard, log_dir = start_tracking(
            run, all_params, params, setup.plan, setup.strategy, setup.phases, f"{params.model}-{experiment_name}"
        )
        describe_run(run, setup, changed, experiment_name)
        histories = setup.fit(log_dir, run, all_params.tracking.histogram_freq)
        model = setup.float32_model()
        shutil.rmtree(paths.CACHE / "train-backup" / setup.key, ignore_errors=True)  # the same key later: fresh
        if all_params.tracking.log_augmented_images:
            # After training, with an augmenter of its own (same settings and seed): logging
            # settings cannot change what the model was trained on (tracking is logging only).
            first = train_split(params, "none", range(1))
            log_augmented_batch(first, log_dir, all_params.tracking.log_augmented_images)
        frame = pd.concat(
            [history_frame(history, phase.name) for history, phase in zip(histories, setup.phases, strict=True)],
            ignore_index=True,
        )
        write_outputs(
            model,
            frame,
            setup.data,
            params,
            key=setup.key,
            run=run,
            experiment_name=experiment_name,
            tensorboard=tensorboard,
            search=setup.search,
        )
        (paths.CACHE / "train-search" / f"{setup.key}.json").unlink(missing_ok=True)  # like the backup: done
        run.submit(lambda: run.client.log_artifact(run.run_id, str(paths.TRAIN / "history.csv")))
        run.submit(lambda: run.client.log_artifacts(run.run_id, str(log_dir), artifact_path="tensorboard"))
    print(
        f"{paths.TRAIN}: {params.model} trained for {len(frame)} epochs on {setup.plan.device}; "
        f"MLflow run {run.info.run_id}"
    )


def main() -> None:
    all_params = load_params()
    setup = set_up(all_params)
    if setup.chief:
        train_as_chief(setup, all_params)
    else:
        train_as_worker(setup, all_params.tracking.histogram_freq)


if __name__ == "__main__":
    run_stage("train", main)
