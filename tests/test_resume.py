"""Kill and resume: a SIGKILLed training continues from its last completed epoch; a corrupted backup fails loudly."""

import json
import os
import shutil
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
  dropout_rate: 0.0     # no random layers: a resumed run is bit-identical
  augmentation: {{rotation: 0.0, zoom: 0.0, translation: 0.0}}
tracking:
  log_augmented_images: 0
"""


@pytest.fixture
def workspace(tmp_path, mlflow_store):
    """Enough toy data that one epoch takes a noticeable time, so the test can kill inside epoch 3."""
    images, labels = make_images(num_classes=4, per_class=150, shape=(28, 28, 1))
    write_prepared(tmp_path / "data/prepared", images, labels, ["a", "b", "c", "d"])
    (tmp_path / "params.yaml").write_text(PARAMS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    subprocess.run(
        [sys.executable, "-m", "components.preprocess"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    return tmp_path, env


def _train(directory: Path, env: dict, kill_after_epochs: int | None = None) -> subprocess.CompletedProcess | None:
    """Runs the train stage; with kill_after_epochs, SIGKILLs it once that many epochs are backed up."""
    if kill_after_epochs is None:
        result = subprocess.run(
            [sys.executable, "-m", "components.train"], cwd=directory, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result
    child = subprocess.Popen(
        [sys.executable, "-m", "components.train"],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        states = list((directory / ".cache/train-backup").glob("*/early_stopping/state.json"))
        # The last thing an epoch end writes: epochs 1..k are backed up, epoch k+1 is running.
        if any(
            json.loads(state.read_text() or "{}").get("epoch", -1) >= kill_after_epochs - 1
            for state in states
            if state.stat().st_size
        ):
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert child.wait(timeout=60) == -signal.SIGKILL, "training finished before it could be killed"
    return None


def _weights(directory: Path) -> list[np.ndarray]:
    from models.loading import load_trained_model  # the custom layers registered, whatever ran before in this worker

    return load_trained_model(directory / "artifacts/train").get_weights()


def _runs(experiment_name: str = "mnist_5k") -> list:
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]) if experiment else []


@pytest.mark.e2e
def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(workspace):
    """deterministic: true on CPU, no dropout or augmentation: bit-identical weights. Each epoch's shuffle
    order is a function of the epoch (input_pipeline.epoch_seed) and EarlyStopping's state is in the backup.
    (Dropout and augmentation draw from Keras' random layers, whose state is not in the backup: a resumed
    run with them is as good, not identical.)"""
    directory, env = workspace
    _train(directory, env)
    uninterrupted = _weights(directory)

    _train(directory, env, kill_after_epochs=2)
    killed_run = _runs()[-1]
    assert killed_run.info.status == "RUNNING"  # until the next stage opens the store
    assert any((directory / ".cache/train-backup").rglob("checkpoint"))
    resumed = _train(directory, env)
    assert "resuming from the backup" in resumed.stdout and "epoch 3 onwards" in resumed.stdout
    runs = _runs()
    assert mlflow.get_run(killed_run.info.run_id).info.status == "KILLED"
    new_run = runs[-1]
    assert new_run.data.tags["resumed_from_epoch"] == "3"
    assert [point.step for point in mlflow.MlflowClient().get_metric_history(new_run.info.run_id, "loss")] == list(
        range(2, EPOCHS)
    )
    history = pd.read_csv(directory / "artifacts/train/history.csv")
    assert history["epoch"].tolist() == list(range(3, EPOCHS + 1))
    assert not any((directory / ".cache/train-backup").rglob("*.index")), "the backup must be removed after success"
    weights = _weights(directory)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, weights, strict=True)), (
        "resumed weights differ from the uninterrupted run's"
    )


@pytest.mark.e2e
def test_a_backup_of_other_data_is_never_resumed(workspace):
    """Killed, then the data changes (here: another split): the rerun starts at epoch 1, not from the stale backup."""
    directory, env = workspace
    _train(directory, env, kill_after_epochs=2)
    images, labels = make_images(num_classes=4, per_class=150, shape=(28, 28, 1))
    shutil.rmtree(directory / "data/prepared")
    write_prepared(directory / "data/prepared", images, labels, ["a", "b", "c", "d"], seed=1)
    subprocess.run(
        [sys.executable, "-m", "components.preprocess"], cwd=directory, env=env, check=True, capture_output=True
    )
    fresh = _train(directory, env)
    assert "resuming" not in fresh.stdout
    assert pd.read_csv(directory / "artifacts/train/history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert "resumed_from_epoch" not in _runs()[-1].data.tags


def test_the_run_key_follows_data_params_and_code(workspace, tmp_path):
    from components.train import stage as train
    from tfpipe import lineage
    from tfpipe.params_file import load_params, parse_params, yaml_load

    directory, _ = workspace
    os.chdir(directory)
    try:
        params = load_params()
        key = train.run_key(params)
        assert train.run_key(params) == key
        changed = parse_params({**yaml_load(Path("params.yaml").read_text()), "tracking": {"histogram_freq": 3}})
        assert train.run_key(changed) == key  # logging only
        assert (
            train.run_key(
                parse_params(
                    {
                        "train": {**yaml_load(Path("params.yaml").read_text())["train"], "seed": 7},
                        "preprocess": {"image_height": 28, "image_width": 28},
                    }
                )
            )
            != key
        )
        statistics = Path("artifacts/preprocess/statistics.json")
        statistics.write_text(statistics.read_text().replace('"num_images"', '"num_images" ', 1))
        assert train.run_key(params) != key
    finally:
        os.chdir(ROOT)
    for package in lineage.PACKAGES:  # the code: a copy of the project's modules, one of them edited
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    before = lineage.code_digest("components.train", tmp_path)
    with (tmp_path / "tfpipe/records.py").open("a") as stream:
        stream.write("\n# edited\n")
    assert lineage.code_digest("components.train", tmp_path) != before
    with (tmp_path / "pipelines/predict.py").open("a") as stream:  # not imported by train
        stream.write("\n# edited\n")
    assert lineage.code_digest("components.train", tmp_path) == lineage.code_digest("components.train", tmp_path)


def test_cache_auto_keeps_the_splits_in_memory_only_while_they_fit_the_budget(monkeypatch):
    from components.train import resume

    manifest = {"image_shape": [32, 32, 3], "splits": {"train": {"count": 40_000}, "val": {"count": 5_000}}}
    assert resume.resolve_cache("auto", manifest) == "memory"  # 132 MiB
    monkeypatch.setattr(resume, "MEMORY_CACHE_BYTES", 100 * 2**20)
    assert resume.resolve_cache("auto", manifest) == "none"
    assert resume.resolve_cache("memory", manifest) == "memory"  # the user's choice stands
    assert 0 < resume.memory_cache_budget() <= 100 * 2**20


def test_a_tf_data_cache_file_is_keyed_and_a_killed_runs_partial_cache_removed(tmp_path):
    from components.train.resume import cache_location

    assert cache_location("memory", "abc") == "memory" and cache_location("none", "abc") == "none"
    prefix = tmp_path / "cache/train"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache/train-abc_0.lockfile").write_text("")  # a killed run's
    (tmp_path / "cache/train-abc.data-00000-of-00001").write_text("partial")
    (tmp_path / "cache/train-old.index").write_text("")  # another key's complete cache: not ours to touch
    assert cache_location(str(prefix), "abc") == f"{prefix}-abc"
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["train-old.index"]


def test_corrupted_backup_fails_loudly_instead_of_restarting(workspace):
    from components.train import stage as train
    from tfpipe.params_file import load_params

    directory, env = workspace
    os.chdir(directory)
    try:
        backup = train.paths.CACHE / "train-backup" / train.run_key(load_params())
    finally:
        os.chdir(ROOT)
    chief = directory / backup / "chief"
    chief.mkdir(parents=True)
    (chief / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    (chief / "ckpt-2.index").write_bytes(b"\x00garbage" * 10)
    (chief / "ckpt-2.data-00000-of-00001").write_bytes(np.random.default_rng(0).bytes(100))
    result = subprocess.run(
        [sys.executable, "-m", "components.train"], cwd=directory, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "training backup is corrupted" in result.stderr and "delete" in result.stderr
    assert not (directory / "artifacts/train").exists()
