"""Tests for components/export/stage.py on a tiny fabricated dataset, trained model, evaluate blessing, MLflow run."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter
from mlflow import MlflowClient

from components.export import cache as export_cache
from components.export import examples as export_examples
from components.export import fine_tune as export_fine_tune
from components.export import measure as export_measure
from components.export import report as export_report
from components.export import serving
from components.export import serving as export_serving
from components.export import stage as export
from components.export import variants as export_variants
from components.export.examples import Examples
from models.lenet5 import build_lenet5
from tfpipe import records, run_records, tflite, tracking
from tfpipe.config import ExportParams, ParamsError
from tfpipe.outputs import file_sha256
from tfpipe.params_file import parse_params

CLASS_NAMES = ["top", "middle", "bottom"]
IMAGE_SHAPE = (12, 12, 1)
MODEL_INPUT_SIZE = (16, 16)
EXPERIMENT = "tfpipe-export-test"
TARGET_SPARSITY = 0.75
PARAMS_YAML = f"""
export:
  model_name: test_classifier
  variants: [float32, float16, dynamic_range, int8, pruned_int8, qat_int8, pqat_int8]
  prune_target_sparsity: {TARGET_SPARSITY}
  prune_epochs: 2
  prune_learning_rate: 0.001
  prune_min_weights: 100
  qat_epochs: 1
  representative_samples: 16
  latency_runs: 20
  throughput_batch_size: 8
  max_int8_accuracy_drop: 0.05
  max_int8_class_drop: 0.2
  seed: 0
"""
VARIANTS = {
    "keras_float",
    "tflite_float32",
    "tflite_float16",
    "tflite_dynamic_range",
    "tflite_int8",
    "tflite_pruned_int8",
    "tflite_qat_int8",
    "tflite_pqat_int8",
}
INT8_FILES = ["model_int8.tflite", "model_pruned_int8.tflite", "model_qat_int8.tflite", "model_pqat_int8.tflite"]


def make_images(num_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k is a bright horizontal band in the k-th third of a noisy image: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    band = IMAGE_SHAPE[0] // len(CLASS_NAMES)
    images, labels = [], []
    for label in range(len(CLASS_NAMES)):
        for _ in range(num_per_class):
            image = rng.integers(0, 60, IMAGE_SHAPE)
            image[label * band : (label + 1) * band] += 150
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
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
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


def build_variants(model: keras.Model, images: np.ndarray, labels: np.ndarray, params: ExportParams, tmp_path: Path):
    """export_variants.build_tflite_variants on arrays, logs and cache under tmp_path."""
    return export_variants.build_tflite_variants(
        model,
        "lenet5",
        Examples.from_arrays(images, labels),
        params,
        log_dir=tmp_path / "logs",
        cache_dir=tmp_path / "cache",
    )


def write_workspace(root: Path, *, blessed: bool) -> str:
    """Everything export reads, as the earlier stages would leave it; returns the train run's id."""
    keras.utils.set_random_seed(0)
    train, test = make_images(40, seed=1), make_images(10, seed=2)
    write_prepared(root / "data/prepared", {"train": train, "test": test})
    (root / "params.yaml").write_text(PARAMS_YAML)
    train_dir = root / "artifacts/train"
    train_dir.mkdir(parents=True)
    build_trained_model(*train).save(train_dir / "model.keras")
    (train_dir / "model.json").write_text(
        json.dumps(
            {
                "model": "lenet5",
                "class_names": CLASS_NAMES,
                "image_shape": list(IMAGE_SHAPE),
                "model_sha256": file_sha256(train_dir / "model.keras"),
            }
        )
    )
    with tracking.stage_run(EXPERIMENT, run_name="train") as run:
        run_records.write_run_reference(train_dir / "run.json", run, EXPERIMENT, tensorboard="train")
    evaluate_dir = root / "artifacts/evaluate"
    evaluate_dir.mkdir(parents=True)
    write_blessing(root, blessed=blessed, run_id=run.info.run_id)
    return run.info.run_id


def write_blessing(root: Path, *, blessed: bool, run_id: str, champion_version: int | None = None) -> None:
    """evaluate's decision about the run and its evaluation (what the model card reports), as the evaluate stage
    writes them."""
    (root / "artifacts/evaluate/evaluation.json").write_text(
        json.dumps(
            {
                "accuracy": 0.9,
                "macro_f1": 0.89,
                "expected_calibration_error": 0.03,
                "num_examples": 30,
                "baseline_accuracy": 0.8,
                "per_class": {name: {"recall": 0.9, "precision": 0.9, "support": 10} for name in CLASS_NAMES},
                "most_confused": [{"actual": CLASS_NAMES[0], "predicted": CLASS_NAMES[1], "images": 1, "share": 0.1}],
            }
        )
    )
    (root / "artifacts/evaluate/blessing.json").write_text(
        json.dumps(
            {
                "blessed": blessed,
                "reasons": [],
                "candidate": {"run_id": run_id, "accuracy": 0.9},
                "champion": {"version": champion_version} if champion_version else None,
                "baseline": {"model": "SVC(kernel='rbf') on downscaled pixels", "accuracy": 0.8},
            }
        )
    )


def run_export(root: Path, *, blessed: bool, params_yaml: str = PARAMS_YAML) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run_id = write_workspace(root, blessed=blessed)
        (root / "params.yaml").write_text(params_yaml)
        export.main()
    return {"root": root, "run_id": run_id, "client": MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")}


@pytest.fixture(scope="module")
def blessed_export(tmp_path_factory):
    return run_export(tmp_path_factory.mktemp("blessed"), blessed=True)


@pytest.fixture(scope="module")
def unblessed_export(tmp_path_factory):
    """Only the float and int8 conversions: no fine-tunes, so it is quick."""
    params = PARAMS_YAML.replace(
        "[float32, float16, dynamic_range, int8, pruned_int8, qat_int8, pqat_int8]", "[float32, int8]"
    )
    return run_export(tmp_path_factory.mktemp("unblessed"), blessed=False, params_yaml=params)


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
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir", str(versions[0]), "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "signature_def['serving_default']" in shown and "dtype: DT_UINT8" in shown and "shape: (-1, 12, 12, 1)" in shown
    )
    assert all(f"outputs['{name}']" in shown for name in ("probabilities", "class_ids", "class_names"))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serve(images=tf.constant(images.astype(np.float32)))


@pytest.mark.parametrize("file_name", INT8_FILES)
def test_int8_tflite_has_int8_input_and_output_and_runs(blessed_export, file_name):
    interpreter = Interpreter(model_path=str(blessed_export["root"] / "artifacts/export" / file_name), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert source["dtype"] == np.int8 and target["dtype"] == np.int8
    classifier = tflite.TFLiteClassifier(blessed_export["root"] / "artifacts/export" / file_name)
    probabilities = classifier.predict(make_images(1, seed=4)[0])
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=0.05)
    labels = blessed_export["root"] / "artifacts/export" / tflite.LABELS_FILE
    assert tflite.read_labels(labels) == CLASS_NAMES


def test_metrics_and_report_list_every_variant(blessed_export):
    root = blessed_export["root"]
    metrics = json.loads((root / "artifacts/export/summary.json").read_text())
    assert VARIANTS <= set(metrics) and metrics["version"] == 1 and metrics["promoted"] is True
    for variant in VARIANTS:
        row = metrics[variant]
        assert set(row) >= {
            "accuracy",
            "accuracy_drop",
            "max_class_drop",
            "agreement",
            "size_bytes",
            "gzip_bytes",
            "sparsity",
            "latency_p50_ms",
            "latency_p99_ms",
            "invoke_p50_ms",
            "throughput_images_per_s",
        }
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["agreement"] <= 1 and row["latency_p50_ms"] > 0
        assert row["throughput_images_per_s"] > 0
    assert metrics["keras_float"]["agreement"] == 1.0 and metrics["keras_float"]["accuracy_drop"] == 0.0
    assert metrics["tflite_float32"]["agreement"] >= 0.95
    sizes = {name: metrics[name]["size_bytes"] for name in VARIANTS - {"keras_float"}}
    assert sizes["tflite_float16"] < 0.6 * sizes["tflite_float32"]
    assert (
        sizes["tflite_int8"] < 0.35 * sizes["tflite_float32"]
        and sizes["tflite_dynamic_range"] < 0.35 * sizes["tflite_float32"]
    )
    assert metrics["int8_gate"]["passed"] is True and metrics["int8_gate"]["variant"] == "int8"
    report = (root / "artifacts/export/report.md").read_text()
    assert all(variant in report for variant in VARIANTS) and "int8 gate (int8): passed" in report
    assert (root / "artifacts/export/variants.png").stat().st_size > 10_000
    assert (
        "Classical baseline (SVC(kernel='rbf') on downscaled pixels, same train and test splits): test accuracy 0.8000"
        in report
    )
    assert metrics["serving_parity_max_difference"] <= 1e-4 and metrics["registered_model"] == "test_classifier"
    assert not list((root / "artifacts").glob(".export.tmp-*")), "the staging directory was left behind"
    # The build machine's CPU is in both, and whichever quantized variant was slower than float32 is said so in the
    # report.
    assert metrics["cpu"]["model"] and set(metrics["cpu"]["flags"]) <= set(export.cpu.RELEVANT_FLAGS)
    assert f"on the build machine's CPU: {metrics['cpu']['model']}" in report
    assert metrics["variants_from_cache"] == []  # a fresh workspace: everything was built
    for variant, facts in metrics["slower_than_float32"].items():
        assert f"**{variant} is slower than float32 on this machine**" in report
        assert (
            set(facts["settings"]) == set(export_measure.SETTINGS)
            and facts["fastest_invoke_setting"] in export_measure.SETTINGS
        )


def test_pruned_models_reach_the_target_sparsity(blessed_export):
    root = blessed_export["root"]
    metrics = json.loads((root / "artifacts/export/summary.json").read_text())
    for variant in ("tflite_pruned_int8", "tflite_pqat_int8"):  # the zeros survived conversion (and QAT)
        assert metrics[variant]["sparsity"] >= 0.9 * TARGET_SPARSITY
        assert metrics[variant]["gzip_bytes"] < 0.6 * metrics["tflite_int8"]["gzip_bytes"]
    assert metrics["tflite_float32"]["sparsity"] < 0.1 and metrics["tflite_qat_int8"]["sparsity"] < 0.2
    assert list((root / "logs/tensorboard").rglob("pruning/**/events.out.tfevents.*")), (
        "no pruning summaries for TensorBoard"
    )


def test_blessed_model_is_registered_as_champion_in_the_train_run(blessed_export):
    client = blessed_export["client"]
    version = client.get_model_version_by_alias("test_classifier", tracking.CHAMPION_ALIAS)
    assert int(version.version) == 1 and version.run_id == blessed_export["run_id"]
    assert version.tags["int8_gate"] == "passed" and version.tags["blessed"] == "true"
    assert len(version.tags["tfpipe.model_identity"]) == 64 and len(version.tags["tfpipe.saved_model_sha256"]) == 64
    run = client.get_run(blessed_export["run_id"])
    assert "export.tflite_int8.accuracy" in run.data.metrics and run.data.tags["export.promoted"] == "true"
    artifacts = {item.path for item in client.list_artifacts(blessed_export["run_id"], "export")}
    assert {
        "export/report.md",
        "export/variants.png",
        "export/labels.txt",
        *(f"export/{name}" for name in INT8_FILES),
    } <= artifacts


def test_unblessed_model_is_registered_but_not_champion(unblessed_export):
    client = unblessed_export["client"]
    (version,) = client.search_model_versions("name='test_classifier'")
    assert int(version.version) == 1 and version.aliases == []
    metrics = json.loads((unblessed_export["root"] / "artifacts/export/summary.json").read_text())
    assert metrics["promoted"] is False and metrics["blessed"] is False
    assert set(metrics) & VARIANTS == {"keras_float", "tflite_float32", "tflite_int8"}, (
        "variants not in params were exported"
    )
    assert "evaluate did not bless the model" in (unblessed_export["root"] / "artifacts/export/report.md").read_text()


def test_a_failed_int8_gate_keeps_a_blessed_model_from_champion_and_says_why():
    metrics = {"tflite_int8": {"accuracy_drop": 0.004, "max_class_drop": 0.06}}
    params = ExportParams(max_int8_accuracy_drop=0.002, max_int8_class_drop=0.04)
    gate = export.decide_int8_gate(metrics, params)
    assert gate["passed"] is False and len(gate["reasons"]) == 2
    assert "accuracy drop 0.0040 > max_int8_accuracy_drop 0.002" in gate["reasons"][0]
    # exactly at the threshold passes: one image of 500 is 0.002
    assert export.decide_int8_gate({"tflite_int8": {"accuracy_drop": 1 / 500, "max_class_drop": 0.04}}, params)[
        "passed"
    ]
    report = report_of_a_failed_gate(gate, version=3)
    assert "**not** `champion`" in report and "max_int8_class_drop" in report and "version 3" in report


def test_export_params_reject_a_gate_variant_that_is_not_exported():
    with pytest.raises(ValueError, match="gate_variant 'int8' is not in variants"):
        ExportParams(variants=("float32",))


def test_pruning_schedule_reaches_the_target_at_a_mask_update_step():
    for num_examples, epochs, end_fraction in [
        (1, 1, 1.0),
        (100, 2, 0.5),
        (4000, 2, 1.0),
        (4000, 4, 0.5),
        (50000, 3, 0.3),
    ]:
        schedule = export_fine_tune.build_pruning_schedule(
            num_examples, batch_size=64, epochs=epochs, target_sparsity=0.5, end_fraction=end_fraction
        )
        total_steps = -(-num_examples // 64) * epochs
        assert (
            0 < schedule.end_step <= max(1, total_steps * end_fraction) and schedule.end_step % schedule.frequency == 0
        )
        should_prune, sparsity = schedule(tf.constant(schedule.end_step, tf.int64))
        assert bool(should_prune) and float(sparsity) == pytest.approx(0.5)


def test_representative_images_are_seeded_float_pixels():
    images = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
    first = export_variants.select_representative_images(images, 4, seed=7)
    assert first.dtype == np.float32 and first.shape == (4, 2, 2, 1) and first.max() <= 255
    np.testing.assert_array_equal(first, export_variants.select_representative_images(images, 4, seed=7))
    assert len(export_variants.select_representative_images(images, 50, seed=7)) == 10


def test_a_failed_export_leaves_the_previous_export_untouched(unblessed_export, monkeypatch):
    root = unblessed_export["root"]
    before = sorted(path.relative_to(root) for path in (root / "artifacts/export").rglob("*"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")

    def crash(*args, **kwargs):
        raise RuntimeError("measuring crashed")

    monkeypatch.setattr(export, "measure_variants", crash)
    with pytest.raises(RuntimeError, match="measuring crashed"):
        export.main()
    assert sorted(path.relative_to(root) for path in (root / "artifacts/export").rglob("*")) == before
    assert [path.name for path in (root / "artifacts").iterdir() if path.name.startswith(".")] == []


QUICK_PARAMS = PARAMS_YAML.replace(
    "[float32, float16, dynamic_range, int8, pruned_int8, qat_int8, pqat_int8]", "[float32, int8]"
)


def _export_state(root: Path) -> dict:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return {
        "champion": int(client.get_model_version_by_alias("test_classifier", tracking.CHAMPION_ALIAS).version),
        "files": {
            path.relative_to(root): path.read_bytes()
            for folder in ("artifacts/export", "metrics")
            for path in (root / folder).rglob("*")
            if path.is_file()
        },
    }


def test_promotion_is_the_last_step_so_a_failure_after_registration_keeps_the_champion(tmp_path, monkeypatch):
    root = run_export(tmp_path, blessed=True, params_yaml=QUICK_PARAMS)["root"]  # version 1, the champion
    before = _export_state(root)
    assert before["champion"] == 1
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    write_blessing(
        root,
        blessed=True,
        run_id=json.loads((root / "artifacts/train/run.json").read_text())["run_id"],
        champion_version=1,
    )

    def crash(*args, **kwargs):
        raise RuntimeError("writing the report failed")

    monkeypatch.setattr(export, "format_report", crash)  # runs after the version is registered (or reused)
    with pytest.raises(RuntimeError, match="writing the report failed"):
        export.main()
    assert _export_state(root) == before  # champion v1, the previous export and metrics untouched
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    versions = client.search_model_versions("name='test_classifier'")
    assert [int(version.version) for version in versions] == [1]  # the same model: its version, never a copy
    monkeypatch.undo()

    # Another model became the champion after evaluate compared against v1: export reuses v1 and does not promote.
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    other = client.create_model_version("test_classifier", versions[0].source, tags={"tfpipe.model_identity": "x"})
    client.set_registered_model_alias("test_classifier", tracking.CHAMPION_ALIAS, other.version)
    export.main()
    metrics = json.loads((root / "artifacts/export/summary.json").read_text())
    assert metrics["version"] == 1 and metrics["registered_before"] is True and metrics["promoted"] is False
    assert metrics["variants_from_cache"] == ["float32", "int8"]  # the same model, data, params and code
    assert metrics["not_promoted_because"] == [
        "the champion of 'test_classifier' changed since evaluate compared against v1 (now v2): `python -m "
        "pipelines.store promote` compares version 1 with v2 on this test split and makes it the champion if it is at "
        "least as good"
    ]
    assert _export_state(root)["champion"] == 2
    assert sorted(int(version.version) for version in client.search_model_versions("name='test_classifier'")) == [1, 2]


def test_a_blessing_of_another_training_run_is_refused(unblessed_export, monkeypatch):
    root = unblessed_export["root"]
    monkeypatch.chdir(root)
    write_blessing(root, blessed=True, run_id="0123456789abcdef")
    with pytest.raises(ValueError, match="evaluates run 0123456789abcdef, but artifacts/train is run"):
        export.main()


def test_serving_parity_catches_a_saved_model_that_serves_another_model(tmp_path):
    images, labels = make_images(10, seed=3)
    model, other = build_trained_model(images, labels), build_trained_model(images[::-1].copy(), labels)
    module = export_serving.ServingModule(model, CLASS_NAMES)
    tf.saved_model.save(module, str(tmp_path / "served"), signatures={"serving_default": module.serve})
    assert export_serving.check_serving_parity(tmp_path / "served", model, images) <= 1e-4
    with pytest.raises(serving.ExportCheckFailed, match="serving_default differs from the trained model"):
        export_serving.check_serving_parity(tmp_path / "served", other, images)


def test_a_model_changed_after_training_is_refused(tmp_path):
    """Artifact integrity: evaluate and export load only the model.keras that train recorded."""
    from models.loading import load_trained_model

    train_dir = tmp_path / "artifacts/train"
    train_dir.mkdir(parents=True)
    model = build_trained_model(*make_images(10, seed=3))
    model.save(train_dir / "model.keras")
    (train_dir / "model.json").write_text(json.dumps({"model_sha256": file_sha256(train_dir / "model.keras")}))
    assert load_trained_model(train_dir).output_shape == model.output_shape
    model.layers[-2].set_weights([weight * 0 for weight in model.layers[-2].get_weights()])
    model.save(train_dir / "model.keras")  # edited by hand after the train stage
    with pytest.raises(ValueError, match="the model was changed after training"):
        load_trained_model(train_dir)


def fabricated_row(invoke_us: float, images_per_s: float) -> dict:
    return {
        "accuracy": 0.9,
        "accuracy_drop": 0.0,
        "max_class_drop": 0.0,
        "agreement": 1.0,
        "size_bytes": 10,
        "gzip_bytes": 5,
        "sparsity": 0.0,
        "latency_p50_ms": invoke_us / 900,
        "latency_p99_ms": invoke_us / 500,
        "invoke_p50_ms": invoke_us / 1000,
        "throughput_images_per_s": images_per_s,
    }


def report_of_a_failed_gate(gate: dict, **options) -> str:
    """export's report of a model not promoted because its int8 gate failed (options: version, notes)."""
    return export_report.format_report(
        {"tflite_int8": fabricated_row(100, 1.0)},
        model_name="m",
        promoted=False,
        why_not=gate["reasons"],
        gate=gate,
        num_threads=1,
        **options,
    )


def test_a_left_out_gate_variant_fails_the_gate_and_the_report_says_why():
    params = ExportParams(variants=("int8", "qat_int8"), gate_variant="qat_int8")
    gate = export.decide_int8_gate(
        {"keras_float": {}, "tflite_int8": {"accuracy_drop": 0.0, "max_class_drop": 0.0}}, params
    )
    assert not gate["passed"] and "qat_int8 was not exported" in gate["reasons"][0]
    note = "tfmot has no quantization-aware training for 1 layer(s): rescaling (Rescaling)"
    report = report_of_a_failed_gate(gate, version=1, notes={"qat_int8": note})
    assert f"**qat_int8**: {note}." in report and "**not** `champion`" in report


def test_the_report_says_which_quantized_variant_is_slower_than_float32_and_its_fastest_setting():
    metrics = {
        "keras_float": fabricated_row(900, 1000),
        "tflite_float32": fabricated_row(33, 30000),
        "tflite_float16": fabricated_row(34, 29000),  # within the 5 % noise margin: not slower
        "tflite_dynamic_range": fabricated_row(30, 33000),
        "tflite_int8": fabricated_row(104, 10000),
    }
    settings = {
        "float32": {
            "AUTO": {"invoke_p50_ms": 0.033, "throughput_images_per_s": 30000},
            "BUILTIN_WITHOUT_DEFAULT_DELEGATES": {"invoke_p50_ms": 0.188, "throughput_images_per_s": 5000},
        },
        "int8": {
            "AUTO": {"invoke_p50_ms": 0.104, "throughput_images_per_s": 10000},
            "BUILTIN_WITHOUT_DEFAULT_DELEGATES": {"invoke_p50_ms": 0.141, "throughput_images_per_s": 12000},
        },
    }
    slower = export_measure.slower_than_float32(metrics, settings)
    assert list(slower) == ["int8"] and slower["int8"]["slower_in"] == ["invoke_p50", "throughput"]
    assert slower["int8"]["fastest_invoke_setting"] == "AUTO"
    assert slower["int8"]["fastest_throughput_setting"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    gate = {"variant": "int8", "passed": True, "reasons": ["ok"]}
    amx = {
        "model": "Intel(R) Xeon(R) Processor",
        "vendor": "GenuineIntel",
        "family": "6",
        "model_number": "207",
        "logical_cpus": 2,
        "flags": {"avx512_vnni": True, "amx_int8": True},
    }
    report_of = functools.partial(
        export.format_report, model_name="m", version=1, promoted=True, why_not=[], gate=gate, num_threads=1
    )
    report = report_of(metrics, cpu_description=amx, slower=slower)
    assert (
        "**int8 is slower than float32 on this machine**: invoke p50 3.15× float32's, throughput 0.33× float32's "
        "(default XNNPACK delegate, num_threads=1). Fastest setting found for it: "
        "`AUTO` for single images (104.0 µs) and "
        "`BUILTIN_WITHOUT_DEFAULT_DELEGATES` for batches (12,000 images/s); "
        "float32 at its fastest: 33.0 µs, 30,000 images/s, "
        "so it stays slower."
    ) in report
    assert "| int8      | `BUILTIN_WITHOUT_DEFAULT_DELEGATES` |           141.0 |                    12,000 |" in report
    assert "float16 is slower" not in report and "dynamic_range is slower" not in report
    assert (
        "This CPU has AMX-INT8" in report
        and "Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207), 2 logical CPUs" in report
    )

    # Without the settings figures the sentence still says so; without AMX there is no AMX hint; nothing slower,
    # no sentence.
    plain = report_of(
        metrics,
        cpu_description={**amx, "flags": {"amx_int8": False}},
        slower=export_measure.slower_than_float32(metrics),
    )
    assert (
        "**int8 is slower than float32 on this machine**" in plain
        and "not timed with other interpreter settings" in plain
    )
    assert "AMX-INT8" not in plain
    metrics["tflite_int8"] = fabricated_row(20, 50000)
    assert "slower than float32" not in report_of(metrics, slower=export_measure.slower_than_float32(metrics))


def test_variant_keys_follow_only_what_each_variant_reads():
    parts = {"model": "a" * 64, "train_digest": "b" * 64, "code": "c" * 64, "libraries": {"tensorflow": "2.21.0"}}
    params = ExportParams()
    keys = {variant: export_cache.variant_key(variant, params=params, **parts) for variant in params.variants}
    assert len(set(keys.values())) == len(keys)
    measured = ExportParams(latency_runs=50, num_threads=2, max_int8_accuracy_drop=0.1, model_name="other")
    assert all(export_cache.variant_key(v, params=measured, **parts) == key for v, key in keys.items()), (
        "measurement params changed a key"
    )
    pruned = ExportParams(prune_epochs=9)
    changed = {v for v, key in keys.items() if export_cache.variant_key(v, params=pruned, **parts) != key}
    assert changed == {"pruned_int8", "pqat_int8"}
    other_data = {
        v
        for v, key in keys.items()
        if export_cache.variant_key(v, params=params, **{**parts, "train_digest": "d"}) != key
    }
    assert other_data == set(params.variants) - {"float32", "float16", "dynamic_range"}
    assert all(export_cache.variant_key(v, params=params, **{**parts, "code": "e"}) != key for v, key in keys.items())
    assert all(export_cache.variant_key(v, params=params, **{**parts, "model": "f"}) != key for v, key in keys.items())


def test_cached_variants_are_reused_and_a_damaged_entry_is_rebuilt(tmp_path):
    images, labels = make_images(10, seed=5)
    model = build_trained_model(images, labels)
    params = ExportParams(variants=("float32", "int8"), representative_samples=8)

    def build(trained=model):
        return build_variants(trained, images, labels, params, tmp_path)

    first, _, reused = build()
    assert reused == [] and len(list((tmp_path / "cache").iterdir())) == 2
    # The same architecture and weights saved again (a `dvc repro -f`: the .keras file differs by its save date)
    model.save(tmp_path / "again.keras")
    again, _, reused = build(keras.models.load_model(tmp_path / "again.keras", compile=False))
    assert reused == ["float32", "int8"] and again == first
    entry = next(
        path
        for path in (tmp_path / "cache").iterdir()
        if json.loads((path / "entry.json").read_text())["variant"] == "int8"
    )
    (entry / "model.tflite").write_bytes(first["int8"][:100])  # truncated
    rebuilt, _, reused = build()
    assert (
        reused == ["float32"]
        and rebuilt["int8"][4:8] == b"TFL3"
        and (entry / "model.tflite").read_bytes() == rebuilt["int8"]
    )
    export_cache.prune_entries(tmp_path / "cache", keep=1)
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [entry.name]  # the most recently used


def test_the_train_split_is_streamed_with_the_results_of_the_arrays_in_memory(tmp_path, monkeypatch):
    """Export reads the train split as a stream (a split of any size costs one shuffle buffer): its digest,
    calibration sample and fine-tune order are the in-memory arrays' while the split fits the buffer."""
    images, labels = make_images(12, seed=3)
    write_prepared(tmp_path / "prepared", {"train": (images, labels)})
    streamed, in_memory = Examples.from_split(tmp_path / "prepared", "train"), Examples.from_arrays(images, labels)
    assert streamed.count == len(images) and streamed.digest() == export_cache.array_digest(images, labels)
    np.testing.assert_array_equal(
        streamed.sample(5, seed=2), export_variants.select_representative_images(images, 5, 2)
    )

    def order(examples):
        return [label for _, label in examples.dataset().shuffle(examples.shuffle_buffer(), seed=4).as_numpy_iterator()]

    assert order(streamed) == order(in_memory)
    # Evaluate's readers: the labels without the images, and the images of a sample only.
    read_labels, files = records.read_labels(tmp_path / "prepared", "train")
    np.testing.assert_array_equal(read_labels, labels)
    assert files[:2] == ["train/0.png", "train/1.png"]
    np.testing.assert_array_equal(records.gather_images(tmp_path / "prepared", "train", [1, 5, 35]), images[[1, 5, 35]])
    monkeypatch.setattr(export_examples, "SHUFFLE_BYTES", 10 * int(np.prod(IMAGE_SHAPE)))
    assert streamed.shuffle_buffer() == 10  # a larger split: the buffer holds what fits the budget


def test_the_model_digest_follows_the_weights_and_the_architecture():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    digest = export_cache.model_digest(model)
    assert export_cache.model_digest(model) == digest
    model.layers[0].set_weights([weight + 1 for weight in model.layers[0].get_weights()])
    assert export_cache.model_digest(model) != digest
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense", activation="relu")])
    wider.set_weights(model.get_weights())
    assert export_cache.model_digest(wider) != export_cache.model_digest(model)


def test_a_new_variant_is_one_entry_in_the_table(tmp_path, monkeypatch):
    """Declared once (tfpipe/variants.py), a variant is accepted by the params, built, cached and keyed on what it
    reads, with no other change: here the pruned model with float16 weights."""
    from tfpipe import variants

    monkeypatch.setitem(
        variants.VARIANTS, "pruned_float16", variants.Variant("pruned_float16", quantization="float16", base="pruned")
    )
    images, labels = make_images(10, seed=5)
    model = build_trained_model(images, labels)
    params = ExportParams(variants=("int8", "pruned_float16"), prune_epochs=1, representative_samples=8)
    converted, _, _ = build_variants(model, images, labels, params, tmp_path)
    assert set(converted) == {"int8", "pruned_float16"} and converted["pruned_float16"][4:8] == b"TFL3"
    parts = {"model": "a", "train_digest": "b", "code": "c", "libraries": {}}
    key = export_cache.variant_key("pruned_float16", params=params, **parts)
    assert export_cache.variant_key("pruned_float16", params=replace(params, prune_epochs=2), **parts) != key
    assert export_cache.variant_key("pruned_float16", params=replace(params, qat_epochs=3), **parts) == key
    with pytest.raises(ParamsError, match="unknown variant\\(s\\) \\['pruned_int16'\\]"):
        parse_params({"export": {"variants": ["int8", "pruned_int16"]}})
