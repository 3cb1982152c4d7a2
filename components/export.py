"""Reads data/prepared, artifacts/train and artifacts/evaluate; writes artifacts/export and metrics/export.json.

artifacts/export holds the serving SavedModel in TF Serving layout (saved_model/<name>/<version>/),
float32, int8 and pruned int8 TFLite models, pruned.keras and report.md. The version is the one the
MLflow model registry gives the float model; only a blessed model gets the `champion` alias.
"""
from __future__ import annotations

import gzip
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from pipelines import records, tracking
from pipelines.config import load_params

PREPARED_DIR = Path("data/prepared")
TRAIN_DIR = Path("artifacts/train")
BLESSING_FILE = Path("artifacts/evaluate/blessing.json")
EXPORT_DIR = Path("artifacts/export")
METRICS_FILE = Path("metrics/export.json")
CHAMPION_ALIAS = "champion"
PRUNE_BATCH_SIZE = 64
TFLITE_FILES = {
    "tflite_float32": "model_float32.tflite",
    "tflite_int8": "model_int8.tflite",
    "tflite_pruned_int8": "pruned_int8.tflite",
}
# TFLite ops whose input 1 is a weight tensor: the conv/dense kernels that sparsity is counted over.
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


class ServingModule(tf.Module):
    """Raw uint8 images in; probabilities, class ids and class names out."""

    def __init__(self, model: keras.Model, class_names: list[str]):
        super().__init__(name="serving")
        self.model = model
        self.class_names = tf.constant(class_names)
        height, width, channels = model.input_shape[1:]
        spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")
        # An instance attribute named __call__ is what makes the *loaded* SavedModel callable,
        # which mlflow's pyfunc wrapper for tf.Module models relies on.
        self.__call__ = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        probabilities = self.model(tf.cast(images, tf.float32), training=False)
        class_ids = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_ids": class_ids, "class_names": tf.gather(self.class_names, class_ids)}


def select_representative_images(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` images drawn without replacement, as float32 raw pixel values (what the model takes)."""
    indices = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    return images[np.sort(indices)].astype(np.float32)


def convert_to_tflite(model: keras.Model, representative_images: np.ndarray | None = None) -> bytes:
    """Float32 TFLite, or full-integer int8 (int8 input and output) when calibration images are given."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative_images is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    model_bytes = converter.convert()
    if representative_images is not None:
        interpreter = Interpreter(model_content=model_bytes)
        dtypes = [detail["dtype"] for detail in interpreter.get_input_details() + interpreter.get_output_details()]
        if any(dtype != np.int8 for dtype in dtypes):
            raise ValueError(f"full-integer conversion left non-int8 inputs or outputs: {[np.dtype(d).name for d in dtypes]}")
    return model_bytes


def build_pruning_schedule(num_examples: int, *, batch_size: int, epochs: int, target_sparsity: float):
    """PolynomialDecay from 0 to the target over the fine-tune.

    Masks are only updated at steps that are multiples of `frequency` (default 100), so a short
    fine-tune with the default would stop short of the target: end_step is the last multiple of
    frequency within the fine-tune, and the remaining steps train with the final mask.
    """
    total_steps = math.ceil(num_examples / batch_size) * epochs
    frequency = max(1, total_steps // 10)
    end_step = total_steps - total_steps % frequency
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target_sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )


def build_prunable_model(model: keras.Model, classifier_name: str, schedule) -> keras.Model:
    """The same preprocessor and softmax around a copy of the classifier whose Conv2D/Dense are pruned."""
    classifier = model.get_layer(classifier_name)
    # clone_model re-creates layers without their weights; copying first leaves `model` untouched.
    classifier_copy = keras.models.clone_model(classifier)
    classifier_copy.set_weights(classifier.get_weights())

    def wrap(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruned_classifier = keras.models.clone_model(classifier_copy, clone_function=wrap)
    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    logits = pruned_classifier(model.get_layer("preprocessing")(inputs))
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="pruned_model")


def prune_model(model, classifier_name, images, labels, *, target_sparsity, epochs, learning_rate, seed, log_dir):
    """Fine-tunes a pruned copy of `model` on (uint8 images, labels); returns it with pruning stripped."""
    schedule = build_pruning_schedule(
        len(images), batch_size=PRUNE_BATCH_SIZE, epochs=epochs, target_sparsity=target_sparsity
    )
    prunable = build_prunable_model(model, classifier_name, schedule)
    prunable.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed)
        .batch(PRUNE_BATCH_SIZE)
        .map(lambda image, label: (tf.cast(image, tf.float32), label), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir))]
    prunable.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=2)
    return tfmot.sparsity.keras.strip_pruning(prunable)


def keras_weight_sparsity(model: keras.Model) -> float:
    """Fraction of exactly-zero values in the Conv2D/Dense kernels, nested models included."""

    def kernels(layer):
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                yield from kernels(inner)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            yield layer.kernel.numpy()

    weights = list(kernels(model))
    return sum(int(np.sum(w == 0)) for w in weights) / sum(w.size for w in weights)


def tflite_weight_sparsity(model_bytes: bytes) -> float:
    """Fraction of exactly-zero values in the weight tensors (input 1) of conv and dense ops.

    int8 weights are quantized symmetrically (zero point 0): a stored 0 is a pruned weight or one
    that rounded to zero, which is what gzip sees.
    """
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    zeros = total = 0
    for op in interpreter._get_ops_details():  # the public API has no op list; this is the Python wrapper's own
        if op["op_name"] in WEIGHT_OPS:
            weights = interpreter.get_tensor(op["inputs"][1])
            zeros += int(np.sum(weights == 0))
            total += weights.size
    return zeros / total


def make_keras_predictor(model: keras.Model):
    """predict(uint8 [H,W,C]) -> probabilities [K], one image per call like the TFLite predictors."""
    call = tf.function(lambda batch: model(batch, training=False))
    return lambda image: call(tf.constant(image[np.newaxis], tf.float32)).numpy()[0]


def make_tflite_predictor(model_bytes: bytes):
    """predict(uint8 [H,W,C]) -> probabilities [K]; int8 models get quantized input, dequantized output."""
    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def predict(image):
        batch = image[np.newaxis].astype(np.float32)
        if source["dtype"] == np.int8:
            scale, zero_point = source["quantization"]
            batch = np.clip(np.round(batch / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        output = interpreter.get_tensor(target["index"])[0]
        if target["dtype"] == np.int8:
            scale, zero_point = target["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output

    return predict


def measure_variants(variants: dict[str, tuple], images, labels, latency_runs: int = 100) -> dict[str, dict]:
    """{name: (predict, model_bytes, sparsity)} -> {name: metrics}, every variant measured the same way.

    accuracy_drop and agreement compare with the first variant (the float Keras model).
    """
    if len(images) == 0:
        raise ValueError("the test split is empty: there is nothing to measure the exported variants on")
    predictions = {name: np.array([np.argmax(predict(image)) for image in images]) for name, (predict, *_) in variants.items()}
    reference = next(iter(predictions.values()))
    metrics = {}
    for name, (predict, model_bytes, sparsity) in variants.items():
        for _ in range(10):  # warm-up: the first calls trace, allocate and fill caches
            predict(images[0])
        timings = []
        for index in range(latency_runs):
            start = time.perf_counter()
            predict(images[index % len(images)])
            timings.append((time.perf_counter() - start) * 1000)
        metrics[name] = {
            "accuracy": float(np.mean(predictions[name] == labels)),
            "accuracy_drop": float(np.mean(reference == labels) - np.mean(predictions[name] == labels)),
            "agreement": float(np.mean(predictions[name] == reference)),
            "size_bytes": len(model_bytes),
            "gzip_bytes": len(gzip.compress(model_bytes, compresslevel=9, mtime=0)),
            "sparsity": float(sparsity),
            "latency_p50_ms": float(np.percentile(timings, 50)),
            "latency_p99_ms": float(np.percentile(timings, 99)),
        }
    return metrics


def format_report(metrics: dict[str, dict], *, model_name: str, version: int, promoted: bool) -> str:
    # object dtype keeps byte counts as integers in the table instead of 591595.0000.
    table = pd.DataFrame.from_dict(metrics, orient="index").rename_axis("variant").astype(object)
    status = f"promoted to `{CHAMPION_ALIAS}`" if promoted else f"not blessed by evaluate, so not `{CHAMPION_ALIAS}`"
    return (
        f"# Export report: {model_name} version {version}\n\n"
        f"Registered in MLflow as {model_name} version {version}, {status}.\n"
        "Accuracy is on the whole test split; agreement is the share of test images where the variant "
        "predicts the same class as the float Keras model; sparsity is the share of zero conv/dense "
        "weights; latency is one image per call on one thread.\n\n"
        # to_markdown needs tabulate, which dvc (a dependency) brings in.
        f"{table.to_markdown(floatfmt='.4f')}\n"
    )


def serving_signature(image_shape, num_classes: int) -> ModelSignature:
    # The input is left unnamed: mlflow's pyfunc wrapper for tf.Module models accepts only arrays,
    # and a named input makes pyfunc pass a dict. TF Serving still sees the input as `images`.
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))])
    outputs = Schema([
        TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities"),
        TensorSpec(np.dtype(np.int64), (-1,), "class_ids"),
        TensorSpec(np.dtype(object), (-1,), "class_names"),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register_serving_model(module: ServingModule, *, model_name: str, example_images, num_classes: int, promote: bool) -> int:
    """Logs the serving module into the active run, registers it, and aliases it champion if promoted."""
    info = mlflow.tensorflow.log_model(
        module,
        name="serving_model",
        signature=serving_signature(example_images.shape[1:], num_classes),
        input_example=example_images,
        registered_model_name=model_name,
        saved_model_kwargs={"signatures": {"serving_default": module.__call__}},
        # The SavedModel needs only TensorFlow to load; inferring requirements would spawn a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}"],
    )
    if info.registered_model_version is None:
        raise RuntimeError(f"MLflow did not return a version for registered model {model_name!r}")
    version = int(info.registered_model_version)
    if promote:
        mlflow.MlflowClient().set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    return version


def replace_directory(staging: Path, target: Path) -> None:
    """Moves `staging` to `target`, so readers see the old or the new export, never half of one."""
    if not target.exists():
        staging.rename(target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    target.rename(trash / target.name)
    staging.rename(target)
    shutil.rmtree(trash)


def main() -> None:
    params = load_params().export
    keras.utils.set_random_seed(params.seed)
    with (TRAIN_DIR / "model.json").open() as stream:
        description = json.load(stream)
    if not BLESSING_FILE.is_file():
        raise FileNotFoundError(f"{BLESSING_FILE}: not found; run the evaluate stage first (dvc repro evaluate)")
    with BLESSING_FILE.open() as stream:
        promote = bool(json.load(stream)["blessed"])
    run_reference = tracking.read_run_reference(TRAIN_DIR / "run.json")
    model = keras.models.load_model(TRAIN_DIR / "model.keras")
    train_images, train_labels = records.load_split_arrays(PREPARED_DIR, "train")
    test_images, test_labels = records.load_split_arrays(PREPARED_DIR, "test")

    EXPORT_DIR.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{EXPORT_DIR.name}-", dir=EXPORT_DIR.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; a model server often runs as another user
    try:
        with tracking.stage_run(run_reference["experiment_name"], run_id=run_reference["run_id"]) as run:
            representative = select_representative_images(train_images, params.representative_samples, params.seed)
            log_dir = tracking.tensorboard_dir(run.info.run_id) / "pruning"
            pruned = prune_model(
                model, description["model"], train_images, train_labels, target_sparsity=params.prune_target_sparsity,
                epochs=params.prune_epochs, learning_rate=params.prune_learning_rate, seed=params.seed, log_dir=log_dir,
            )
            pruned.save(staging / "pruned.keras")
            tflite = {
                "tflite_float32": convert_to_tflite(model),
                "tflite_int8": convert_to_tflite(model, representative),
                "tflite_pruned_int8": convert_to_tflite(pruned, representative),
            }
            for variant, content in tflite.items():
                (staging / TFLITE_FILES[variant]).write_bytes(content)
            variants = {
                "keras_float": (make_keras_predictor(model), (TRAIN_DIR / "model.keras").read_bytes(), keras_weight_sparsity(model)),
                "keras_pruned": (make_keras_predictor(pruned), (staging / "pruned.keras").read_bytes(), keras_weight_sparsity(pruned)),
            }
            for name, content in tflite.items():
                variants[name] = (make_tflite_predictor(content), content, tflite_weight_sparsity(content))
            metrics = measure_variants(variants, test_images, test_labels)

            module = ServingModule(model, description["class_names"])
            version = register_serving_model(
                module, model_name=params.model_name, example_images=test_images[:2],
                num_classes=len(description["class_names"]), promote=promote,
            )
            # TF Serving layout: <name>/<version>/ with the version the registry just gave.
            serving_dir = staging / "saved_model" / params.model_name / str(version)
            tf.saved_model.save(module, str(serving_dir), signatures={"serving_default": module.__call__})
            report = format_report(metrics, model_name=params.model_name, version=version, promoted=promote)
            (staging / "report.md").write_text(report)

            for file_name in ["report.md", *TFLITE_FILES.values()]:
                mlflow.log_artifact(str(staging / file_name), artifact_path="export")
            if log_dir.is_dir():
                mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/pruning")
            mlflow.log_metrics({f"export.{name}.{key}": value for name, row in metrics.items() for key, value in row.items()})

        METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
        with METRICS_FILE.open("w") as stream:
            json.dump({**metrics, "version": version, "promoted": promote}, stream, indent=2)
        replace_directory(staging, EXPORT_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
