"""What the train stage records in MLflow and TensorBoard: params, lineage tags, the ingest reports, the dataset,
HParams, the run's description, the search's child runs and an augmented batch.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

import tensorflow as tf

from components.train.schedule import (
    Phase,
    describe_phases,
)
from tfpipe import paths, run_records, tracking
from tfpipe.config import Params, TrainParams, dataset_name


def log_augmented_batch(train_data: tf.data.Dataset, log_dir: Path, count: int) -> None:
    """Shows what the model really sees: one augmented batch as images in TensorBoard."""
    images, _ = next(iter(train_data))
    with tf.summary.create_file_writer(str(log_dir / "images")).as_default():
        tf.summary.image(
            "augmented_train_batch", tf.cast(images[:count], tf.float32) / 255.0, step=0, max_outputs=count
        )


def start_tracking(
    run: tracking.BackgroundRun,
    all_params: Params,
    params: TrainParams,
    plan,
    strategy,
    phases: list[Phase],
    label: str,
    dataset: tuple[Path, str],
) -> tuple[str, Path]:
    """Queues the run's params, lineage tags, ingest reports, dataset (its file and target column) and HParams
    (params: train's, "auto" resolved); returns the TensorBoard name and directory."""
    tensorboard = run_records.tensorboard_name(label)
    log_dir = run_records.tensorboard_dir(tensorboard)
    run.log_params(run_records.flatten("", json.loads(json.dumps(asdict(all_params)))))
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
    run.submit(run_records.set_lineage_tags, ("ingest", "preprocess"), tags)
    if paths.INGEST_REPORTS.is_dir():
        run.submit(
            lambda: run.client.log_artifacts(run.run_id, str(paths.INGEST_REPORTS), artifact_path="ingest")
        )  # data docs, pictures
    if paths.INGEST_METRICS.is_file():
        run.submit(lambda: run.client.log_artifact(run.run_id, str(paths.INGEST_METRICS), artifact_path="ingest"))
    run.submit(run_records.log_dataset, dataset[0], name=dataset_name(all_params), targets=dataset[1])
    run.submit(
        run_records.log_hparams,
        log_dir,
        run_records.flatten("", {"data": {"source": all_params.data.source}, "train": asdict(params)}, as_text=False),
        trial_id=tensorboard,
    )
    return tensorboard, log_dir


def describe_run(run: tracking.BackgroundRun, setup, changed: list[str], experiment_name: str) -> None:
    """The run's description (what was trained, which params differ from the commit; evaluate adds the result)
    and the values "auto" resolved to. setup: the stage's Setup."""
    training = f"{setup.params.model} on {experiment_name}, " + (
        f"params changed from the commit: {', '.join(changed)}" if changed else "params as committed"
    )
    run.set_tags({"tfpipe.training": training, "mlflow.note.content": training})
    search = setup.search
    if search is not None:
        run.set_tags({"search.chosen": search.chosen.name, "search.reason": search.reason[:5000]})
        # run.client is made on the run's own thread, after the run opened the store (its tracking URI).
        run.submit(
            lambda: run_records.log_child_runs(run.client, run.run_id, search.trials, search.chosen.name, search.metric)
        )
    resolved = {"train.augmentation": "as set", **setup.resolved()}
    run.log_params({f"resolved.{name}": value for name, value in resolved.items()})
