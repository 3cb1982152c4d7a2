"""The export's fine-tuned variants fit the data (auto epochs scaled to the train split, the best epoch by val_loss
kept), and a variant that falls further behind the float model than the params allow is "not for shipping": marked in
the report, the card and summary.json, and its file never exported (components/export/shipping.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tf_keras as keras

from components.export import fine_tune as export_fine_tune
from components.export import model_card as export_model_card
from components.export import report as export_report
from components.export import stage as export
from components.export import summary as export_summary
from components.export.examples import Examples
from components.export.prepared import Prepared, Registration
from components.export.shipping import variants_not_for_shipping
from tests.test_export import build_trained_model, make_images
from tfpipe.config import ExportParams
from tfpipe.params_file import parse_params


def classification_row(accuracy: float, images_lost: int, drop: float) -> dict:
    return {
        "accuracy": accuracy,
        "accuracy_drop": drop,
        "images_lost": images_lost,
        "max_class_drop": drop,
        "agreement": 1 - drop,
        "size_bytes": 1000,
        "gzip_bytes": 900,
        "sparsity": 0.0,
        "latency_p50_ms": 0.05,
        "latency_p99_ms": 0.07,
        "invoke_p50_ms": 0.03,
        "throughput_images_per_s": 20000.0,
    }


METRICS = {
    "keras_float": classification_row(0.857, 0, 0.0),
    "tflite_float32": classification_row(0.857, 0, 0.0),
    "tflite_int8": classification_row(0.852, 1, 0.005),  # one image: never decides
    "tflite_pruned_int8": classification_row(0.59, 56, 0.267),
    "tflite_qat_int8": classification_row(0.85, 2, 0.007),  # within 1 pp
    "tflite_pqat_int8": classification_row(0.78, 16, 0.077),
}


def test_auto_fine_tune_epochs_follow_the_train_split_and_a_number_is_kept():
    small, large = (export_fine_tune.resolve_epochs("auto", count) for count in (400, 4000))
    assert small > large >= export_fine_tune.AUTO_EPOCHS[0] and small <= export_fine_tune.AUTO_EPOCHS[1]
    assert export_fine_tune.resolve_epochs(3, 400) == 3
    assert export_fine_tune.resolve_epochs("auto", 10**7) == export_fine_tune.AUTO_EPOCHS[0]
    assert parse_params({"export": {"prune_epochs": "auto", "qat_epochs": 2}}).export.qat_epochs == 2
    assert ExportParams().prune_epochs == "auto" and ExportParams().max_variant_accuracy_drop == 0.01


def test_pruning_a_small_train_split_keeps_the_float_models_accuracy(tmp_path):
    """120 train images are two optimizer steps an epoch: the old fixed 4 epochs ramped 75% sparsity in and out of a
    LeNet in 8 steps. auto trains about FINE_TUNE_STEPS steps and keeps the best epoch after the ramp by val_loss."""
    keras.utils.set_random_seed(0)
    (train, labels), val, (test, test_labels) = make_images(40, seed=1), make_images(8, seed=3), make_images(20, seed=2)
    model = build_trained_model(train, labels)
    model.fit(train.astype(np.float32), labels, batch_size=16, epochs=8, verbose=0)
    float_accuracy = np.mean(model.predict(test.astype(np.float32), verbose=0).argmax(axis=1) == test_labels)
    pruned = export_fine_tune.prune_classifier(
        model,
        "lenet5",
        Examples.from_arrays(train, labels),
        target_sparsity=0.75,
        epochs="auto",
        end_fraction=0.5,
        learning_rate=2e-4,
        min_weights=100,
        seed=0,
        log_dir=tmp_path / "pruning",
        val=Examples.from_arrays(*val),
    )
    pruned_accuracy = np.mean(pruned.predict(test.astype(np.float32), verbose=0).argmax(axis=1) == test_labels)
    kernels = [
        layer.kernel.numpy()
        for layer in pruned.get_layer("lenet5").layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense) and layer.kernel.shape.num_elements() >= 100
    ]
    assert np.mean([np.mean(kernel == 0) for kernel in kernels]) == pytest.approx(0.75, abs=0.02)
    assert float_accuracy >= 0.9 and pruned_accuracy >= float_accuracy - 0.01, (float_accuracy, pruned_accuracy)


def test_a_variant_far_behind_the_float_model_is_not_for_shipping():
    refused = variants_not_for_shipping(METRICS, ExportParams())
    assert sorted(refused) == ["pqat_int8", "pruned_int8"]
    assert refused["pruned_int8"] == (
        "accuracy 0.5900 vs the float model's 0.8570 (-26.7 pp, 56 test images), beyond "
        "export.max_variant_accuracy_drop 1 pp"
    )
    assert list(variants_not_for_shipping(METRICS, ExportParams(max_variant_accuracy_drop=0.1))) == ["pruned_int8"]
    mae = {"keras_float": {"mae": 2.0}, "tflite_float32": {"mae": 2.0, "mae_increase": 0.0}}
    mae["tflite_qat_int8"] = {"mae": 2.4, "mae_increase": 0.2}
    mae["tflite_pruned_int8"] = {"mae": 2.08, "mae_increase": 0.04}
    refused_mae = variants_not_for_shipping(mae, ExportParams())
    assert list(refused_mae) == ["qat_int8"] and "+20.0% vs the float model's 2.0000" in refused_mae["qat_int8"]
    assert "max_variant_error_increase 5%" in refused_mae["qat_int8"]


def test_a_variant_not_for_shipping_is_measured_and_marked_but_its_file_never_exported(tmp_path, monkeypatch):
    converted = {name.removeprefix("tflite_"): b"TFL3" + name.encode() for name in METRICS if name != "keras_float"}
    monkeypatch.setattr(export.variants_lib, "build_tflite_variants", lambda *args, **kwargs: (converted, {}, []))
    monkeypatch.setattr(export, "measure_variants", lambda *args, **kwargs: METRICS)
    monkeypatch.setattr(export.timing, "lap", lambda name: None)
    (tmp_path / "artifacts/train").mkdir(parents=True)
    (tmp_path / "artifacts/train/model.keras").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    prepared = Prepared(
        "classification", None, "lenet5", None, (np.zeros((1, 4, 4, 1), np.uint8), np.zeros(1)), {}, None, None, None
    )
    params = ExportParams(variants=tuple(converted), latency_runs=10)
    variants = export.build_and_measure_variants(prepared, params, log_dir=tmp_path / "logs")
    assert sorted(variants.not_for_shipping) == ["pqat_int8", "pruned_int8"]
    assert sorted(variants.files) == ["model_float32.tflite", "model_int8.tflite", "model_qat_int8.tflite"]

    registration = Registration("m", 3, False, ["evaluate did not bless the model"])
    summary = export_summary.write_summary(tmp_path, variants, {"blessed": False}, 0.0, registration, "run")
    assert json.loads((tmp_path / "summary.json").read_text())["not_for_shipping"] == variants.not_for_shipping
    assert summary["tflite_pruned_int8"]["accuracy"] == 0.59  # still measured and listed
    report = export_report.format_report(
        METRICS,
        model_name="m",
        version=3,
        promoted=False,
        why_not=[],
        gate={"variant": "int8", "passed": True, "reasons": ["ok"]},
        num_threads=1,
        not_for_shipping=variants.not_for_shipping,
    )
    assert "| tflite_pruned_int8 (not for shipping) |" in report and "| tflite_qat_int8 " in report
    assert "**pruned_int8** is not for shipping (its file is not exported): accuracy 0.5900" in report
    card = "\n".join(export_model_card._variants(METRICS, "int8", "a CPU", 1, variants.not_for_shipping))
    assert "| pqat\\_int8 **not for shipping** |" in card and "| qat\\_int8 |" in card
