"""The GPU code paths, run on a CPU: mixed_bfloat16 and XLA train, the saved model is float32 and
converts to TFLite; the GPU benchmark refuses to run without a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.export import variants as export_variants
from components.train import fit as train_fit
from components.train import hardware, schedule
from components.train import model as train_model
from components.train import stage as train
from models.loading import load_trained_model
from tfpipe import records
from tfpipe.config import ParamsError
from tfpipe.tflite import TFLiteClassifier

ROOT = Path(__file__).resolve().parents[1]
# LeNet-5 or the MLP with batch norm (its moving statistics are non-trainable weights float32_copy must carry
# over), on the 12x12 toy images (LeNet-5 resizes them to 28x28 inside the model); one epoch moves every weight.
# `on` and `off` unquoted, as a user writes them (YAML 1.1 would read booleans).
PARAMS = """preprocess:
  image_height: auto
  image_width: auto
train:
  model: {model}
  epochs: 1
  batch_size: 16
  batch_norm: true
  mixed_precision: {mixed_precision}
  jit_compile: {jit_compile}
tracking:
  log_augmented_images: 0
"""


@pytest.fixture(autouse=True)
def float32_policy():
    """A failed mixed-precision run would leave its global dtype policy to the tests after it."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def nested_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from nested_layers(layer)


def prepared_images(prepared_dir: Path) -> np.ndarray:
    return np.stack(
        [
            image
            for split in ("train", "val", "test")
            for image, _ in records.read_split(prepared_dir, split).as_numpy_iterator()
        ]
    )


def run_train_stage(tmp_path: Path, monkeypatch, mixed_precision: str, jit_compile: str, model: str = "lenet5") -> dict:
    """preprocess and train in tmp_path; returns the MLflow run, the compiled (trained) model and the saved model."""
    from components.preprocess import stage as preprocess

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        PARAMS.format(model=model, mixed_precision=mixed_precision, jit_compile=jit_compile)
    )
    compiled, original_compile = [], schedule.compile_model

    def compile_and_keep(model, *args, **kwargs):  # the model that trains, before any float32 copy
        original_compile(model, *args, **kwargs)
        compiled.append(model)

    monkeypatch.setattr(train_fit, "compile_model", compile_and_keep)  # the fit of each phase compiles
    preprocess.main()
    train.main()
    run_id = json.loads((tmp_path / "artifacts/train/run.json").read_text())["run_id"]
    return {
        "run": mlflow.get_run(run_id),
        "trained": compiled[-1],
        "saved": load_trained_model(tmp_path / "artifacts/train"),
    }


def assert_float32(model: keras.Model) -> None:
    for layer in nested_layers(model):
        assert layer.dtype_policy.name == "float32", f"{layer.name}: {layer.dtype_policy.name}"
    assert {weight.dtype for weight in model.weights} == {tf.float32}
    assert model.output.dtype == tf.float32


# XLA and op determinism exclude each other for LeNet-5's max pooling (test_xla_or_determinism_...), and op
# determinism, once on, stays on in this process: XLA trains the MLP (batch norm too, no max pooling).
@pytest.mark.parametrize("model, jit_compile", [("lenet5", "off"), ("mlp", "on")])
def test_mixed_bfloat16_trains_on_cpu_and_saves_a_matching_float32_model(
    prepared_dir, tmp_path, monkeypatch, mlflow_store, model, jit_compile
):
    stage = run_train_stage(tmp_path, monkeypatch, "mixed_bfloat16", jit_compile, model=model)
    tags, trained, saved = stage["run"].data.tags, stage["trained"], stage["saved"]
    assert stage["run"].info.status == "FINISHED"
    assert (tags["precision"], tags["jit_compile"], tags["device"]) == (
        "mixed_bfloat16",
        "true" if jit_compile == "on" else "false",
        "CPU",
    )
    assert trained.jit_compile is (jit_compile == "on")
    logits = trained.get_layer(model).get_layer("logits")
    assert (logits.dtype_policy.name, logits.compute_dtype) == (
        "mixed_bfloat16",
        "bfloat16",
    )  # it did train in bfloat16

    assert_float32(saved)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in nested_layers(saved))
    for trained_weights, saved_weights in zip(trained.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(saved_weights, trained_weights)  # the same values, moving statistics included

    images = prepared_images(prepared_dir).astype(np.float32)
    trained_probabilities = trained.predict(images, verbose=0)
    saved_probabilities = saved.predict(images, verbose=0)
    assert saved_probabilities.dtype == np.float32 and trained_probabilities.dtype == np.float32
    # bfloat16 keeps 8 significant bits: a relative error of 2^-8 per operation, a few of them summed in the logits.
    np.testing.assert_allclose(saved_probabilities, trained_probabilities, atol=0.01)
    assert np.mean(saved_probabilities.argmax(-1) == trained_probabilities.argmax(-1)) >= 0.95


def test_jit_compile_trains_deterministically_on_cpu_a_model_without_max_pooling(
    prepared_dir, tmp_path, monkeypatch, mlflow_store
):
    stage = run_train_stage(tmp_path, monkeypatch, "off", "on", model="mlp")
    assert (stage["run"].data.tags["precision"], stage["run"].data.tags["jit_compile"]) == ("float32", "true")
    assert stage["trained"].jit_compile is True
    assert_float32(stage["saved"])
    images = prepared_images(prepared_dir).astype(np.float32)
    np.testing.assert_allclose(
        stage["saved"].predict(images, verbose=0), stage["trained"].predict(images, verbose=0), atol=1e-5
    )


def test_the_float32_model_of_a_mixed_run_converts_to_tflite(prepared_dir, tmp_path, monkeypatch, mlflow_store):
    saved = run_train_stage(tmp_path, monkeypatch, "mixed_bfloat16", "off")["saved"]
    images = prepared_images(prepared_dir)
    keras_probabilities = saved.predict(images.astype(np.float32), verbose=0)

    float_model = TFLiteClassifier(export_variants.convert_to_tflite(saved, "float32"))
    np.testing.assert_allclose(float_model.predict(images), keras_probabilities, atol=1e-4)

    representative = export_variants.select_representative_images(images, 50, seed=0)
    int8_model = TFLiteClassifier(export_variants.convert_to_tflite(saved, "int8", representative))
    assert int8_model.input["dtype"] == np.int8 and int8_model.output["dtype"] == np.int8
    int8_probabilities = int8_model.predict(images)
    np.testing.assert_allclose(int8_probabilities, keras_probabilities, atol=0.05)  # int8 probabilities: steps of 1/256
    assert np.mean(int8_probabilities.argmax(-1) == keras_probabilities.argmax(-1)) >= 0.9


def test_xla_or_determinism_for_a_model_with_max_pooling(prepared_dir, tmp_path, monkeypatch, mlflow_store):
    """tf2xla has no deterministic max-pooling gradient: with op determinism on, the XLA train step failed in
    fit() ("GPU MaxPool gradient ops do not yet have a deterministic XLA implementation", on a CPU too), so
    the default params (deterministic, XLA `auto`) could not train LeNet-5 on a GPU."""
    with pytest.raises(
        ParamsError,
        match="train.jit_compile is on and train.deterministic is true, but XLA has no deterministic "
        "gradient for max pooling \\(lenet5/max_pooling2d.*set train.deterministic: false",
    ):
        run_train_stage(tmp_path, monkeypatch, "off", "on")
    assert not (tmp_path / "artifacts/train").exists() and mlflow.search_runs(search_all_experiments=True).empty

    from models import registry

    lenet = train_model.build_training_model(
        keras.Sequential([keras.Input((28, 28, 1))], name="preprocessing"),
        registry.get_builder("lenet5")(input_shape=(28, 28, 1), num_classes=3),
    )
    on_a_gpu = hardware.HardwarePlan("mixed_bfloat16", True, "default", "GPU: test")
    assert (
        hardware.settle_jit_compile(on_a_gpu, lenet, "auto", deterministic=True).jit_compile is False
    )  # determinism wins
    assert hardware.settle_jit_compile(on_a_gpu, lenet, "auto", deterministic=False) == on_a_gpu
    mlp = train_model.build_training_model(
        keras.Sequential([keras.Input((28, 28, 1))], name="preprocessing"),
        registry.get_builder("mlp")(input_shape=(28, 28, 1), num_classes=3),
    )
    assert hardware.settle_jit_compile(on_a_gpu, mlp, "on", deterministic=True) == on_a_gpu


def test_gpu_benchmark_without_a_gpu_fails_and_says_what_to_install():
    environment = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }  # no GPU, even on a GPU machine
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_throughput.py", "--steps", "1", "--repeats", "1", "--batch-size", "2"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "TensorFlow sees no GPU" in result.stderr
    assert "make install-gpu" in result.stderr and "tensorflow[and-cuda]" in result.stderr
    assert "PhysicalDevice(name='/physical_device:CPU:0'" in result.stderr  # what list_physical_devices() returned
    assert "--allow-cpu" in result.stderr
    assert "images/s" not in result.stdout
