"""Run status in every ending (finished, failed, SIGTERM, SIGKILL) and concurrent writers on SQLite."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tfpipe import run_records, tracking

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
            1 / 0  # noqa: B018 (the expression raises ZeroDivisionError on purpose)
    assert _status(run.info.run_id) == "FAILED"


CHILD = """
import sys, time, mlflow
from tfpipe import tracking
with getattr(tracking, sys.argv[1])("unit") as run:  # stage_run or background_stage_run
    print(run.info.run_id, flush=True)
    time.sleep(60)
"""


def _start_child(tmp_path, mlflow_store, run_context: str = "stage_run"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, run_context], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    return child, child.stdout.readline().strip()


def test_sigterm_ends_the_run_killed(mlflow_store, tmp_path):
    child, run_id = _start_child(tmp_path, mlflow_store)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert _status(run_id) == "KILLED"


def _watchers(run_id: str) -> list:
    import psutil

    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if "tfpipe.run_watch" in (process.info["cmdline"] or []) and run_id in (process.info["cmdline"] or [])
    ]


def _wait_for_status(run_id: str, status: str, seconds: float = 60) -> str:
    import time

    deadline = time.monotonic() + seconds
    while _status(run_id) != status and time.monotonic() < deadline:
        time.sleep(0.2)
    return _status(run_id)


@pytest.mark.parametrize("run_context", ["stage_run", "background_stage_run"])
def test_a_sigkilled_stage_run_is_marked_killed_by_its_watcher_with_no_other_code_running(
    mlflow_store, tmp_path, run_context
):
    """No later stage, `make ui` or sweep runs here: only the watcher the stage started can end the run."""
    child, run_id = _start_child(tmp_path, mlflow_store, run_context)
    assert len(_watchers(run_id)) == 1
    child.kill()
    child.wait(timeout=30)
    assert _wait_for_status(run_id, "KILLED") == "KILLED"
    assert "marked KILLED by its watcher" in mlflow.get_run(run_id).data.tags["tfpipe.stale"]
    assert "marked KILLED" in (tmp_path / ".cache/run_watch.log").read_text()


def test_a_run_that_ends_itself_leaves_no_watcher_and_its_status_alone(mlflow_store, tmp_path, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("unit") as run:
        run_id = run.info.run_id
        # Between its fork and its exec the watcher still shows the parent's command line: wait for the exec.
        deadline = time.monotonic() + 30
        while not _watchers(run_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_watchers(run_id)) == 1
    deadline = time.monotonic() + 30
    while _watchers(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _watchers(run_id) and _status(run_id) == "FINISHED"
    assert "tfpipe.stale" not in mlflow.get_run(run_id).data.tags


def test_a_run_left_running_when_its_watcher_died_too_is_marked_on_the_next_start(mlflow_store, tmp_path, monkeypatch):
    """A reboot kills the stage and its watcher: the next stage (or `make ui`) marks the run."""
    child, run_id = _start_child(tmp_path, mlflow_store)
    for watcher in _watchers(run_id):
        watcher.kill()
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
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, mlflow_store, experiment_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [writer.communicate(timeout=300) for writer in writers]
    for writer, (_stdout, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr[-2000:]
        assert "database is locked" not in stderr
    for stdout, _ in outputs:
        history = mlflow.MlflowClient().get_metric_history(stdout.strip().splitlines()[-1], "value")
        assert len(history) == 1000


def test_a_background_run_writes_in_order_on_its_own_thread_and_ends_finished(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tracking.background_stage_run("unit", run_name="background") as run:
        for step in range(5):
            run.log_metrics({"value": float(step)}, step=step)
        run.set_tags({"stage": "train"})
        assert mlflow.active_run() is None  # the run is the worker thread's, not this one's
    finished = mlflow.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.info.run_name == "background"
    assert finished.data.tags["stage"] == "train"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "value")
    assert [(point.step, point.value) for point in history] == [(step, float(step)) for step in range(5)]


def test_a_failed_background_call_fails_the_stage_and_the_run(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="MLflow tracking failed .*No such file.*missing.txt"):
        with tracking.background_stage_run("unit") as run:
            run.submit(lambda: run.client.log_artifact(run.run_id, str(tmp_path / "missing.txt"))).exception()
            run.set_tags({"after": "failure"})  # skipped: the queue stops at the first failure
            run.raise_if_failed()  # what the epoch callback does: training stops at the next epoch end
    failed = mlflow.get_run(run.info.run_id)
    assert failed.info.status == "FAILED" and "after" not in failed.data.tags


def test_an_error_in_the_stage_ends_the_background_run_failed(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with tracking.background_stage_run("unit") as run:
            1 / 0  # noqa: B018 (the expression raises ZeroDivisionError on purpose)
    assert _status(run.info.run_id) == "FAILED"


def test_a_store_that_cannot_be_opened_fails_the_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-a-directory").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/not-a-directory/mlflow.db")
    with pytest.raises(RuntimeError, match="MLflow tracking failed"):
        with tracking.background_stage_run("unit"):
            pass


def test_sigterm_ends_a_background_run_killed(mlflow_store, tmp_path):
    child, run_id = _start_child(tmp_path, mlflow_store, "background_stage_run")
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert _status(run_id) == "KILLED"


def _left_running(experiment: str, **tags) -> str:
    """A run left RUNNING with the given owner tags, as a SIGKILLed stage leaves it."""
    client = mlflow.MlflowClient()
    experiment_id = tracking.configure(experiment)
    run = client.create_run(experiment_id, tags=tags)
    return run.info.run_id


def test_stale_runs_of_every_experiment_are_marked_and_a_reused_pid_does_not_hide_one(
    mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    me = tracking.process_tags()
    reused = _left_running(
        "other-dataset", **{**me, "tfpipe.process_start": f"{float(me['tfpipe.process_start']) - 3600:.2f}"}
    )
    alive = _left_running("other-dataset", **me)  # this very process: still running
    elsewhere = _left_running("other-dataset", **{**me, "tfpipe.host": "another-host"})  # only that host can tell
    with tracking.stage_run("unit"):  # a stage of another experiment opens the store
        pass
    assert (
        _status(reused) == "KILLED"
        and "died without ending the run" in mlflow.get_run(reused).data.tags["tfpipe.stale"]
    )
    assert _status(alive) == "RUNNING" and _status(elsewhere) == "RUNNING"


def test_mark_stale_command_is_what_make_ui_runs_first(tmp_path):
    """The stage and its watcher killed (a reboot), then `dvc repro` restores outputs from the run cache and runs no
    stage: the next thing that opens the store, `make ui` included, marks the killed run."""
    child, run_id = _start_child(tmp_path, f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    for watcher in _watchers(run_id):
        watcher.kill()
    child.kill()
    child.wait(timeout=30)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.store", "mark-stale", "--store", str(tmp_path / "mlruns")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"1 run(s) left RUNNING by a killed process marked KILLED: {run_id}" in result.stdout
    assert (
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}").get_run(run_id).info.status
        == "KILLED"
    )
    assert "pipelines.store mark-stale --store" in (ROOT / "Makefile").read_text().split("\nui:")[1].split("\n\n")[0]


def test_runs_are_named_by_what_differs(tmp_path, monkeypatch):
    import subprocess

    import yaml

    from tfpipe.params_file import parse_params

    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"learning_rate": 0.002}}))
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "params.yaml"], check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "params"], check=True)
    from dataclasses import asdict

    same = json.loads(json.dumps(asdict(parse_params({"train": {"learning_rate": 0.002}}))))
    changed = json.loads(json.dumps(asdict(parse_params({"train": {"learning_rate": 0.004}}))))
    assert run_records.run_name("lenet5_s2d", same).startswith("lenet5_s2d-")
    assert run_records.run_name("lenet5_s2d", changed) == "train.learning_rate=0.004"
    monkeypatch.setenv("DVC_EXP_NAME", "gaunt-kern")
    assert run_records.run_name("lenet5_s2d", changed) == "gaunt-kern"
