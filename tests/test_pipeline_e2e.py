"""End to end: `dvc repro` in a temporary copy of the repository, as a new user would run it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

SMALL = {
    "train": {"epochs": 2, "early_stopping_patience": 2},
    "evaluate": {"min_accuracy": 0.5},
    "export": {"prune_epochs": 1, "representative_samples": 50},
}


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh clone-like copy: the tracked files only, a new git repo, the default data materialized."""
    repo = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], repo)
    committed_data_dvc = (repo / "data.dvc").read_text()
    run([sys.executable, "-m", "pipelines.materialize"], repo)
    assert (repo / "data.dvc").read_text() == committed_data_dvc, "materializing changed the committed data.dvc hash"
    set_params(repo, SMALL)
    run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


def test_repro_runs_every_stage_and_writes_the_promised_outputs(repo):
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert metrics["accuracy"] > 0.5
    assert (repo / "reports/ingest/data_docs/index.html").is_file()
    assert (repo / "artifacts/evaluate/blessing.json").is_file()
    assert list((repo / "artifacts/export").glob("*.tflite"))
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo).stdout
    assert "accuracy" in shown


def test_second_repro_runs_nothing_and_status_is_clean(repo):
    lock = (repo / "dvc.lock").read_bytes()
    second = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "didn't change, skipping" in second.stdout and "Running stage" not in second.stdout
    assert (repo / "dvc.lock").read_bytes() == lock
    status = run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout
    assert json.loads(status) == {}


def test_the_run_is_in_mlflow_with_per_epoch_metrics_and_tensorboard_logs(repo):
    import mlflow

    reference = json.loads((repo / "artifacts/train/run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    run_info = mlflow.get_run(reference["run_id"])
    assert run_info.info.status == "FINISHED"
    history = mlflow.MlflowClient().get_metric_history(reference["run_id"], "accuracy")
    assert len(history) == 2
    assert "test_accuracy" in run_info.data.metrics
    assert list((repo / "logs/tensorboard" / reference["run_id"]).rglob("events.out.tfevents.*"))


def test_savedmodel_classifies_uint8_images_and_int8_tflite_has_int8_io(repo):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from pipelines import records

    images, labels = records.load_split_arrays(repo / "data/prepared", "test")
    versions = sorted((repo / "artifacts/export/saved_model").glob("*/*"))
    assert versions and versions[-1].name.isdigit()
    serving = tf.saved_model.load(str(versions[-1])).signatures["serving_default"]
    outputs = serving(images=tf.constant(images[:32]))
    assert outputs["class_ids"].shape == (32,)
    assert (outputs["class_ids"].numpy() == labels[:32]).mean() > 0.5
    interpreter = Interpreter(model_path=str(repo / "artifacts/export/model_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_bad_params_stop_before_any_work_and_leave_the_lock_alone(repo):
    lock = (repo / "dvc.lock").read_bytes()
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"train": {"learning_rat": 0.1}})
        result = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        assert result.returncode != 0
        assert "train.learning_rat: unknown key" in result.stdout + result.stderr
        assert (repo / "dvc.lock").read_bytes() == lock
    finally:
        (repo / "params.yaml").write_text(original)
