"""A user's own images, end to end: materialize a folder, infer the expectations, `dvc repro`; nothing hand-edited
about the data, and the MNIST champion of the same store untouched. The class folders have the names a file system
holds (parentheses, an apostrophe, `+`, `,`, `#`, an accent): every stage takes them, MLflow and TensorBoard too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.workspace import run, set_params

pytestmark = pytest.mark.e2e


# Folder names as users write them; each is a character MLflow refuses in a metric name, and none is refused by ingest.
SHAPES = {"horizontal": "bars (old)", "vertical": "dog's toys, 1+1", "square": "c# carré"}


def write_shapes(folder: Path, per_class: int = 40, size: int = 12, seed: int = 0, names: dict | None = None) -> None:
    """Three classes of 12x12 grayscale images, not digits: a horizontal bar, a vertical bar, a square (in folders
    named by `names`, default the shapes' own)."""
    rng = np.random.default_rng(seed)
    for shape in ("horizontal", "vertical", "square"):
        name = (names or {}).get(shape, shape)
        (folder / name).mkdir(parents=True)
        for number in range(per_class):
            pixels = rng.integers(0, 70, (size, size)) + rng.integers(0, 50)
            offset = rng.integers(1, size - 5)
            if shape == "horizontal":
                pixels[offset : offset + 2, 1:-1] = 230
            elif shape == "vertical":
                pixels[1:-1, offset : offset + 2] = 230
            else:
                pixels[offset : offset + 4, offset : offset + 4] = 230
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name / f"{number:03d}.png")


def test_a_folder_of_new_images_passes_first_time_and_registers_under_its_own_name(reproduced_copy, tmp_path):
    import mlflow

    repo = reproduced_copy
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    mnist_champion = client.get_model_version_by_alias("mnist_5k-classifier", "champion")

    write_shapes(tmp_path / "shapes", names=SHAPES)
    run([sys.executable, "-m", "pipelines.materialize", "--source", "folder", "--from", str(tmp_path / "shapes")], repo)
    inferred = run([sys.executable, "-m", "pipelines.schema"], repo).stdout
    assert "120 images (class_folders), 3 classes" in inferred and "+    image_height: 12" in inferred
    set_params(repo, {"train": {"epochs": 15}})  # the test's time budget, not the data: auto would pick 250 epochs here
    repro = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "ingest failed" not in repro.stdout + repro.stderr

    statistics = json.loads((repo / "artifacts/preprocess/statistics.json").read_text())
    # train.model: auto (the schema's default for a dataset of one's own): the size every candidate was designed for
    assert statistics["input_shape"] == [12, 12, 1] and statistics["output_shape"] == [32, 32, 1]
    evaluated = json.loads((repo / "metrics/evaluate.json").read_text())
    assert 0 <= evaluated["baseline"] <= 1 and evaluated["margin"] == pytest.approx(
        evaluated["accuracy"] - evaluated["baseline"]
    )
    blessing = json.loads((repo / "artifacts/evaluate/blessing.json").read_text())
    assert blessing["registered_model"] == "shapes-classifier" and blessing["champion"] is None
    assert any("classical baseline" in reason for reason in blessing["reasons"])
    exported = json.loads((repo / "artifacts/export/summary.json").read_text())
    assert exported["registered_model"] == "shapes-classifier" and exported["version"] == 1
    assert (repo / "artifacts/export/saved_model/shapes-classifier/1/saved_model.pb").is_file()
    assert "Classical baseline" in (repo / "artifacts/export/report.md").read_text()

    run_id = json.loads((repo / "artifacts/train/run.json").read_text())["run_id"]
    training = client.get_run(run_id)
    assert client.get_experiment(training.info.experiment_id).name == "shapes"
    assert (
        training.data.params["resolved.preprocess.image_height"] == "32"
        and "baseline_accuracy" in training.data.metrics
    )
    # The class names, as written, through every stage: the manifest, the labels shipped with the models, the per-class
    # metrics (their MLflow names with the characters MLflow refuses replaced) and the served model's answer.
    names = sorted(SHAPES.values())
    assert json.loads((repo / "data/prepared/manifest.json").read_text())["class_names"] == names
    assert (repo / "artifacts/export/labels.txt").read_text().splitlines() == names
    assert sorted(json.loads((repo / "artifacts/evaluate/evaluation.json").read_text())["per_class"]) == names
    recalls = sorted(key for key in training.data.metrics if key.startswith("test_recall_"))
    assert recalls == ["test_recall_bars _old_", "test_recall_c_ carré", "test_recall_dog_s toys_ 1_1"]
    assert training.info.status == "FINISHED"
    predicted = run(
        [sys.executable, "-m", "pipelines.predict", "--model", "models:/shapes-classifier/1", "--top-k", "3"]
        + [str(tmp_path / "shapes" / SHAPES["square"] / "000.png")],
        repo,
    ).stdout
    assert all(name in predicted for name in names), predicted
    assert (repo / "artifacts/export/model_card.md").read_text().count("dog's toys, 1+1") >= 2

    after = client.get_model_version_by_alias("mnist_5k-classifier", "champion")
    assert (after.version, after.run_id) == (mnist_champion.version, mnist_champion.run_id)
