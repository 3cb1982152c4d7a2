"""MLflow and TensorBoard set-up: the one place that knows where runs are stored.

Logging is explicit, not autolog: mlflow.tensorflow.autolog targets Keras 3 and would log a second
copy of the model from every fit() (the pruning fine-tune included); we log params once from
params.yaml, per-epoch metrics from a callback, and models only from the export stage.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import mlflow

MLRUNS_DIR = Path("mlruns")
TENSORBOARD_DIR = Path("logs/tensorboard")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set (a team's server), else the SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(MLRUNS_DIR / 'mlflow.db').resolve()}"


def configure(experiment_name: str) -> str:
    """Points MLflow at the store and makes sure the experiment exists; returns its id."""
    MLRUNS_DIR.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    # With the SQLite store MLflow puts artifacts beside the database: mlruns/<experiment id>/.
    return mlflow.create_experiment(experiment_name)


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stage_run(experiment_name: str, run_id: str | None = None, run_name: str | None = None):
    """Starts (train) or resumes (evaluate, export) the model's run.

    An exception or SIGTERM ends the run FAILED; mlflow.start_run's context manager only marks
    it FINISHED when the block completes.
    """
    experiment_id = configure(experiment_name)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id, run_name=run_name) as run:
            yield run
    finally:
        signal.signal(signal.SIGTERM, previous)


def git_tags() -> dict[str, str]:
    """Git commit and dirty flag, and the data.dvc hash, so a run can be traced to its inputs."""
    tags = {}
    try:
        tags["git.commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True).stdout
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


def flatten(prefix: str, value) -> dict[str, str]:
    """{'train': {'epochs': 3}} -> {'train.epochs': '3'} for mlflow.log_params."""
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return flat
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


def tensorboard_dir(run_id: str) -> Path:
    """One TensorBoard directory per run, kept across runs so `make tensorboard` compares them."""
    return TENSORBOARD_DIR / run_id


def write_run_reference(path: Path, run, experiment_name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        json.dump({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "experiment_name": experiment_name}, stream, indent=2)


def read_run_reference(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run reference not found; run the train stage first (dvc repro train)")
    with path.open() as stream:
        return json.load(stream)


def mlflow_epoch_callback():
    """A Keras callback that logs every epoch's metrics (loss, accuracy, val_*, lr) to the active run."""
    import tf_keras as keras

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {key: float(value) for key, value in (logs or {}).items() if value is not None}
            if metrics:
                mlflow.log_metrics(metrics, step=epoch)

    return MlflowEpochLogger()
