"""A copied project keeps its artifacts in its own MLflow store (tfpipe/store_location.py): MLflow records absolute
artifact paths, so a copy of a project with its mlruns/ (tar, rsync, cp -r) would log into the original's. Opening
the copy's store moves every path recorded under the original's folder into the copy's; two checkouts sharing one
mlruns/ through a symlink share one store and write into it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tfpipe import store_location, tracking


def log_run(project: Path, monkeypatch, text: str) -> str:
    """What a stage does to the project's local store: configure it, log an artifact into a run, register a model
    version from the run; the run's id."""
    import mlflow

    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store (configure sets it)
    experiment_id = tracking.configure("demo")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text(text, "notes/text.txt")
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    mlflow.register_model(f"runs:/{run.info.run_id}/model", "demo-model")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return run.info.run_id


def recorded_places(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [
            value
            for table, column in store_location.COLUMNS
            if table in {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            for (value,) in connection.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL')
        ]


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.fixture
def original(tmp_path, monkeypatch):
    project = tmp_path / "original"
    project.mkdir()
    log_run(project, monkeypatch, "first")
    return project


def test_a_copy_logs_into_its_own_store_and_the_original_is_untouched(original, tmp_path, monkeypatch):
    import mlflow

    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)  # what tar or rsync does
    before = files(original / "mlruns")
    run_id = log_run(copy, monkeypatch, "second")
    assert files(original / "mlruns") == before  # no artifact, no row: the original's store is as it was
    places = recorded_places(copy / "mlruns/mlflow.db")
    assert places and all(str(copy) in place and str(original) not in place for place in places), places
    assert (copy / f"mlruns/artifacts/demo/{run_id}/artifacts/notes/text.txt").read_text() == "second"
    # The copied history reads from the copy: the first run's artifact and the registered model's source.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri())
    client = mlflow.MlflowClient()
    first = [run for run in client.search_runs(["1"]) if run.info.run_id != run_id][0]
    assert Path(client.download_artifacts(first.info.run_id, "notes/text.txt")).read_text() == "first"
    assert str(copy) in client.get_model_version("demo-model", "1").source


def test_two_checkouts_sharing_one_mlruns_share_one_store(original, tmp_path, monkeypatch):
    second = tmp_path / "second"
    second.mkdir()
    (second / "mlruns").symlink_to(original / "mlruns")
    places = recorded_places(original / "mlruns/mlflow.db")
    run_id = log_run(second, monkeypatch, "shared")
    assert set(places) <= set(recorded_places(original / "mlruns/mlflow.db"))  # nothing moved
    assert (original / f"mlruns/artifacts/demo/{run_id}/artifacts/notes/text.txt").read_text() == "shared"


def test_a_store_of_a_server_or_a_missing_database_is_left_alone(tmp_path):
    assert store_location.keep_in_store(tmp_path / "mlruns/mlflow.db") == []
    assert store_location._local_path("http://tracking.example/artifacts") is None
