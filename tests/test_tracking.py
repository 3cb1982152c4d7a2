"""Run status in every ending (finished, failed, SIGTERM, SIGKILL) and concurrent writers on SQLite."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from pipelines import tracking

ROOT = Path(__file__).resolve().parents[1]


def _status(run_id: str) -> str:
    return mlflow.get_run(run_id).info.status


def test_finished_and_failed(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("unit") as run:
        mlflow.log_metric("x", 1.0)
    assert _status(run.info.run_id) == "FINISHED"
    with pytest.raises(ZeroDivisionError):
        with tracking.stage_run("unit") as run:
            1 / 0
    assert _status(run.info.run_id) == "FAILED"


CHILD = """
import sys, time, mlflow
from pipelines import tracking
with tracking.stage_run("unit") as run:
    print(run.info.run_id, flush=True)
    time.sleep(60)
"""


def _start_child(tmp_path, mlflow_store):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def test_sigterm_ends_the_run_killed(mlflow_store, tmp_path):
    child, run_id = _start_child(tmp_path, mlflow_store)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert _status(run_id) == "KILLED"


def test_a_run_left_running_by_sigkill_is_marked_on_the_next_start(mlflow_store, tmp_path, monkeypatch):
    child, run_id = _start_child(tmp_path, mlflow_store)
    child.kill()
    child.wait(timeout=30)
    assert _status(run_id) == "RUNNING"
    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("unit"):
        pass
    assert _status(run_id) == "KILLED"
    assert "died without ending the run" in mlflow.get_run(run_id).data.tags["tfpipe.stale"]


WRITER = """
import mlflow, sys
mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run(experiment_id=sys.argv[2]) as run:
    for step in range(1000):
        mlflow.log_metric("value", float(step), step=step)
print(run.info.run_id)
"""


def test_two_processes_log_1000_metrics_each_without_database_locked(mlflow_store, tmp_path):
    mlflow.set_tracking_uri(mlflow_store)
    experiment_id = mlflow.create_experiment("concurrent")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, mlflow_store, experiment_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [writer.communicate(timeout=300) for writer in writers]
    for writer, (stdout, stderr) in zip(writers, outputs):
        assert writer.returncode == 0, stderr[-2000:]
        assert "database is locked" not in stderr
    for stdout, _ in outputs:
        history = mlflow.MlflowClient().get_metric_history(stdout.strip().splitlines()[-1], "value")
        assert len(history) == 1000
