"""Reads data/prepared, artifacts/train and artifacts/evaluate; writes artifacts/export and metrics/export.json.

artifacts/export holds the serving SavedModel in TF Serving layout (saved_model/<name>/<version>/),
one model_<variant>.tflite per variant in params (components/export_variants.py makes them),
labels.txt, report.md and variants.png. The version is the one the MLflow model registry gives the
float model; it becomes `champion` only if evaluate blessed it AND the int8 gate passes.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from components import export_variants as variants_lib
from pipelines import records, tflite, tracking
from pipelines.config import ExportParams, load_params, registered_model_name
from models.loading import load_trained_model
from pipelines.outputs import atomic_directory, write_json

PREPARED_DIR = Path("data/prepared")
TRAIN_DIR = Path("artifacts/train")
BLESSING_FILE = Path("artifacts/evaluate/blessing.json")
EXPORT_DIR = Path("artifacts/export")
METRICS_FILE = Path("metrics/export.json")
CHAMPION_ALIAS = "champion"
REFERENCE = "keras_float"  # the trained model itself: every variant is compared with it
LATENCY_ROUNDS = 5  # variants are timed in interleaved rounds, so a noisy neighbour hits them all alike


def tflite_file(variant: str) -> str:
    return f"model_{variant}.tflite"


class ServingModule(tf.Module):
    """Raw uint8 images in; `serve` (the serving_default signature) returns probabilities, class ids
    and class names, calling the module returns the probabilities alone."""

    def __init__(self, model: keras.Model, class_names: list[str]):
        super().__init__(name="serving")
        self.model = model
        # A variable, not a constant, so the loaded SavedModel still has the names (predict lists top-k by name).
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")
        height, width, channels = model.input_shape[1:]
        spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])
        # An instance attribute named __call__ is what makes the *loaded* SavedModel callable, which
        # mlflow's pyfunc wrapper for tf.Module models (and so `mlflow models serve`) calls. That
        # wrapper converts a single tensor to numpy but passes a dict of tensors through, which the
        # REST server then cannot serialize: hence one tensor here.
        self.__call__ = tf.function(self._probabilities, input_signature=[spec])

    def _probabilities(self, images):
        return self.model(tf.cast(images, tf.float32), training=False)

    def _serve(self, images):
        probabilities = self._probabilities(images)
        class_ids = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_ids": class_ids, "class_names": tf.gather(self.class_names, class_ids)}


def build_tflite_variants(model, classifier_name, train_images, train_labels, params: ExportParams,
                          log_dir) -> tuple[dict[str, bytes], dict[str, str]]:
    """{variant: .tflite bytes} for every variant in params, in the order params lists them, and
    {variant: note} for the QAT variants where tfmot could not train some layers (see
    export_variants.quantize_apply_skipping); such a variant is left out if the interpreter cannot run it."""
    representative = variants_lib.select_representative_images(train_images, params.representative_samples, params.seed)
    fine_tune = {"epochs": params.qat_epochs, "learning_rate": params.qat_learning_rate, "seed": params.seed}
    pruned = None
    if {"pruned_int8", "pqat_int8"} & set(params.variants):
        pruned = variants_lib.prune_classifier(
            model, classifier_name, train_images, train_labels, target_sparsity=params.prune_target_sparsity,
            epochs=params.prune_epochs, end_fraction=params.prune_end_fraction, learning_rate=params.prune_learning_rate,
            min_weights=params.prune_min_weights, seed=params.seed, log_dir=log_dir,
        )
    converted, notes = {}, {}
    for variant in params.variants:
        if variant in variants_lib.FLOAT_VARIANTS or variant == "int8":
            converted[variant] = variants_lib.convert_to_tflite(model, variant, representative)
        elif variant == "pruned_int8":
            converted[variant] = variants_lib.convert_to_tflite(pruned, "int8", representative)
        else:  # qat_int8, pqat_int8
            base = pruned if variant == "pqat_int8" else model
            qat, float_layers = variants_lib.quantization_aware_classifier(
                base, train_images, train_labels, classifier_name, preserve_sparsity=variant == "pqat_int8", **fine_tune)
            content = variants_lib.convert_to_tflite(qat, "int8", representative)
            if float_layers:
                notes[variant] = (f"tfmot has no quantization-aware training for {len(float_layers)} layer(s): {', '.join(float_layers)}; "
                                  "they stayed float in the fine-tune and the converter quantized them post-training")
                problem = tflite.run_problem(content, representative[:1].astype(np.uint8))
                if problem:
                    notes[variant] += (f". The converted model does not run in ai_edge_litert ({problem}), so {variant} is not "
                                       "exported; int8 (post-training) is this model's full-integer variant")
                    print(f"{variant}: {notes[variant]}")
                    continue
            converted[variant] = content
    return converted, notes


def class_recalls(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.array([np.mean(predictions[labels == k] == k) if np.any(labels == k) else np.nan for k in range(num_classes)])


def measure_variants(model: keras.Model, model_size: int, converted: dict[str, bytes], images, labels, *,
                     num_threads: int, latency_runs: int, batch_size: int) -> dict[str, dict]:
    """One row per variant, every TFLite variant run by the same interpreter settings.

    latency_*: one image per call including the input quantization and output dequantization a
    user pays; invoke_*: the interpreter call alone; throughput: images/s in batches of batch_size.
    accuracy_drop, max_class_drop and agreement compare with the float Keras model (REFERENCE).
    """
    if len(images) == 0:
        raise ValueError("the test split is empty: there is nothing to measure the exported variants on")
    num_classes = int(model.output_shape[-1])
    keras_call = tf.function(lambda batch: model(batch, training=False))
    runners = {REFERENCE: None, **{f"tflite_{v}": tflite.TFLiteClassifier(content, num_threads) for v, content in converted.items()}}
    predictions = {REFERENCE: np.argmax(model.predict(images.astype(np.float32), batch_size=256, verbose=0), axis=-1)}
    for name, runner in runners.items():
        if runner is not None:
            predictions[name] = np.argmax(runner.predict(images, batch_size=batch_size), axis=-1)

    timed = {name: {"latency": [], "invoke": [], "batch": []} for name in runners}
    single, batch = images[:1], images[:batch_size]
    runs = max(1, latency_runs // LATENCY_ROUNDS)
    for _ in range(LATENCY_ROUNDS):
        for name, runner in runners.items():
            # Default arguments bind this iteration's objects (time_calls calls the lambda at once anyway).
            if runner is None:
                one, many = tf.constant(single, tf.float32), tf.constant(batch, tf.float32)
                timed[name]["latency"].extend(tflite.time_calls(lambda: keras_call(tf.constant(single, tf.float32)).numpy(), runs))
                timed[name]["invoke"].extend(tflite.time_calls(lambda x=one: keras_call(x), runs))
                timed[name]["batch"].extend(tflite.time_calls(lambda x=many: keras_call(x), max(3, runs // 10)))
                continue
            quantized_one, quantized_many = runner.quantize_input(single), runner.quantize_input(batch)
            timed[name]["latency"].extend(tflite.time_calls(lambda r=runner: r.predict(single), runs))
            timed[name]["invoke"].extend(tflite.time_calls(lambda r=runner, x=quantized_one: r.invoke(x), runs))
            timed[name]["batch"].extend(tflite.time_calls(lambda r=runner, x=quantized_many: r.invoke(x), max(3, runs // 10)))

    reference_correct = int(np.sum(predictions[REFERENCE] == labels))
    reference_recalls = class_recalls(predictions[REFERENCE], labels, num_classes)
    metrics = {}
    for name in runners:
        content = converted[name.removeprefix("tflite_")] if name != REFERENCE else None
        correct = int(np.sum(predictions[name] == labels))
        metrics[name] = {
            "accuracy": correct / len(labels),
            # from counts, so one image of 500 is exactly 0.002 and compares equal to a 0.002 threshold
            "accuracy_drop": (reference_correct - correct) / len(labels),
            "max_class_drop": float(np.nanmax(reference_recalls - class_recalls(predictions[name], labels, num_classes))),
            "agreement": float(np.mean(predictions[name] == predictions[REFERENCE])),
            "size_bytes": model_size if content is None else len(content),
            "gzip_bytes": None if content is None else len(gzip.compress(content, compresslevel=9, mtime=0)),
            "sparsity": variants_lib.keras_weight_sparsity(model) if content is None else tflite.weight_sparsity(content),
            "latency_p50_ms": float(np.percentile(timed[name]["latency"], 50)),
            "latency_p99_ms": float(np.percentile(timed[name]["latency"], 99)),
            "invoke_p50_ms": float(np.percentile(timed[name]["invoke"], 50)),
            "throughput_images_per_s": float(len(batch) / (np.median(timed[name]["batch"]) / 1000)),
        }
    return metrics


def decide_int8_gate(metrics: dict[str, dict], params: ExportParams) -> dict:
    """The gate variant's accuracy and per-class recall may fall at most the params' thresholds below the float model's."""
    if f"tflite_{params.gate_variant}" not in metrics:
        return {"variant": params.gate_variant, "passed": False,
                "reasons": [f"gate_variant {params.gate_variant} was not exported (see the report's notes); choose another export.gate_variant"]}
    row = metrics[f"tflite_{params.gate_variant}"]
    reasons = []
    if row["accuracy_drop"] > params.max_int8_accuracy_drop + 1e-9:
        reasons.append(f"{params.gate_variant} accuracy drop {row['accuracy_drop']:.4f} > max_int8_accuracy_drop {params.max_int8_accuracy_drop}")
    if row["max_class_drop"] > params.max_int8_class_drop + 1e-9:
        reasons.append(f"{params.gate_variant} worst per-class recall drop {row['max_class_drop']:.4f} > max_int8_class_drop {params.max_int8_class_drop}")
    if not reasons:
        reasons.append(f"{params.gate_variant}: accuracy drop {row['accuracy_drop']:.4f} <= {params.max_int8_accuracy_drop}, "
                       f"worst class drop {row['max_class_drop']:.4f} <= {params.max_int8_class_drop}")
        return {"variant": params.gate_variant, "passed": True, "reasons": reasons}
    return {"variant": params.gate_variant, "passed": False, "reasons": reasons}


def plot_variants(metrics: dict[str, dict]) -> plt.Figure:
    """Accuracy against gzipped size and against single-image latency, one labelled point a variant."""
    rows = {name: row for name, row in metrics.items() if row["gzip_bytes"] is not None}
    figure, (by_size, by_latency) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for name, row in rows.items():
        label = name.removeprefix("tflite_")
        by_size.scatter(row["gzip_bytes"] / 1024, row["accuracy"])
        by_size.annotate(label, (row["gzip_bytes"] / 1024, row["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        by_latency.scatter(row["invoke_p50_ms"] * 1000, row["accuracy"])
        by_latency.annotate(label, (row["invoke_p50_ms"] * 1000, row["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    by_size.set(xlabel="gzipped size (KiB)", ylabel="test accuracy", title="accuracy vs size")
    by_latency.set(xlabel="single-image invoke p50 (µs)", title="accuracy vs latency")
    for axes in (by_size, by_latency):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def format_report(metrics: dict[str, dict], *, model_name: str, version: int, promoted: bool, why_not: list[str], gate: dict,
                  num_threads: int, notes: dict[str, str] | None = None, baseline: dict | None = None) -> str:
    table = pd.DataFrame.from_dict(metrics, orient="index").rename_axis("variant")
    table["latency_p50_us"] = table.pop("latency_p50_ms") * 1000
    table["latency_p99_us"] = table.pop("latency_p99_ms") * 1000
    table["invoke_p50_us"] = table.pop("invoke_p50_ms") * 1000
    for column in ("size_bytes", "gzip_bytes", "throughput_images_per_s"):  # integers, not 591595.0000
        table[column] = table[column].map(lambda value: "" if pd.isna(value) else f"{value:,.0f}")
    table = table.astype(object)
    status = f"promoted to `{CHAMPION_ALIAS}`" if promoted else f"**not** `{CHAMPION_ALIAS}`: " + "; ".join(why_not)
    compared = (f"Classical baseline ({baseline['model']}, same train and test splits): test accuracy {baseline['accuracy']:.4f}; "
                f"the float model: {metrics[REFERENCE]['accuracy']:.4f}.\n\n") if baseline else ""
    return (
        f"# Export report: {model_name} version {version}\n\n"
        f"Registered in MLflow as `models:/{model_name}/{version}` (SavedModel `saved_model/{model_name}/{version}/`), {status}.\n\n"
        f"int8 gate ({gate['variant']}): {'passed' if gate['passed'] else 'failed'} — {'; '.join(gate['reasons'])}.\n\n"
        f"{compared}"
        "Accuracy is on the whole test split through the interpreter; drop, worst per-class recall drop and "
        f"agreement compare with the float Keras model ({REFERENCE}); sparsity is the share of zero conv/dense "
        f"weights stored in the file. Every TFLite variant runs in ai_edge_litert with num_threads={num_threads} "
        "and its default XNNPACK delegate; latency is one image per call including (de)quantization, invoke "
        "is the interpreter call alone, throughput is images/s in batches. The keras_float row runs in "
        "TensorFlow (size: model.keras).\n\n"
        f"{table.to_markdown(floatfmt='.4f')}\n\n"  # to_markdown needs tabulate, which dvc brings in
        + "".join(f"**{variant}**: {note}.\n\n" for variant, note in (notes or {}).items())
        + "![accuracy vs size and latency](variants.png)\n"
    )


def serving_signature(image_shape, num_classes: int) -> ModelSignature:
    """What pyfunc (and `mlflow models serve`) takes and returns: uint8 images in, probabilities out.

    The input is left unnamed: mlflow's pyfunc wrapper for tf.Module models accepts only arrays,
    and a named input makes pyfunc pass a dict. The SavedModel's serving_default signature (TF
    Serving, the predict command) still names it `images` and adds class ids and names.
    """
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register_serving_model(module: ServingModule, *, model_name: str, example_images, num_classes: int, tags: dict) -> int:
    """Logs the serving module into the active run and registers it (tags, no alias); returns the version."""
    info = mlflow.tensorflow.log_model(
        module,
        name="serving_model",
        signature=serving_signature(example_images.shape[1:], num_classes),
        input_example=example_images,
        registered_model_name=model_name,
        saved_model_kwargs={"signatures": {"serving_default": module.serve}},
        # The SavedModel needs only TensorFlow to load; inferring requirements would spawn a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}"],
    )
    if info.registered_model_version is None:
        raise RuntimeError(f"MLflow did not return a version for registered model {model_name!r}")
    version = int(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    return version


class ExportCheckFailed(RuntimeError):
    """A written artifact does not read back as what was exported: nothing is promoted."""


def check_serving_parity(saved_model_dir: Path, model: keras.Model, images: np.ndarray, tolerance: float = 1e-4) -> float:
    """Loads the SavedModel from disk and checks that serving_default (uint8 in) gives the trained model's
    probabilities on `images`; returns the largest difference, raises ExportCheckFailed beyond `tolerance`."""
    serving = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    served = np.concatenate([serving(images=tf.constant(images[start:start + 256]))["probabilities"].numpy()
                             for start in range(0, len(images), 256)])
    expected = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    difference = float(np.max(np.abs(served - expected))) if len(images) else 0.0
    if difference > tolerance:
        raise ExportCheckFailed(f"{saved_model_dir}: serving_default differs from the trained model by {difference:.2e} "
                                f"(tolerance {tolerance}) on the test split")
    return difference


def check_written_files(directory: Path, expected: dict[str, bytes]) -> None:
    """Every file reads back byte for byte, and every .tflite loads in the interpreter."""
    for name, content in expected.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            raise ExportCheckFailed(f"{path}: does not read back as written")
        if name.endswith(".tflite"):
            tflite.load_interpreter(path)


def current_champion_version(model_name: str) -> int | None:
    """The version the champion alias points to now, None without one (a registry that cannot be read raises)."""
    try:
        return int(mlflow.MlflowClient().get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def promotion_decision(blessing: dict, gate: dict, model_name: str) -> tuple[bool, list[str]]:
    """Champion only if evaluate blessed the model, the int8 gate passed, and the champion evaluate compared
    against is still the champion (another pipeline may have promoted since): the reasons say why not."""
    reasons = [] if blessing["blessed"] else ["evaluate did not bless the model"]
    reasons += [] if gate["passed"] else gate["reasons"]
    compared = (blessing.get("champion") or {}).get("version")
    if not reasons:
        now = current_champion_version(model_name)
        if now != compared:
            reasons.append(f"the champion of {model_name!r} changed since evaluate compared against "
                           f"{'v' + str(compared) if compared else 'no champion'} (now v{now}): run `dvc repro --force evaluate`")
    return not reasons, reasons


def read_blessing(run_id: str) -> dict:
    """evaluate's decision, which must be about this trained model (the train run's id)."""
    if not BLESSING_FILE.is_file():
        raise FileNotFoundError(f"{BLESSING_FILE}: not found; run the evaluate stage first (dvc repro evaluate)")
    with BLESSING_FILE.open() as stream:
        blessing = json.load(stream)
    evaluated = (blessing.get("candidate") or {}).get("run_id")
    if evaluated != run_id:
        raise ValueError(f"{BLESSING_FILE}: evaluates run {evaluated}, but artifacts/train is run {run_id}: run `dvc repro evaluate`")
    return blessing


def main() -> None:
    all_params = load_params()
    params, model_name = all_params.export, registered_model_name(all_params)
    keras.utils.set_random_seed(params.seed)
    with (TRAIN_DIR / "model.json").open() as stream:
        description = json.load(stream)
    run_reference = tracking.read_run_reference(TRAIN_DIR / "run.json")
    blessing = read_blessing(run_reference["run_id"])
    blessed = bool(blessing["blessed"])
    model = load_trained_model(TRAIN_DIR)
    class_names = description["class_names"]
    train_images, train_labels = records.load_split_arrays(PREPARED_DIR, "train")
    test_images, test_labels = records.load_split_arrays(PREPARED_DIR, "test")

    # Everything is written and read back in a staging directory first; the model is registered only
    # then, and the champion alias moves last, so a failure at any step leaves the previous champion.
    with tracking.stage_run(run_reference["experiment_name"], run_id=run_reference["run_id"]), atomic_directory(EXPORT_DIR) as staging:
        log_dir = tracking.tensorboard_dir(run_reference["tensorboard"]) / "pruning"
        converted, notes = build_tflite_variants(model, description["model"], train_images, train_labels, params, log_dir)
        files = {tflite_file(variant): content for variant, content in converted.items()}
        files[tflite.LABELS_FILE] = "".join(f"{name}\n" for name in class_names).encode()
        for name, content in files.items():
            (staging / name).write_bytes(content)
        metrics = measure_variants(
            model, (TRAIN_DIR / "model.keras").stat().st_size, converted, test_images, test_labels,
            num_threads=params.num_threads, latency_runs=params.latency_runs, batch_size=params.throughput_batch_size,
        )
        gate = decide_int8_gate(metrics, params)

        module = ServingModule(model, class_names)
        pending = staging / "saved_model" / model_name / "pending"
        tf.saved_model.save(module, str(pending), signatures={"serving_default": module.serve})
        parity = check_serving_parity(pending, model, test_images)
        check_written_files(staging, files)
        promoted, why_not = promotion_decision(blessing, gate, model_name)

        version = register_serving_model(
            module, model_name=model_name, example_images=test_images[:2], num_classes=len(class_names),
            tags={"blessed": str(blessed).lower(), "int8_gate": "passed" if gate["passed"] else "failed",
                  "int8_gate.reasons": "; ".join(gate["reasons"])},
        )
        # TF Serving layout: <name>/<version>/ with the version the registry just gave.
        pending.rename(pending.with_name(str(version)))
        report = format_report(metrics, model_name=model_name, version=version, promoted=promoted, why_not=why_not, gate=gate,
                               num_threads=params.num_threads, notes=notes, baseline=blessing.get("baseline"))
        (staging / "report.md").write_text(report)
        figure = plot_variants(metrics)
        figure.savefig(staging / "variants.png", dpi=120)
        plt.close(figure)

        for file_name in ["report.md", "variants.png", *files]:
            mlflow.log_artifact(str(staging / file_name), artifact_path="export")
        if log_dir.is_dir():
            mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/pruning")
        mlflow.log_metrics({f"export.{name}.{key}": value for name, row in metrics.items()
                            for key, value in row.items() if value is not None})
        mlflow.log_metric("export.serving_parity_max_difference", parity)
        mlflow.set_tags({f"export.{variant}.note": note[:5000] for variant, note in notes.items()})
        mlflow.set_tags({"export.version": str(version), "export.promoted": str(promoted).lower(),
                         "export.int8_gate": "; ".join(gate["reasons"]), "export.not_promoted_because": "; ".join(why_not)[:5000]})
        write_json(METRICS_FILE, {**metrics, "version": version, "registered_model": model_name, "blessed": blessed, "promoted": promoted,
                                  "not_promoted_because": why_not, "variant_notes": notes, "serving_parity_max_difference": parity,
                                  "int8_gate": {"passed": gate["passed"], "variant": gate["variant"], "reasons": gate["reasons"]}})
    check_written_files(EXPORT_DIR, files)  # the export in place, read back
    if promoted:  # the last step: only a complete, checked export becomes the champion
        mlflow.MlflowClient().set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    print(f"{EXPORT_DIR}: {model_name} version {version}, {'champion' if promoted else 'not champion: ' + '; '.join(why_not)}; "
          f"{'; '.join(gate['reasons'])}")


if __name__ == "__main__":
    main()
