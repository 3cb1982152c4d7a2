"""Class names as a user's file system holds them (`cats (old)`, `dog's toys`, `1+1`, `a,b`, `c#`): ingest keeps them
as they are, and every name built from one for MLflow is one MLflow accepts. The whole pipeline with such names:
tests/test_own_images_e2e.py; materialize refusing the names ingest would refuse: tests/test_materialize.py."""

from __future__ import annotations

import json

import mlflow
import numpy as np
from PIL import Image

from tfpipe.run_records import metric_keys

NAMES = ["cats (old)", "dog's toys", "1+1", "a,b", "c#", "50% off; x=y?", "naïve [v2] {z} @home ~$5 | !*:", "Inc."]


def test_metric_names_built_from_class_names_are_accepted_by_mlflow_and_stay_distinct(mlflow_store):
    from components.evaluate import metrics as evaluate_metrics
    from components.evaluate.tasks import TASKS

    colliding = ["a;b", "a_b_8", "a b", "a-b"]  # a;b reads as a,b, then as what a_b_8 reads as
    keys = metric_keys("test_recall_", [*NAMES, *colliding, "x" * 100])
    assert len(set(keys.values())) == len(keys) == len(NAMES) + len(colliding) + 1
    assert keys["cats (old)"] == "test_recall_cats _old_" and keys["a b"] == "test_recall_a b"
    # evaluate's per-class recalls go under those names
    labels = np.arange(len(NAMES))
    metrics = evaluate_metrics.compute_metrics(np.eye(len(NAMES))[labels], labels, NAMES, top_k=2)
    logged = TASKS["classification"].mlflow_metrics(metrics)
    with mlflow.start_run() as run:
        mlflow.log_metrics(dict.fromkeys(keys.values(), 0.5))
    with mlflow.start_run() as evaluated:
        mlflow.log_metrics(logged)
    client = mlflow.MlflowClient()
    assert set(client.get_run(run.info.run_id).data.metrics) == set(keys.values())
    recorded = client.get_run(evaluated.info.run_id).data.metrics
    assert sorted(key for key in recorded if key.startswith("test_recall_")) == sorted(
        metric_keys("test_recall_", NAMES).values()
    )


def test_ingest_keeps_such_names_as_they_are(tmp_path, monkeypatch):
    from components.ingest import stage as ingest

    rng = np.random.default_rng(0)
    for position, name in enumerate(NAMES[:5]):
        (tmp_path / "data/raw" / name).mkdir(parents=True)
        for index in range(6):
            pixels = rng.integers(40, 90, (8, 8), dtype=np.uint8)
            pixels[position : position + 3, 2:5] = 230
            Image.fromarray(pixels).save(tmp_path / f"data/raw/{name}/{index}.png")
    (tmp_path / "params.yaml").write_text(
        "ingest: {expectations: {image_height: 8, image_width: 8, channels: 1, num_classes: 5, min_per_class: 2, "
        "max_class_share: 0.5, image_mean_min: 20.0, image_mean_max: 230.0}}\n"
    )
    monkeypatch.chdir(tmp_path)
    ingest.main()
    manifest = json.loads((tmp_path / "data/prepared/manifest.json").read_text())
    assert manifest["class_names"] == sorted(NAMES[:5])
    summary = json.loads((tmp_path / "reports/ingest/summary.json").read_text())
    assert summary["num_examples"] == 30 and summary["validation"]["passed"] == summary["validation"]["evaluated"]
