"""What a training run records besides its metrics: lineage tags (git, dvc.lock), its name and which params changed,
the dataset, HParams for TensorBoard, the run reference the later stages read, and the search's candidates as child
runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from tfpipe import paths
from tfpipe.stale_runs import process_tags
from tfpipe.tracking import project_root


def log_child_runs(client, parent_run_id: str, trials, chosen: str, metric: str = "val_accuracy") -> list[str]:
    """Each search candidate (components/train_search.Trial) as a finished child run of the stage's run, with its
    params, per-epoch metrics and real start and end times: the MLflow UI compares them side by side. Created and
    ended in one call, with the process tags, so none is ever left RUNNING. `metric`: what a trial was scored on."""
    from mlflow.entities import Metric, Param, RunTag

    parent = client.get_run(parent_run_id)
    run_ids = []
    for trial in trials:
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "mlflow.runName": f"search: {trial.candidate.name}",
            "search.round": str(trial.round),
            "search.chosen": str(trial.candidate.name == chosen).lower(),
            **process_tags(),
        }
        child = client.create_run(parent.info.experiment_id, start_time=trial.started_ms, tags=tags)
        try:
            metrics = [
                Metric(name, value, trial.started_ms + step, step)
                for step, row in enumerate(trial.history)
                for name, value in row.items()
            ]
            metrics += [
                Metric(f"search_{metric}", trial.val_score, trial.ended_ms, 0),
                Metric("search_seconds", trial.seconds, trial.ended_ms, 0),
                Metric("search_images_per_second", trial.images_per_second, trial.ended_ms, 0),
            ]
            params = [
                Param("train.model", trial.candidate.model),
                Param("train.augmentation", trial.candidate.augmentation),
                Param("search.epochs", str(len(trial.history))),
            ]
            client.log_batch(
                child.info.run_id,
                metrics=[metric for metric in metrics if metric.value == metric.value],  # NaN: a diverged candidate
                params=params,
                tags=[RunTag("mlflow.note.content", f"search candidate: {trial.candidate.name}")],
            )
        finally:
            client.set_terminated(child.info.run_id, status="FINISHED", end_time=trial.ended_ms)
        run_ids.append(child.info.run_id)
    return run_ids


# Tracked files the pipeline itself rewrites (DVC's lock, the `cache: false` metrics and plots): a run changes them,
# so they never make the code a run ran "dirty" (a fresh `make repro` would tag every run git.dirty=true).
PIPELINE_WRITES = (
    "dvc.lock",
    *(paths.INGEST_METRICS, paths.TRAIN_METRICS, paths.EVALUATE_METRICS, paths.EXPORT_METRICS),
    *(paths.HISTORY_PLOT, paths.CONFUSION_PLOT),
)


def git_tags() -> dict[str, str]:
    """Git commit and dirty flag (a tracked file changed since the commit, but those the pipeline writes), and the
    data.dvc hash, so a run can be traced to its inputs."""
    tags = {}
    try:
        tags["git.commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        excluded = [f":(exclude){Path(path).as_posix()}" for path in PIPELINE_WRITES]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        tags["git.dirty"] = str(bool(dirty.strip())).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["git.commit"] = "unknown"
    data_dvc = Path("data.dvc")
    if data_dvc.is_file():
        import yaml

        with data_dvc.open() as stream:
            outs = (yaml.safe_load(stream) or {}).get("outs", [{}])
        tags["data.dvc.md5"] = str(outs[0].get("md5", "unknown"))
    return tags


def dvc_lock_tags(stages=("ingest", "preprocess"), lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    """The md5 of each output of the upstream stages in dvc.lock ('dvc.lock.ingest.data/prepared'):
    the exact prepared data and preprocessing model a run trained on, as DVC recorded them."""
    if not lock_file.is_file():
        return {}
    import yaml

    with lock_file.open() as stream:
        locked = (yaml.safe_load(stream) or {}).get("stages", {})
    return {
        f"dvc.lock.{stage}.{out['path']}": str(out.get("md5", "unknown"))
        for stage in stages
        for out in locked.get(stage, {}).get("outs", [])
    }


def changed_params(params: dict, committed: str = "HEAD:params.yaml") -> list[str]:
    """The flattened params that differ from params.yaml as committed, ["train.learning_rate=0.004"]; [] when
    nothing differs or there is no commit to compare with."""
    try:
        text = subprocess.run(["git", "show", committed], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    from tfpipe.config import ParamsError
    from tfpipe.params_file import parse_params, yaml_load

    try:
        before = flatten("", json.loads(json.dumps(asdict(parse_params(yaml_load(text) or {})), default=str)))
    except (ParamsError, ValueError):
        return []
    now = flatten("", params)
    return [f"{key}={value}" for key, value in now.items() if before.get(key) != value]


def run_name(model: str, params: dict, changed: list[str] | None = None) -> str:
    """What tells this run apart in the MLflow UI: the DVC experiment's name when `dvc exp run` runs it, else the
    params that differ from the committed params.yaml (`changed`, when the caller has them: changed_params), else
    the model and a short hash of the params."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    changed = changed_params(params) if changed is None else changed
    if changed:
        name = ", ".join(changed)
        return name if len(name) <= 80 else f"{name[:77]}..."
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:7]
    return f"{model}-{digest}"


def set_lineage_tags(upstream_stages: tuple[str, ...], tags: dict[str, str]) -> None:
    """Tags the active run with git_tags(), dvc_lock_tags(upstream_stages) and `tags`."""
    import mlflow

    mlflow.set_tags({**git_tags(), **dvc_lock_tags(upstream_stages), **tags})


def log_dataset(examples: Path, name: str, context: str = "training", targets: str = "label") -> None:
    """The per-example table ingest wrote (images: examples.csv with file, label, split, sha256...; a table: its train
    split's Parquet file) as the run's mlflow.data input."""
    import warnings

    import mlflow
    import pandas as pd

    frame = pd.read_parquet(examples) if examples.suffix == ".parquet" else pd.read_csv(examples)
    with warnings.catch_warnings():  # MLflow registers two local-file sources and warns that it picked one
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=str(examples.resolve()), targets=targets, name=name)
    mlflow.log_input(dataset, context=context)


def flatten(prefix: str, value, as_text: bool = True) -> dict:
    """{'train': {'epochs': 3}} -> {'train.epochs': '3'} for mlflow.log_params (as_text=False: {'train.epochs': 3})."""
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), item, as_text))
        return flat
    if not as_text and isinstance(value, (bool, int, float, str)):
        return {prefix: value}
    return {
        prefix: json.dumps(value) if isinstance(value, (list, tuple)) or (value is None and not as_text) else str(value)
    }


def log_hparams(log_dir: Path, hparams: dict, trial_id: str) -> None:
    """Writes the run's params into its TensorBoard directory for the HParams dashboard. The session
    is the run's directory itself, so its train/, validation/ and evaluate/ scalars are its metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hp.hparams(hparams, trial_id=trial_id)


def tensorboard_name(run_name: str) -> str:
    """'20261123-004512-lenet5-mnist_5k-3fa9c1': the train run's TensorBoard directory, named before the
    MLflow run id exists (the run starts in the background); the run's `tensorboard.dir` tag links the two."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{run_name.replace('/', '-')}-{secrets.token_hex(3)}"


def tensorboard_dir(name: str) -> Path:
    """One TensorBoard directory per run, kept across runs so `make tensorboard` compares them."""
    return project_root() / paths.TENSORBOARD / name


def write_run_reference(path: Path, run, experiment_name: str, tensorboard: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        json.dump(
            {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "experiment_name": experiment_name,
                "tensorboard": tensorboard,
            },
            stream,
            indent=2,
        )


def read_run_reference(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run reference not found; run the train stage first (dvc repro train)")
    with path.open() as stream:
        return json.load(stream)


def mlflow_epoch_callback(run):
    """A Keras callback that queues every epoch's metrics (loss, accuracy, val_*, lr) on the run (a tracking
    BackgroundRun), and
    stops training with the error if tracking has failed."""
    import tf_keras as keras

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            run.raise_if_failed()
            metrics = {key: float(value) for key, value in (logs or {}).items() if value is not None}
            if metrics:
                run.log_metrics(metrics, step=epoch)

    return MlflowEpochLogger()


def metric_keys(prefix: str, names: list[str]) -> dict[str, str]:
    """An MLflow metric name for each of `names` (class names, columns: a user's text) after `prefix`: characters MLflow
    refuses (`,`, `(`, `#`, `'`, `+`, `/` ...) become `_`, and names that then collide get their position appended."""
    import re

    keys, used = {}, set()
    for index, name in enumerate(names):
        key = prefix + re.sub(r"[^\w\-. ]", "_", str(name)).strip()[:200]
        while key in used:  # `a,b` and `a;b`; and a third name that reads like the second's renamed key
            key = f"{key}_{index}"
        used.add(key)
        keys[name] = key
    return keys
