"""Reads data/prepared, artifacts/train and artifacts/evaluate; writes artifacts/export and metrics/export.json.

artifacts/export holds the serving SavedModel in TF Serving layout (saved_model/<name>/<version>/),
one model_<variant>.tflite per variant in params (components/export_variants.py makes them or takes
them from .cache/export/, components/export_measure.py measures them), labels.txt, report.md and
variants.png. The version is the one the MLflow model registry gives the float model; it becomes
`champion` only if evaluate blessed it AND the int8 gate passes.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from components import export_variants as variants_lib
from components.export_measure import measure_variants, slower_than_float32, time_interpreter_settings
from components.export_report import describe_slower_variant, format_report, plot_variants
from models.loading import load_trained_model
from pipelines import cpu, model_trust, paths, records, tflite, tracking
from pipelines.config import ExportParams, load_params, registered_model_name
from pipelines.outputs import atomic_directory, run_stage, write_json

BLESSING_FILE = paths.EVALUATE / "blessing.json"
VARIANT_CACHE_DIR = paths.CACHE / "export"  # converted variants keyed on their inputs (components/export_cache.py)


def tflite_file(variant: str) -> str:
    return f"model_{variant}.tflite"


class ServingModule(tf.Module):
    """Raw uint8 images in; `serve` (the serving_default signature) returns probabilities, class ids
    and class names, calling the module returns the probabilities alone."""

    def __init__(self, model: keras.Model, class_names: list[str], decoding: dict | None = None):
        super().__init__(name="serving")
        # The functions close over the Keras model instead of tracking it as an attribute: the SavedModel
        # then holds these two functions and the model's variables, not a Keras SavedModel of every layer
        # (which no reader here uses, and whose tracing of every layer made each save take ~1 s instead of ~0.2 s).
        self.model_variables = list(model.variables)
        # A variable, not a constant, so the loaded SavedModel still has the names (predict lists top-k by name).
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")
        # How a file becomes the uint8 pixels this model takes (pipelines/images.py's rules, from the manifest):
        # pipelines.predict decodes with them, so serving sees what training saw.
        self.decoding = tf.Variable(json.dumps(decoding or {}, sort_keys=True), trainable=False, name="decoding")
        height, width, channels = model.input_shape[1:]
        spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")

        def probabilities(images):
            return model(tf.cast(images, tf.float32), training=False)

        def serve(images):
            scores = probabilities(images)
            class_ids = tf.argmax(scores, axis=-1)
            return {
                "probabilities": scores,
                "class_ids": class_ids,
                "class_names": tf.gather(self.class_names, class_ids),
            }

        self.serve = tf.function(serve, input_signature=[spec])
        # An instance attribute named __call__ is what makes the *loaded* SavedModel callable, which
        # mlflow's pyfunc wrapper for tf.Module models (and so `mlflow models serve`) calls. That
        # wrapper converts a single tensor to numpy but passes a dict of tensors through, which the
        # REST server then cannot serialize: hence one tensor here.
        self.__call__ = tf.function(probabilities, input_signature=[spec])


def decide_int8_gate(metrics: dict[str, dict], params: ExportParams) -> dict:
    """The gate variant's accuracy and per-class recall may fall at most the params' thresholds below the float
    model's, and a single test image never fails it: on a small test split one image is more than the threshold
    (1 of 230 is 0.0043 > 0.002), which is noise, not a broken quantization. At mnist_5k's 500 test images the
    thresholds are one image overall and two a class already."""
    if f"tflite_{params.gate_variant}" not in metrics:
        return {
            "variant": params.gate_variant,
            "passed": False,
            "reasons": [
                f"gate_variant {params.gate_variant} was not exported (see the report's notes); "
                "choose another export.gate_variant"
            ],
        }
    row = metrics[f"tflite_{params.gate_variant}"]
    reasons = []
    if row["accuracy_drop"] > params.max_int8_accuracy_drop + 1e-9 and row.get("images_lost", 2) >= 2:
        reasons.append(
            f"{params.gate_variant} accuracy drop {row['accuracy_drop']:.4f} "
            f"> max_int8_accuracy_drop {params.max_int8_accuracy_drop}"
        )
    class_drop = row.get("max_class_drop_beyond_one_image", row["max_class_drop"])
    if class_drop > params.max_int8_class_drop + 1e-9:
        reasons.append(
            f"{params.gate_variant} per-class recall drop {class_drop:.4f} (2 or more images of a class) "
            f"> max_int8_class_drop {params.max_int8_class_drop}"
        )
    if not reasons:
        reasons.append(
            f"{params.gate_variant}: accuracy drop {row['accuracy_drop']:.4f} <= {params.max_int8_accuracy_drop}, "
            f"worst class drop {row['max_class_drop']:.4f} <= {params.max_int8_class_drop}"
        )
        return {"variant": params.gate_variant, "passed": True, "reasons": reasons}
    return {"variant": params.gate_variant, "passed": False, "reasons": reasons}


def serving_signature(image_shape, num_classes: int) -> ModelSignature:
    """What pyfunc (and `mlflow models serve`) takes and returns: uint8 images in, probabilities out.

    The input is left unnamed: mlflow's pyfunc wrapper for tf.Module models accepts only arrays,
    and a named input makes pyfunc pass a dict. The SavedModel's serving_default signature (TF
    Serving, the predict command) still names it `images` and adds class ids and names.
    """
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register_serving_model(
    module: ServingModule, *, model_name: str, example_images, num_classes: int, tags: dict
) -> int:
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
    # The digest of the SavedModel as MLflow stored it (its own save of the module), read back from the registry:
    # predict and evaluate load a registered SavedModel only when it still matches (pipelines/model_trust.py).
    with tempfile.TemporaryDirectory(prefix="tfpipe-model-") as scratch:
        stored = model_trust.download_mlflow_model(f"models:/{model_name}/{version}", Path(scratch))
        tags = {**tags, model_trust.DIGEST_TAG: model_trust.saved_model_digest(stored)}
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    return version


class ExportCheckFailed(RuntimeError):
    """A written artifact does not read back as what was exported: nothing is promoted."""


def check_serving_parity(
    saved_model_dir: Path, model: keras.Model, images: np.ndarray, tolerance: float = 1e-4
) -> float:
    """Loads the SavedModel from disk and checks that serving_default (uint8 in) gives the trained model's
    probabilities on `images`; returns the largest difference, raises ExportCheckFailed beyond `tolerance`."""
    serving = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    served = np.concatenate(
        [
            serving(images=tf.constant(images[start : start + 256]))["probabilities"].numpy()
            for start in range(0, len(images), 256)
        ]
    )
    expected = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    difference = float(np.max(np.abs(served - expected))) if len(images) else 0.0
    if difference > tolerance:
        raise ExportCheckFailed(
            f"{saved_model_dir}: serving_default differs from the trained model by {difference:.2e} "
            f"(tolerance {tolerance}) on the test split"
        )
    return difference


def check_written_files(directory: Path, expected: dict[str, bytes]) -> None:
    """Every file reads back byte for byte, and every .tflite loads in the interpreter."""
    for name, content in expected.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            raise ExportCheckFailed(f"{path}: does not read back as written")
        if name.endswith(".tflite"):
            tflite.load_interpreter(path)


def promotion_decision(blessing: dict, gate: dict, model_name: str) -> tuple[bool, list[str]]:
    """Champion only if evaluate blessed the model, the int8 gate passed, and the champion evaluate compared
    against is still the champion (another pipeline may have promoted since): the reasons say why not."""
    reasons = [] if blessing["blessed"] else ["evaluate did not bless the model"]
    reasons += [] if gate["passed"] else gate["reasons"]
    compared = (blessing.get("champion") or {}).get("version")
    if not reasons:
        champion = tracking.champion_version(model_name)  # now: another pipeline may have promoted since
        now = None if champion is None else int(champion.version)
        if now != compared:
            reasons.append(
                f"the champion of {model_name!r} changed since evaluate compared against "
                f"{'v' + str(compared) if compared else 'no champion'} (now v{now}): run `dvc repro --force evaluate`"
            )
    return not reasons, reasons


def read_blessing(run_id: str) -> dict:
    """evaluate's decision, which must be about this trained model (the train run's id)."""
    if not BLESSING_FILE.is_file():
        raise FileNotFoundError(f"{BLESSING_FILE}: not found; run the evaluate stage first (dvc repro evaluate)")
    with BLESSING_FILE.open() as stream:
        blessing = json.load(stream)
    evaluated = (blessing.get("candidate") or {}).get("run_id")
    if evaluated != run_id:
        raise ValueError(
            f"{BLESSING_FILE}: evaluates run {evaluated}, but artifacts/train is run {run_id}: run `dvc repro evaluate`"
        )
    return blessing


@dataclass
class Variants:
    """The TFLite variants, built (or reused) and measured: what the report, the metrics and MLflow show."""

    files: dict[str, bytes]  # file name in the export -> content (.tflite files and labels.txt)
    notes: dict[str, str]
    reused: list[str]
    metrics: dict[str, dict]
    gate: dict
    slower: dict[str, dict]
    settings: dict
    cpu_description: dict


def build_and_measure_variants(
    model, description: dict, params: ExportParams, test: tuple[np.ndarray, np.ndarray], *, log_dir: Path
) -> Variants:
    """Every variant in params (reused from the cache when its inputs did not change), measured on the test split
    (images, labels); a quantized variant slower than float32 is timed again with each interpreter setting (~0.5 s
    a variant)."""
    train_images, train_labels = records.load_split_arrays(paths.PREPARED, "train")
    test_images, test_labels = test
    converted, notes, reused = variants_lib.build_tflite_variants(
        model, description["model"], train_images, train_labels, params, log_dir=log_dir, cache_dir=VARIANT_CACHE_DIR
    )
    files = {tflite_file(variant): content for variant, content in converted.items()}
    files[tflite.LABELS_FILE] = "".join(f"{name}\n" for name in description["class_names"]).encode()
    files[tflite.DECODING_FILE] = (json.dumps(description["decoding"], indent=2, sort_keys=True) + "\n").encode()
    metrics = measure_variants(
        model,
        (paths.TRAIN / "model.keras").stat().st_size,
        converted,
        test_images,
        test_labels,
        num_threads=params.num_threads,
        latency_runs=params.latency_runs,
        batch_size=params.throughput_batch_size,
    )
    slower = slower_than_float32(metrics)
    settings = (
        time_interpreter_settings(
            {variant: converted[variant] for variant in ("float32", *slower)},
            test_images,
            num_threads=params.num_threads,
            latency_runs=params.latency_runs,
            batch_size=params.throughput_batch_size,
        )
        if slower
        else {}
    )
    return Variants(
        files,
        notes,
        reused,
        metrics,
        decide_int8_gate(metrics, params),
        slower_than_float32(metrics, settings),
        settings,
        cpu.describe_cpu(),
    )


def log_to_mlflow(
    staging: Path,
    variants: Variants,
    *,
    log_dir: Path,
    parity: float,
    version: int,
    promoted: bool,
    why_not: list[str],
    num_threads: int,
) -> None:
    """The report, the files, every figure and the decisions into the model's run (the active one)."""
    for file_name in ["report.md", "variants.png", *variants.files]:
        mlflow.log_artifact(str(staging / file_name), artifact_path="export")
    if log_dir.is_dir():
        mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/pruning")
    # One call for the metrics and one for the tags: each is a transaction of the (sqlite) tracking store.
    mlflow.log_metrics(
        {
            **{
                f"export.{name}.{key}": value
                for name, row in variants.metrics.items()
                for key, value in row.items()
                if value is not None
            },
            "export.serving_parity_max_difference": parity,
        }
    )
    mlflow.set_tags(
        {
            **{f"export.{variant}.note": note[:5000] for variant, note in variants.notes.items()},
            **{
                f"export.{variant}.slower_than_float32": describe_slower_variant(variant, facts, num_threads)[:5000]
                for variant, facts in variants.slower.items()
            },
            "export.cpu": cpu.format_cpu(variants.cpu_description)[:5000],
            "export.cpu.flags": ",".join(
                flag for flag, present in variants.cpu_description["flags"].items() if present
            ),
            "export.variants_from_cache": ",".join(variants.reused),
            "export.version": str(version),
            "export.promoted": str(promoted).lower(),
            "export.int8_gate": "; ".join(variants.gate["reasons"]),
            "export.not_promoted_because": "; ".join(why_not)[:5000],
        }
    )


def stage_artifacts(
    staging: Path,
    model,
    description: dict,
    params: ExportParams,
    model_name: str,
    test: tuple[np.ndarray, np.ndarray],
    log_dir: Path,
) -> tuple[Variants, ServingModule, Path, float]:
    """Builds and measures the variants, writes their files and the SavedModel (as <name>/pending) into staging
    and reads them back: (the variants, the serving module, the SavedModel's directory, serving parity)."""
    variants = build_and_measure_variants(model, description, params, test, log_dir=log_dir)
    for name, content in variants.files.items():
        (staging / name).write_bytes(content)
    module = ServingModule(model, description["class_names"], description["decoding"])
    saved_model = staging / "saved_model" / model_name / "pending"
    tf.saved_model.save(module, str(saved_model), signatures={"serving_default": module.serve})
    parity = check_serving_parity(saved_model, model, test[0])
    check_written_files(staging, variants.files)
    return variants, module, saved_model, parity


def register(
    module: ServingModule, saved_model: Path, model_name: str, blessing: dict, gate: dict, test_images, num_classes: int
) -> int:
    """A new version of the registered model (its champion alias untouched); the staged SavedModel's directory
    takes the version's number (TF Serving's <name>/<version>/ layout)."""
    version = register_serving_model(
        module,
        model_name=model_name,
        example_images=test_images[:2],
        num_classes=num_classes,
        tags={
            "blessed": str(blessing["blessed"]).lower(),
            "int8_gate": "passed" if gate["passed"] else "failed",
            "int8_gate.reasons": "; ".join(gate["reasons"]),
        },
    )
    saved_model.rename(saved_model.with_name(str(version)))
    return version


@dataclass(frozen=True)
class Registration:
    """The version registered and whether it becomes the champion (why_not: the reasons it does not)."""

    model_name: str
    version: int
    promoted: bool
    why_not: list[str]


def write_report(
    staging: Path, variants: Variants, params: ExportParams, baseline: dict | None, registration: Registration
) -> None:
    """report.md and variants.png."""
    (staging / "report.md").write_text(
        format_report(
            variants.metrics,
            **asdict(registration),
            gate=variants.gate,
            num_threads=params.num_threads,
            notes=variants.notes,
            baseline=baseline,
            cpu_description=variants.cpu_description,
            interpreter_settings=variants.settings,
        )
    )
    figure = plot_variants(variants.metrics)
    figure.savefig(staging / "variants.png", dpi=120)
    plt.close(figure)


def write_metrics(variants: Variants, blessing: dict, parity: float, registration: Registration) -> None:
    """metrics/export.json: every variant's figures, the registration and promotion, the CPU they were timed on."""
    gate = variants.gate
    write_json(
        paths.EXPORT_METRICS,
        {
            **variants.metrics,
            "version": registration.version,
            "registered_model": registration.model_name,
            "blessed": bool(blessing["blessed"]),
            "promoted": registration.promoted,
            "not_promoted_because": registration.why_not,
            "variant_notes": variants.notes,
            "serving_parity_max_difference": parity,
            "cpu": variants.cpu_description,
            "slower_than_float32": variants.slower,
            "variants_from_cache": variants.reused,
            "int8_gate": {"passed": gate["passed"], "variant": gate["variant"], "reasons": gate["reasons"]},
        },
    )


def main() -> None:
    all_params = load_params()
    params, model_name = all_params.export, registered_model_name(all_params)
    keras.utils.set_random_seed(params.seed)
    description = json.loads((paths.TRAIN / "model.json").read_text())
    description["decoding"] = records.read_manifest(paths.PREPARED).get("decoding", {})
    run_reference = tracking.read_run_reference(paths.TRAIN / "run.json")
    blessing = read_blessing(run_reference["run_id"])
    model = load_trained_model(paths.TRAIN)
    test = records.load_split_arrays(paths.PREPARED, "test")  # images, labels
    test_images = test[0]

    # Everything is written and read back in a staging directory first; the model is registered only
    # then, and the champion alias moves last, so a failure at any step leaves the previous champion.
    with (
        tracking.stage_run(run_reference["experiment_name"], run_id=run_reference["run_id"]),
        atomic_directory(paths.EXPORT) as staging,
    ):
        log_dir = tracking.tensorboard_dir(run_reference["tensorboard"]) / "pruning"
        variants, module, saved_model, parity = stage_artifacts(
            staging, model, description, params, model_name, test, log_dir
        )
        promoted, why_not = promotion_decision(blessing, variants.gate, model_name)
        version = register(
            module, saved_model, model_name, blessing, variants.gate, test_images, len(description["class_names"])
        )
        registration = Registration(model_name, version, promoted, why_not)
        # The record pipelines.predict checks before it loads this SavedModel (pipelines/model_trust.py).
        model_trust.write_manifest(staging, staging / "saved_model" / model_name / str(version), variants.files)
        write_report(staging, variants, params, blessing.get("baseline"), registration)
        log_to_mlflow(
            staging,
            variants,
            log_dir=log_dir,
            parity=parity,
            version=version,
            promoted=promoted,
            why_not=why_not,
            num_threads=params.num_threads,
        )
        write_metrics(variants, blessing, parity, registration)
    check_written_files(paths.EXPORT, variants.files)  # the export in place, read back
    if promoted:  # the last step: only a complete, checked export becomes the champion
        mlflow.MlflowClient().set_registered_model_alias(model_name, tracking.CHAMPION_ALIAS, str(version))
    print(
        f"{paths.EXPORT}: {model_name} version {version}, "
        f"{'champion' if promoted else 'not champion: ' + '; '.join(why_not)}; "
        f"{'; '.join(variants.gate['reasons'])}; variants from {VARIANT_CACHE_DIR}: "
        f"{', '.join(variants.reused) or 'none'}" + "".join(f"; {name} slower than float32" for name in variants.slower)
    )


if __name__ == "__main__":
    run_stage("export", main)
