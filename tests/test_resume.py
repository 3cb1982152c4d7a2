"""Kill and resume: a SIGKILLed training continues from its last completed epoch; a corrupted backup fails loudly."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_images, write_prepared

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6
PARAMS = f"""preprocess:
  image_height: 28
  image_width: 28
train:
  model: lenet5
  epochs: {EPOCHS}
  batch_size: 16
  early_stopping_patience: 100
  log_augmented_images: 0
"""


@pytest.fixture
def workspace(tmp_path, mlflow_store):
    """Enough toy data that one epoch takes a noticeable time, so the test can kill inside epoch 3."""
    images, labels = make_images(num_classes=4, per_class=150, shape=(28, 28, 1))
    write_prepared(tmp_path / "data/prepared", images, labels, ["a", "b", "c", "d"])
    (tmp_path / "params.yaml").write_text(PARAMS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    subprocess.run([sys.executable, "-m", "components.preprocess"], cwd=tmp_path, env=env, check=True, capture_output=True)
    return tmp_path, env


def _epochs_logged(experiment_name: str = "mnist_5k") -> dict[str, list[int]]:
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    return {run.info.run_id: [m.step for m in client.get_metric_history(run.info.run_id, "loss")] for run in client.search_runs([experiment.experiment_id])}


@pytest.mark.e2e
def test_sigkill_in_epoch_3_then_rerun_resumes_from_epoch_3(workspace):
    directory, env = workspace
    child = subprocess.Popen([sys.executable, "-m", "components.train"], cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if any(len(steps) >= 2 for steps in _epochs_logged().values()):  # epochs 1 and 2 done: epoch 3 is running
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert child.wait(timeout=60) == -signal.SIGKILL, "training finished before it could be killed"
    killed_run = next(iter(_epochs_logged()))
    assert not (directory / "artifacts/train").exists()
    assert any((directory / ".cache/train-backup").rglob("checkpoint"))

    resumed = subprocess.run([sys.executable, "-m", "components.train"], cwd=directory, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = _epochs_logged()
    new_run = next(run_id for run_id in runs if run_id != killed_run)
    first_resumed_step = runs[new_run][0]
    assert first_resumed_step >= 2, f"restarted from epoch {first_resumed_step + 1} instead of resuming"
    assert runs[new_run][-1] == EPOCHS - 1
    assert mlflow.get_run(killed_run).info.status == "KILLED"
    assert mlflow.get_run(new_run).data.tags["resumed_from_epoch"] == str(first_resumed_step + 1)
    history = pd.read_csv(directory / "artifacts/train/history.csv")
    assert history["epoch"].iloc[0] == first_resumed_step + 1 and history["epoch"].iloc[-1] == EPOCHS
    assert not any((directory / ".cache/train-backup").rglob("*.index")), "the backup must be removed after success"

    # An uninterrupted run of the same config reaches the same quality (tolerance: 0.05 accuracy).
    uninterrupted = subprocess.run([sys.executable, "-m", "components.train"], cwd=directory, env=env, capture_output=True, text=True)
    assert uninterrupted.returncode == 0
    final = json.loads((directory / "metrics/train.json").read_text())
    assert abs(final["val_accuracy"] - history["val_accuracy"].iloc[-1]) <= 0.05


def test_corrupted_backup_fails_loudly_instead_of_restarting(workspace):
    from components import train
    from pipelines.config import load_params

    directory, env = workspace
    os.chdir(directory)
    try:
        backup = train.CACHE_ROOT / "train-backup" / train.run_key(load_params())
    finally:
        os.chdir(ROOT)
    chief = directory / backup / "chief"
    chief.mkdir(parents=True)
    (chief / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    (chief / "ckpt-2.index").write_bytes(b"\x00garbage" * 10)
    (chief / "ckpt-2.data-00000-of-00001").write_bytes(np.random.default_rng(0).bytes(100))
    result = subprocess.run([sys.executable, "-m", "components.train"], cwd=directory, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "training backup is corrupted" in result.stderr and "delete" in result.stderr
    assert not (directory / "artifacts/train").exists()
