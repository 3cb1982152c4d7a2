"""A user's table, end to end from a fresh copy of the repository with the README's commands: materialize the file,
`dvc repro`, then predict and serve. A messy classification table, then a regression table in the same project (the
first champion untouched). Small tables and a short schedule: the demos' full runs are in `make bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.tables import messy_table, write_table
from tests.workspace import copy_repository, run, set_params

pytestmark = pytest.mark.e2e
# The test's time budget, not the data's: a shorter schedule and two variants (every variant: tests/test_export.py).
SHORT = {"train": {"epochs": 60}, "export": {"latency_runs": 20, "variants": ["float32", "int8"]}}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh copy where a messy classification table went through materialize and `dvc repro`."""
    repo = copy_repository(tmp_path_factory.mktemp("tables") / "repo", materialize=False)
    source = write_table(messy_table(360, seed=1), repo.parent / "customers.csv")
    materialized = run(
        [sys.executable, "-m", "pipelines.materialize", "--source", "file", "--from", str(source), "--target", "churn"],
        repo,
    )
    assert "note: target" not in materialized.stdout and "customer_id" in materialized.stdout
    set_params(repo, SHORT)
    run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / name).read_text())


def test_a_messy_table_is_validated_trained_gated_and_promoted(project):
    ingest = read(project, "metrics/ingest.json")
    assert ingest["copies_dropped"] == 1 and ingest["missing_target"] == 2 and ingest["classes"] == 2
    evaluated = read(project, "metrics/evaluate.json")
    assert evaluated["blessed"] is True and evaluated["accuracy"] >= evaluated["baseline"]
    summary = read(project, "artifacts/export/summary.json")
    assert summary["registered_model"] == "customers-classifier" and summary["promoted"] is True
    assert summary["tflite_with_encoding"]["agreement"] >= 0.99
    card = (project / "artifacts/export/model_card.md").read_text()
    assert "A classifier of 2 classes (no, yes) from rows" in card and "signup (date)" in card
    for name in ("encoding.json", "labels.txt", "model_int8.tflite", "report.md"):
        assert (project / "artifacts/export" / name).is_file(), name


def test_predict_writes_one_prediction_a_row_from_every_model_form(project):
    rows = messy_table(60, seed=7).drop(columns=["churn"])
    rows.loc[2, "plan"] = "platinum"  # a category the model never saw: its out-of-vocabulary slot
    csv = write_table(rows, project.parent / "new.csv")
    saved_model = next((project / "artifacts/export/saved_model/customers-classifier").iterdir())
    outputs = {}
    for model in (str(saved_model), "artifacts/export/model_int8.tflite", "models:/customers-classifier@champion"):
        result = run([sys.executable, "-m", "pipelines.predict", "--model", model, str(csv)], project)
        outputs[model] = pd.read_csv(pd.io.common.StringIO(result.stdout))
        assert outputs[model]["row"].tolist() == list(range(1, len(rows) + 1)), model
        assert set(outputs[model]["prediction"]) <= {"no", "yes"}
    assert (
        outputs[str(saved_model)]["prediction"] == outputs["models:/customers-classifier@champion"]["prediction"]
    ).all()
    rows.loc[4, "age"] = "forty"
    bad = run(
        [
            sys.executable,
            "-m",
            "pipelines.predict",
            "--model",
            str(saved_model),
            str(write_table(rows, project.parent / "bad.csv")),
        ],
        project,
        check=False,
    )
    assert bad.returncode == 1 and "column 'age': 1 cell(s) are not numbers: row 5 ('forty')" in bad.stderr


def test_the_registered_model_takes_the_files_columns_as_a_dataframe(project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/customers-classifier@champion")
    frame = messy_table(60, seed=3)
    predictions = model.predict(frame)
    assert len(predictions) == len(frame)
    assert {"prediction", "probability", "probability_yes"} <= set(predictions.columns)


def test_a_regression_table_in_the_same_project_keeps_the_first_champion(project):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns/mlflow.db'}")
    first = client.get_model_version_by_alias("customers-classifier", "champion")
    source = write_table(messy_table(360, seed=2, task="regression"), project.parent / "spend.csv")
    run([sys.executable, "-m", "pipelines.materialize", "--source", "file", "--from", str(source)], project)
    set_params(project, SHORT)
    run([sys.executable, "-m", "dvc", "repro"], project)
    evaluated = read(project, "metrics/evaluate.json")
    assert evaluated["mae"] < evaluated["baseline"] * 1.2 and "r2" in evaluated
    summary = read(project, "artifacts/export/summary.json")
    assert summary["registered_model"] == "spend-regressor" and "mae" in summary["tflite_int8"]
    for picture in ("predicted_vs_actual.png", "residuals.png", "confident_mistakes.png"):
        assert (project / "artifacts/evaluate" / picture).is_file(), picture
    assert client.get_model_version_by_alias("customers-classifier", "champion").version == first.version
