"""A user's documents, end to end from a fresh copy of the repository with the README's commands: materialize a messy
folder of reviews, `dvc repro`, then predict from every model form, files and stdin; then a CSV with a text column in
the same project, through the textbook's LSTM (its int8 TFLite model included), the first champion untouched. Small
folders and a short schedule: the IMDB demo's full run is in `make bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.texts import review, write_text_folder
from tests.workspace import copy_repository, run, set_params

pytestmark = pytest.mark.e2e
# The test's time budget, not the data's: one model (no search), a short schedule, two variants.
SHORT = {
    "train": {"epochs": 30},
    "export": {"latency_runs": 20, "variants": ["float32", "int8"]},
}


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / name).read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh copy where a messy folder of reviews went through materialize, schema and `dvc repro`."""
    repo = copy_repository(tmp_path_factory.mktemp("texts") / "repo", materialize=False)
    folder = write_text_folder(repo.parent / "reviews", per_class=100)
    run([sys.executable, "-m", "pipelines.materialize", "--source", "folder", "--from", str(folder)], repo)
    run([sys.executable, "-m", "pipelines.schema"], repo)  # the README's second command: what ingest checks
    set_params(repo, {**SHORT, "train": {**SHORT["train"], "model": "text_ngrams"}})
    run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


def test_a_messy_folder_of_documents_is_checked_trained_gated_and_promoted(project):
    ingest = read(project, "metrics/ingest.json")
    # 200 reviews, an empty file, a copy (dropped), a near copy (kept, in its original's split), a picture (skipped)
    assert ingest["classes"] == 2 and ingest["empty"] == 1 and ingest["copies_dropped"] == 1
    assert ingest["skipped"] == 1 and sum(ingest["documents"].values()) == 201
    near = pd.read_csv(project / "reports/ingest/near_duplicates.csv")
    assert len(near) and near.groupby("group")["split"].nunique().max() == 1  # a group never spans two splits
    evaluated = read(project, "metrics/evaluate.json")
    assert evaluated["blessed"] is True and evaluated["accuracy"] >= evaluated["baseline"] >= 0.9
    summary = read(project, "artifacts/export/summary.json")
    assert summary["registered_model"] == "reviews-classifier" and summary["promoted"] is True
    assert summary["tflite_with_encoding"]["agreement"] >= 0.99
    for name in ("vocabulary.json", "labels.txt", "model_int8.tflite", "model_float32.tflite", "model_card.md"):
        assert (project / "artifacts/export" / name).is_file(), name
    card = (project / "artifacts/export/model_card.md").read_text()
    assert "A classifier of 2 classes (bad, good) from documents" in card and "TF-IDF" in card


def test_predict_reads_files_in_any_encoding_and_stdin_from_every_model_form(project):
    rng = np.random.default_rng(11)
    good, bad = review(rng, "good", 40), review(rng, "bad", 40)
    (project.parent / "new_good.txt").write_bytes(good.encode("utf-16"))
    (project.parent / "new_bad.txt").write_bytes(bad.encode("cp1252"))
    saved_model = next((project / "artifacts/export/saved_model/reviews-classifier").iterdir())
    files = [str(project.parent / "new_good.txt"), str(project.parent / "new_bad.txt")]
    for model in (str(saved_model), "artifacts/export/model_int8.tflite", "models:/reviews-classifier@champion"):
        result = run([sys.executable, "-m", "pipelines.predict", "--model", model, *files], project)
        lines = result.stdout.strip().splitlines()
        assert lines[0].startswith(f"{files[0]}: good") and lines[1].startswith(f"{files[1]}: bad"), (model, lines)
    piped = run(
        [sys.executable, "-m", "pipelines.predict", "--model", str(saved_model), "-"],
        project,
        input=f"{bad}\n\n{good}\n",
    )
    assert [line.split(":")[1].split()[0] for line in piped.stdout.strip().splitlines()] == ["bad", "good"]
    missing = run(
        [sys.executable, "-m", "pipelines.predict", "--model", str(saved_model), "nowhere.txt"], project, check=False
    )
    assert missing.returncode != 0 and "nowhere.txt" in missing.stderr


def test_a_table_with_a_text_column_trains_the_textbooks_lstm_and_keeps_the_first_champion(project):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns/mlflow.db'}")
    first = client.get_model_version_by_alias("reviews-classifier", "champion")
    rng = np.random.default_rng(5)
    labels = rng.choice(["pos", "neg"], 240)
    table = pd.DataFrame(
        {
            "id": np.arange(240),
            "review": [review(rng, "good" if label == "pos" else "bad", int(rng.integers(15, 40))) for label in labels],
            "sentiment": labels,
        }
    )
    table.loc[7, "review"] = None  # a row without its document
    source = project.parent / "opinions.csv"
    table.to_csv(source, index=False)
    materialize = [sys.executable, "-m", "pipelines.materialize", "--source", "file", "--from", str(source)]
    run([*materialize, "--target", "sentiment"], project)
    set_params(project, {**SHORT, "train": {**SHORT["train"], "model": "text_lstm"}})
    run([sys.executable, "-m", "dvc", "repro"], project)
    assert read(project, "artifacts/preprocess/statistics.json")["kind"] == "text"
    evaluated = read(project, "metrics/evaluate.json")
    assert evaluated["accuracy"] >= 0.9, evaluated
    summary = read(project, "artifacts/export/summary.json")
    assert summary["registered_model"] == "opinions-classifier" and summary["tflite_int8"]["accuracy"] >= 0.9
    assert client.get_model_version_by_alias("reviews-classifier", "champion").version == first.version
