"""Reads data/prepared, artifacts/train and artifacts/evaluate; writes artifacts/export and metrics/export.json.

artifacts/export holds the serving SavedModel in TF Serving layout (saved_model/<name>/<version>/),
one model_<variant>.tflite per variant in params (components/export_variants.py makes them or takes
them from .cache/export/, components/export_measure.py measures them), labels.txt, report.md and
variants.png. The version is the one the MLflow model registry gives the float model; it becomes
`champion` only if evaluate blessed it AND the int8 gate passes.
"""
from __future__ import annotations

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
from components.export_measure import REFERENCE, SLOWER_MARGIN, measure_variants, slower_than_float32, time_interpreter_settings
from pipelines import cpu, records, tflite, tracking
from pipelines.config import ExportParams, load_params, registered_model_name
from models.loading import load_trained_model
from pipelines.outputs import atomic_directory, write_json

PREPARED_DIR = Path("data/prepared")
TRAIN_DIR = Path("artifacts/train")
BLESSING_FILE = Path("artifacts/evaluate/blessing.json")
EXPORT_DIR = Path("artifacts/export")
METRICS_FILE = Path("metrics/export.json")
VARIANT_CACHE_DIR = Path(".cache/export")  # converted variants keyed on their inputs (components/export_cache.py)
CHAMPION_ALIAS = "champion"


def tflite_file(variant: str) -> str:
    return f"model_{variant}.tflite"


class ServingModule(tf.Module):
    """Raw uint8 images in; `serve` (the serving_default signature) returns probabilities, class ids
    and class names, calling the module returns the probabilities alone."""

    def __init__(self, model: keras.Model, class_names: list[str]):
        super().__init__(name="serving")
        # The functions close over the Keras model instead of tracking it as an attribute: the SavedModel
        # then holds these two functions and the model's variables, not a Keras SavedModel of every layer
        # (which no reader here uses, and whose tracing of every layer made each save take ~1 s instead of ~0.2 s).
        self.model_variables = list(model.variables)
        # A variable, not a constant, so the loaded SavedModel still has the names (predict lists top-k by name).
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")
        height, width, channels = model.input_shape[1:]
        spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")

        def probabilities(images):
            return model(tf.cast(images, tf.float32), training=False)

        def serve(images):
            scores = probabilities(images)
            class_ids = tf.argmax(scores, axis=-1)
            return {"probabilities": scores, "class_ids": class_ids, "class_names": tf.gather(self.class_names, class_ids)}

        self.serve = tf.function(serve, input_signature=[spec])
        # An instance attribute named __call__ is what makes the *loaded* SavedModel callable, which
        # mlflow's pyfunc wrapper for tf.Module models (and so `mlflow models serve`) calls. That
        # wrapper converts a single tensor to numpy but passes a dict of tensors through, which the
        # REST server then cannot serialize: hence one tensor here.
        self.__call__ = tf.function(probabilities, input_signature=[spec])


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


def describe_slower_variant(variant: str, facts: dict, num_threads: int) -> str:
    """One sentence: how much slower than float32 the variant is, and the fastest interpreter setting found for it
    (facts: one value of export_measure.slower_than_float32)."""
    how = ", ".join(text for kind, text in (("invoke_p50", f"invoke p50 {facts['invoke_p50_ratio']:.2f}× float32's"),
                                            ("throughput", f"throughput {facts['throughput_ratio']:.2f}× float32's"))
                    if kind in facts["slower_in"])
    text = f"**{variant} is slower than float32 on this machine**: {how} (default XNNPACK delegate, num_threads={num_threads})"
    if "settings" not in facts:
        return text + "; it was not timed with other interpreter settings."
    figures, one, many = facts["settings"], facts["fastest_invoke_setting"], facts["fastest_throughput_setting"]
    best_one, best_many = figures[one]["invoke_p50_ms"], figures[many]["throughput_images_per_s"]
    if one == many:
        fastest = f"`{one}` ({best_one * 1000:.1f} µs, {best_many:,.0f} images/s)"
    else:
        fastest = f"`{one}` for single images ({best_one * 1000:.1f} µs) and `{many}` for batches ({best_many:,.0f} images/s)"
    float32_one, float32_many = facts["float32_fastest_invoke_p50_ms"], facts["float32_fastest_throughput_images_per_s"]
    still = ", so it stays slower" if best_one > float32_one and best_many < float32_many else ""
    return (f"{text}. Fastest setting found for it: {fastest}; float32 at its fastest: {float32_one * 1000:.1f} µs, "
            f"{float32_many:,.0f} images/s{still}.")


def settings_table(slower: dict[str, dict]) -> str:
    """Markdown: invoke p50 and throughput of float32 and of each slower variant under every interpreter setting timed."""
    rows = {}
    for variant, facts in slower.items():
        for setting, figures in facts.get("settings", {}).items():
            rows.setdefault(("float32", setting), (figures["float32_invoke_p50_ms"], figures["float32_throughput_images_per_s"]))
            rows[(variant, setting)] = (figures["invoke_p50_ms"], figures["throughput_images_per_s"])
    if not rows:
        return ""
    ordered = sorted(rows.items(), key=lambda item: item[0][0] != "float32")  # float32 first, then the variants in order
    table = pd.DataFrame([{"variant": variant, "interpreter setting": f"`{setting}`", "invoke_p50_us": f"{invoke * 1000:.1f}",
                           "throughput_images_per_s": f"{throughput:,.0f}"} for (variant, setting), (invoke, throughput) in ordered])
    return table.to_markdown(index=False, colalign=("left", "left", "right", "right"), disable_numparse=True) + "\n\n"


def format_report(metrics: dict[str, dict], *, model_name: str, version: int, promoted: bool, why_not: list[str], gate: dict,
                  num_threads: int, notes: dict[str, str] | None = None, baseline: dict | None = None, cpu_description: dict | None = None,
                  interpreter_settings: dict | None = None) -> str:
    """The report; every quantized variant slower than float32 gets a paragraph (interpreter_settings: the figures of
    export_measure.time_interpreter_settings)."""
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
    slower = slower_than_float32(metrics, interpreter_settings)
    speed = "".join(f"- {describe_slower_variant(variant, facts, num_threads)}\n" for variant, facts in slower.items())
    if speed:
        speed = (f"Quantized variants slower than float32 on this machine (invoke p50 more than {SLOWER_MARGIN:.0%} above float32's "
                 f"or throughput more than {SLOWER_MARGIN:.0%} below, in the table below), each timed again with every "
                 f"interpreter setting in interleaved rounds (OpResolverType `AUTO`: the default XNNPACK delegate; "
                 f"`BUILTIN_WITHOUT_DEFAULT_DELEGATES`: TFLite's own kernels):\n\n{speed}\n{settings_table(slower)}")
    if any(variant.endswith("int8") for variant in slower) and ((cpu_description or {}).get("flags") or {}).get("amx_int8"):
        speed += ("This CPU has AMX-INT8: XNNPACK runs int8 convolutions on its AMX tile kernel, which is slow for convolutions "
                  "with few channels (issue 18); on a CPU without AMX the same file can be faster than float32.\n\n")
    machine = f" on the build machine's CPU: {cpu.format_cpu(cpu_description)}" if cpu_description else ""
    return (
        f"# Export report: {model_name} version {version}\n\n"
        f"Registered in MLflow as `models:/{model_name}/{version}` (SavedModel `saved_model/{model_name}/{version}/`), {status}.\n\n"
        f"int8 gate ({gate['variant']}): {'passed' if gate['passed'] else 'failed'} — {'; '.join(gate['reasons'])}.\n\n"
        f"{compared}{speed}"
        "Accuracy is on the whole test split through the interpreter; drop, worst per-class recall drop and "
        f"agreement compare with the float Keras model ({REFERENCE}); sparsity is the share of zero conv/dense "
        f"weights stored in the file. Every TFLite variant runs in ai_edge_litert with num_threads={num_threads} "
        f"and its default XNNPACK delegate{machine}; latency is one image per call including (de)quantization, invoke "
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
        converted, notes, reused = variants_lib.build_tflite_variants(
            model, description["model"], train_images, train_labels, params, log_dir=log_dir, cache_dir=VARIANT_CACHE_DIR)
        files = {tflite_file(variant): content for variant, content in converted.items()}
        files[tflite.LABELS_FILE] = "".join(f"{name}\n" for name in class_names).encode()
        for name, content in files.items():
            (staging / name).write_bytes(content)
        metrics = measure_variants(
            model, (TRAIN_DIR / "model.keras").stat().st_size, converted, test_images, test_labels,
            num_threads=params.num_threads, latency_runs=params.latency_runs, batch_size=params.throughput_batch_size,
        )
        gate = decide_int8_gate(metrics, params)
        # Only a quantized variant slower than float32 is timed again with each interpreter setting (~0.5 s a variant).
        slower = slower_than_float32(metrics)
        settings = time_interpreter_settings(
            {variant: converted[variant] for variant in ("float32", *slower)}, test_images, num_threads=params.num_threads,
            latency_runs=params.latency_runs, batch_size=params.throughput_batch_size) if slower else {}
        slower, cpu_description = slower_than_float32(metrics, settings), cpu.describe_cpu()

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
                               num_threads=params.num_threads, notes=notes, baseline=blessing.get("baseline"),
                               cpu_description=cpu_description, interpreter_settings=settings)
        (staging / "report.md").write_text(report)
        figure = plot_variants(metrics)
        figure.savefig(staging / "variants.png", dpi=120)
        plt.close(figure)

        for file_name in ["report.md", "variants.png", *files]:
            mlflow.log_artifact(str(staging / file_name), artifact_path="export")
        if log_dir.is_dir():
            mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/pruning")
        # One call for the metrics and one for the tags: each is a transaction of the (sqlite) tracking store.
        mlflow.log_metrics({**{f"export.{name}.{key}": value for name, row in metrics.items() for key, value in row.items() if value is not None},
                            "export.serving_parity_max_difference": parity})
        mlflow.set_tags({
            **{f"export.{variant}.note": note[:5000] for variant, note in notes.items()},
            **{f"export.{variant}.slower_than_float32": describe_slower_variant(variant, facts, params.num_threads)[:5000]
               for variant, facts in slower.items()},
            "export.cpu": cpu.format_cpu(cpu_description)[:5000],
            "export.cpu.flags": ",".join(flag for flag, present in cpu_description["flags"].items() if present),
            "export.variants_from_cache": ",".join(reused),
            "export.version": str(version), "export.promoted": str(promoted).lower(),
            "export.int8_gate": "; ".join(gate["reasons"]), "export.not_promoted_because": "; ".join(why_not)[:5000]})
        write_json(METRICS_FILE, {**metrics, "version": version, "registered_model": model_name, "blessed": blessed, "promoted": promoted,
                                  "not_promoted_because": why_not, "variant_notes": notes, "serving_parity_max_difference": parity,
                                  "cpu": cpu_description, "slower_than_float32": slower, "variants_from_cache": reused,
                                  "int8_gate": {"passed": gate["passed"], "variant": gate["variant"], "reasons": gate["reasons"]}})
    check_written_files(EXPORT_DIR, files)  # the export in place, read back
    if promoted:  # the last step: only a complete, checked export becomes the champion
        mlflow.MlflowClient().set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    print(f"{EXPORT_DIR}: {model_name} version {version}, {'champion' if promoted else 'not champion: ' + '; '.join(why_not)}; "
          f"{'; '.join(gate['reasons'])}; variants from {VARIANT_CACHE_DIR}: {', '.join(reused) or 'none'}"
          + "".join(f"; {variant} slower than float32" for variant in slower))


if __name__ == "__main__":
    main()
