"""Train stage: reads data/prepared and artifacts/preprocess, writes artifacts/train/ and an MLflow run.

The trained model takes the raw inputs (an image's pixels as float32 0..255; a table's columns by name) and contains
the preprocessing model, the model from the models/ registry, and a float32 head (softmax probabilities, or a
regression's value in the target's units). What differs by data kind (the input pipelines, the model around the
registry's, the objective) is in components/train/kinds/; the fit, the search, the tracking and the outputs are
shared here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components.train import hardware
from components.train import search as train_search
from components.train.candidates import search_candidates
from components.train.fit import TrainingData, fit_phases, history_frame
from components.train.kinds import KINDS
from components.train.resume import cache_location, run_key
from components.train.run_log import describe_run, start_tracking
from components.train.schedule import Phase, plan_phases
from tfpipe import paths, records, run_records, timing, tracking
from tfpipe.config import Params, TrainParams, dataset_name, model_candidates
from tfpipe.kinds import kind_of_prepared
from tfpipe.outputs import atomic_directory, file_sha256, write_csv, write_json
from tfpipe.params_file import load_params


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """False only on a MultiWorkerMirroredStrategy worker that is not the chief (task chief, or worker 0 without
    one)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


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
    description: dict | None = None,
) -> None:
    """artifacts/train (model, its sha256 and description, history, run reference), then the DVC metrics and plot.
    description: what the kind adds to model.json (an image's shape; a table's task and preprocessing statistics)."""
    chosen = (
        {
            "model": search.chosen.model,
            "augmentation": search.chosen.augmentation,
            "reason": search.reason,
            search.metric: {trial.candidate.name: round(trial.val_score, 4) for trial in search.trials},
        }
        if search is not None
        else None
    )
    monitor = (data.objective.monitor if data.objective else None) or "val_accuracy"
    final = {name: float(value) for name, value in frame.iloc[-1].items() if name not in ("epoch", "phase")}
    with atomic_directory(paths.TRAIN) as staging:
        model.save(staging / "model.keras")
        write_json(
            staging / "model.json",
            {
                "model": params.model,
                "class_names": data.class_names,
                **(description or {}),
                "model_sha256": file_sha256(staging / "model.keras"),
                "run_key": key,
                "run_id": run.info.run_id,
                "final_epoch": final,
                "epochs_run": int(len(frame)),
                "params": json.loads(json.dumps(asdict(params), default=str)),  # "auto" settled: what trained
                **({"search": chosen} if chosen else {}),
            },
        )
        write_csv(staging / "history.csv", frame)
        run_records.write_run_reference(staging / "run.json", run, experiment_name, tensorboard)
    write_csv(paths.HISTORY_PLOT, frame)
    # The headline a user compares across experiments; the rest (every final figure, the run, the
    # search's trials, the params as resolved) is in artifacts/train/model.json.
    write_json(
        paths.TRAIN_METRICS,
        {monitor: final.get(monitor), "epochs": int(len(frame))},
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
    manifest: dict  # data/prepared's: the kind, the classes, the splits
    search: train_search.SearchResult | None = None  # what train.model / augmentation: auto chose, and why

    @property
    def kind(self):
        """The data kind's module (components/train/kinds/)."""
        return KINDS[kind_of_prepared(self.manifest)]

    def resolved(self) -> dict:
        """What "auto" settled to, by param name: the run logs and prints it."""
        return {
            "train.model": self.params.model,
            "train.batch_size": self.params.batch_size,
            "train.epochs": self.params.epochs,
            "train.early_stopping_patience": self.params.early_stopping_patience,
            **self.kind.resolved_params(self.params, self.preprocessor),
            **({"train.augmentation": self.search.chosen.augmentation} if self.search else {}),
        }

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
        """The trained model as evaluate and export take it (a float32 copy after mixed precision; the kind's
        deployable: a text's takes strings)."""
        model = self.model
        if self.plan.precision_policy != "float32":
            model = self.kind.float32_copy(self.model, self.preprocessor, self.params, self.manifest)
        return self.kind.deployable(model, self.preprocessor)


def set_up(all_params: Params) -> Setup:
    """Seeds, hardware, the search when a choice is auto, data and model, in that order (the strategy must exist
    before any model)."""
    manifest = records.read_manifest(paths.PREPARED)
    kind = KINDS[kind_of_prepared(manifest)]
    params = kind.resolve(all_params.train, manifest)  # the "auto" settings
    kind.check(params, model_candidates(params))
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    plan = hardware.plan_hardware(params.mixed_precision, params.jit_compile, params.distribute)
    strategy = hardware.build_strategy(plan)
    chief, key = is_chief(strategy), run_key(all_params)
    search = None
    if train_search.needs_search(params):
        search = search_candidates(params, manifest, plan, strategy, key, kind)
        params = search.resolved(params)
        keras.utils.set_random_seed(params.seed)  # the chosen run starts from the seed, as without a search
    resolver = strategy.cluster_resolver
    worker_suffix = "" if chief else f"-{resolver.task_type}{resolver.task_id}"
    data = kind.prepare_data(
        params, manifest, plan, cache_location(kind.resolve_cache(params.cache, manifest), key, worker_suffix)
    )
    model, preprocessor = kind.build_model(params, plan, strategy, manifest)
    plan = hardware.settle_jit_compile(plan, model, params.jit_compile, params.deterministic)
    setup = Setup(params, plan_phases(params), plan, strategy, key, chief, data, model, preprocessor, manifest, search)
    print("resolved: " + ", ".join(f"{name} {value}" for name, value in setup.resolved().items()))
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


def train_as_chief(setup: Setup, all_params: Params) -> None:
    """Fits the phases inside the model's MLflow run (its calls queued on the run's own thread, which works while
    the model trains: tracking.BackgroundRun), then writes artifacts/train and the stage's metrics and plots."""
    params, experiment_name = setup.params, dataset_name(all_params)  # one MLflow experiment per dataset
    flat_params = json.loads(json.dumps(asdict(all_params)))
    changed = run_records.changed_params(flat_params)  # from the committed params.yaml (a `git show`)
    with tracking.background_stage_run(
        experiment_name, run_name=run_records.run_name(params.model, flat_params, changed), system_metrics=True
    ) as run:
        tensorboard, log_dir = start_tracking(
            run,
            all_params,
            params,
            setup.plan,
            setup.strategy,
            setup.phases,
            f"{params.model}-{experiment_name}",
            setup.kind.dataset_file(setup.manifest),
        )
        describe_run(run, setup, changed, experiment_name)
        timing.lap("MLflow run and TensorBoard: start")
        histories = setup.fit(log_dir, run, all_params.tracking.histogram_freq)
        timing.lap("fit (the epochs, callbacks included)")
        model = setup.float32_model()
        shutil.rmtree(paths.CACHE / "train-backup" / setup.key, ignore_errors=True)  # the same key later: fresh
        if all_params.tracking.log_augmented_images:
            # After training: logging settings cannot change what the model was trained on (tracking is logging only).
            setup.kind.log_examples(params, log_dir, all_params.tracking.log_augmented_images)
            timing.lap("TensorBoard: augmented batch")
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
            description=setup.kind.description(setup.manifest, params),
        )
        (paths.CACHE / "train-search" / f"{setup.key}.json").unlink(missing_ok=True)  # like the backup: done
        run.submit(lambda: run.client.log_artifact(run.run_id, str(paths.TRAIN / "history.csv")))
        run.submit(lambda: run.client.log_artifacts(run.run_id, str(log_dir), artifact_path="tensorboard"))
        timing.lap("outputs (model, plots, metrics)")
    timing.lap("MLflow: the queued logging finished")
    print(
        f"{paths.TRAIN}: {params.model} trained for {len(frame)} epochs on {setup.plan.device}; "
        f"MLflow run {run.info.run_id}"
    )


def main() -> None:
    timing.start()
    all_params = load_params()
    setup = set_up(all_params)
    timing.lap("set-up (params, data, model, search)")
    if setup.chief:
        train_as_chief(setup, all_params)
    else:
        train_as_worker(setup, all_params.tracking.histogram_freq)
    timing.write("train")
