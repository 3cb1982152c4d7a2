"""Tests for components/export.py on a tiny fabricated dataset, trained model, evaluate blessing and MLflow run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter
from mlflow import MlflowClient

from components import export
from models.lenet5 import build_lenet5
from pipelines import records, tracking

CLASS_NAMES = ["top", "middle", "bottom"]
IMAGE_SHAPE = (12, 12, 1)
MODEL_INPUT_SIZE = (16, 16)
EXPERIMENT = "tfpipe-export-test"
TARGET_SPARSITY = 0.75
PARAMS_YAML = f"""
export:
  model_name: test_classifier
  prune_target_sparsity: {TARGET_SPARSITY}
  prune_epochs: 2
  prune_learning_rate: 0.001
  representative_samples: 16
  seed: 0
"""
VARIANTS = {"keras_float", "keras_pruned", "tflite_float32", "tflite_int8", "tflite_pruned_int8"}


def make_images(num_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k is a bright horizontal band in the k-th third of a noisy image: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    band = IMAGE_SHAPE[0] // len(CLASS_NAMES)
    images, labels = [], []
    for label in range(len(CLASS_NAMES)):
        for _ in range(num_per_class):
            image = rng.integers(0, 60, IMAGE_SHAPE)
            image[label * band:(label + 1) * band] += 150
            images.append(image.astype(np.uint8))
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.array(labels, np.int32)[order]


def write_prepared(directory: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """TFRecord shards and a manifest.json in the format ingest writes."""
    directory.mkdir(parents=True)
    manifest = {"class_names": CLASS_NAMES, "image_shape": list(IMAGE_SHAPE), "splits": {}}
    for split, (images, labels) in splits.items():
        shards = records.shard_paths(directory, split, 1)
        with tf.io.TFRecordWriter(str(shards[0])) as writer:
            for index, (image, label) in enumerate(zip(images, labels)):
                writer.write(records.serialize_example(image, int(label), f"{split}/{index}.png"))
        manifest["splits"][split] = {"count": len(labels), "shards": [shard.name for shard in shards]}
    with (directory / records.MANIFEST).open("w") as stream:
        json.dump(manifest, stream)


def build_trained_model(images: np.ndarray, labels: np.ndarray) -> keras.Model:
    """The structure train saves: image -> preprocessing model -> classifier model -> softmax."""
    raw = keras.Input(shape=IMAGE_SHAPE, dtype="float32")
    resized = keras.layers.Resizing(*MODEL_INPUT_SIZE)(raw)
    normalized = keras.layers.Normalization(mean=float(images.mean()), variance=float(images.var()))(resized)
    preprocessor = keras.Model(raw, normalized, name="preprocessing")
    classifier = build_lenet5((*MODEL_INPUT_SIZE, IMAGE_SHAPE[2]), len(CLASS_NAMES))
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    logits = classifier(preprocessor(inputs))
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="trained_model")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images.astype(np.float32), labels, batch_size=16, epochs=1, verbose=0)
    return model


def write_workspace(root: Path, *, blessed: bool) -> str:
    """Everything export reads, as the earlier stages would leave it; returns the train run's id."""
    keras.utils.set_random_seed(0)
    train, test = make_images(40, seed=1), make_images(10, seed=2)
    write_prepared(root / "data/prepared", {"train": train, "test": test})
    (root / "params.yaml").write_text(PARAMS_YAML)
    train_dir = root / "artifacts/train"
    train_dir.mkdir(parents=True)
    build_trained_model(*train).save(train_dir / "model.keras")
    (train_dir / "model.json").write_text(json.dumps({"model": "lenet5", "class_names": CLASS_NAMES, "image_shape": list(IMAGE_SHAPE)}))
    with tracking.stage_run(EXPERIMENT, run_name="train") as run:
        tracking.write_run_reference(train_dir / "run.json", run, EXPERIMENT)
    evaluate_dir = root / "artifacts/evaluate"
    evaluate_dir.mkdir(parents=True)
    (evaluate_dir / "blessing.json").write_text(json.dumps({"blessed": blessed, "reasons": [], "accuracy": 0.9}))
    return run.info.run_id


def run_export(root: Path, *, blessed: bool) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run_id = write_workspace(root, blessed=blessed)
        export.main()
    return {"root": root, "run_id": run_id, "client": MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")}


@pytest.fixture(scope="module")
def blessed_export(tmp_path_factory):
    return run_export(tmp_path_factory.mktemp("blessed"), blessed=True)


@pytest.fixture(scope="module")
def unblessed_export(tmp_path_factory):
    return run_export(tmp_path_factory.mktemp("unblessed"), blessed=False)


def test_saved_model_serves_uint8_images_in_tf_serving_layout(blessed_export):
    root = blessed_export["root"]
    versions = list((root / "artifacts/export/saved_model/test_classifier").iterdir())
    assert [path.name for path in versions] == ["1"]
    serve = tf.saved_model.load(str(versions[0])).signatures["serving_default"]
    images, _ = make_images(2, seed=3)
    outputs = serve(images=tf.constant(images))
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape == (6, 3)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert outputs["class_ids"].dtype == tf.int64
    names = [name.decode() for name in outputs["class_names"].numpy()]
    assert names == [CLASS_NAMES[i] for i in outputs["class_ids"].numpy()]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serve(images=tf.constant(images.astype(np.float32)))


@pytest.mark.parametrize("file_name", ["model_int8.tflite", "pruned_int8.tflite"])
def test_int8_tflite_has_int8_input_and_output_and_runs(blessed_export, file_name):
    interpreter = Interpreter(model_path=str(blessed_export["root"] / "artifacts/export" / file_name), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert source["dtype"] == np.int8 and target["dtype"] == np.int8
    predict = export.make_tflite_predictor((blessed_export["root"] / "artifacts/export" / file_name).read_bytes())
    probabilities = predict(make_images(1, seed=4)[0][0])
    assert probabilities.shape == (3,) and abs(probabilities.sum() - 1.0) < 0.05


def test_metrics_and_report_list_every_variant(blessed_export):
    root = blessed_export["root"]
    metrics = json.loads((root / "metrics/export.json").read_text())
    assert VARIANTS <= set(metrics) and metrics["version"] == 1 and metrics["promoted"] is True
    for variant in VARIANTS:
        row = metrics[variant]
        assert set(row) >= {"accuracy", "accuracy_drop", "agreement", "size_bytes", "gzip_bytes", "sparsity", "latency_p50_ms"}
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["agreement"] <= 1 and row["latency_p50_ms"] > 0
    assert metrics["keras_float"]["agreement"] == 1.0 and metrics["keras_float"]["accuracy_drop"] == 0.0
    assert metrics["tflite_float32"]["agreement"] >= 0.95
    assert metrics["tflite_int8"]["size_bytes"] < metrics["tflite_float32"]["size_bytes"]
    report = (root / "artifacts/export/report.md").read_text()
    assert all(variant in report for variant in VARIANTS)
    assert not list((root / "artifacts").glob(".export-*")), "the staging directory was left behind"


def test_pruned_models_reach_the_target_sparsity(blessed_export):
    root = blessed_export["root"]
    metrics = json.loads((root / "metrics/export.json").read_text())
    assert metrics["keras_pruned"]["sparsity"] >= 0.9 * TARGET_SPARSITY
    assert metrics["tflite_pruned_int8"]["sparsity"] >= 0.9 * TARGET_SPARSITY
    assert metrics["tflite_float32"]["sparsity"] < 0.1
    pruned = keras.models.load_model(root / "artifacts/export/pruned.keras")
    assert export.keras_weight_sparsity(pruned) >= 0.9 * TARGET_SPARSITY
    assert metrics["tflite_pruned_int8"]["gzip_bytes"] < metrics["tflite_int8"]["gzip_bytes"]


def test_blessed_model_is_registered_as_champion_in_the_train_run(blessed_export):
    client = blessed_export["client"]
    version = client.get_model_version_by_alias("test_classifier", export.CHAMPION_ALIAS)
    assert int(version.version) == 1 and version.run_id == blessed_export["run_id"]
    run = client.get_run(blessed_export["run_id"])
    assert "export.tflite_int8.accuracy" in run.data.metrics
    artifacts = {item.path for item in client.list_artifacts(blessed_export["run_id"], "export")}
    assert {"export/report.md", "export/model_int8.tflite", "export/pruned_int8.tflite"} <= artifacts


def test_unblessed_model_is_registered_but_not_champion(unblessed_export):
    client = unblessed_export["client"]
    (version,) = client.search_model_versions("name='test_classifier'")
    assert int(version.version) == 1 and version.aliases == []
    metrics = json.loads((unblessed_export["root"] / "metrics/export.json").read_text())
    assert metrics["promoted"] is False
    assert "not blessed" in (unblessed_export["root"] / "artifacts/export/report.md").read_text()


def test_pruning_schedule_reaches_the_target_at_a_mask_update_step():
    for num_examples, epochs in [(1, 1), (100, 2), (4000, 2), (50000, 3)]:
        schedule = export.build_pruning_schedule(num_examples, batch_size=64, epochs=epochs, target_sparsity=0.5)
        total_steps = -(-num_examples // 64) * epochs
        assert 0 < schedule.end_step <= total_steps and schedule.end_step % schedule.frequency == 0
        should_prune, sparsity = schedule(tf.constant(schedule.end_step, tf.int64))
        assert bool(should_prune) and float(sparsity) == pytest.approx(0.5)


def test_representative_images_are_seeded_float_pixels():
    images = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
    first = export.select_representative_images(images, 4, seed=7)
    assert first.dtype == np.float32 and first.shape == (4, 2, 2, 1) and first.max() <= 255
    np.testing.assert_array_equal(first, export.select_representative_images(images, 4, seed=7))
    assert len(export.select_representative_images(images, 50, seed=7)) == 10


def test_a_failed_export_leaves_the_previous_export_untouched(unblessed_export, monkeypatch):
    root = unblessed_export["root"]
    before = sorted(path.relative_to(root) for path in (root / "artifacts/export").rglob("*"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")

    def crash(*args, **kwargs):
        raise RuntimeError("pruning crashed")

    monkeypatch.setattr(export, "prune_model", crash)
    with pytest.raises(RuntimeError, match="pruning crashed"):
        export.main()
    assert sorted(path.relative_to(root) for path in (root / "artifacts/export").rglob("*")) == before
    assert [path.name for path in (root / "artifacts").iterdir() if path.name.startswith(".")] == []
