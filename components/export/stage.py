"""Reads data/prepared, artifacts/train and artifacts/evaluate; writes artifacts/export and metrics/export.json.

artifacts/export holds the serving SavedModel in TF Serving layout (saved_model/<name>/<version>/),
one model_<variant>.tflite per variant in params (components/export/variants.py makes them or takes
them from .cache/export/, components/export/measure.py measures them), the files that ship beside them
(labels.txt; an image's decoding.json, a table's encoding.json), report.md and variants.png. What differs by data
kind (what is converted, the serving signature, the registration) is prepared by components/export/kinds/; the
variants, the gates, the registry and the reports are shared here. The version is the one the MLflow model registry
gives the float model; it becomes `champion` only if evaluate blessed it AND the int8 gate passes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import tensorflow as tf
import tf_keras as keras

from components.export import cpu
from components.export import variants as variants_lib
from components.export.gate import decide_int8_gate, promotion_decision, read_blessing
from components.export.kinds import KINDS
from components.export.measure import measure_variants, slower_than_float32, time_interpreter_settings
from components.export.prepared import Prepared, Registration, Variants
from components.export.report import describe_slower_variant, format_report, plot_variants
from components.export.serving import check_written_files
from components.export.shipping import variants_not_for_shipping
from components.export.summary import headline, write_model_card, write_summary
from models.loading import load_trained_model
from tfpipe import model_trust, paths, promotion, records, run_records, timing, tracking
from tfpipe.config import ExportParams, registered_model_name
from tfpipe.kinds import kind_of_prepared
from tfpipe.outputs import atomic_directory, write_json
from tfpipe.params_file import load_params

VARIANT_CACHE_DIR = paths.CACHE / "export"  # converted variants keyed on their inputs (components/export/cache.py)


def tflite_file(variant: str) -> str:
    return f"model_{variant}.tflite"


def build_and_measure_variants(prepared: Prepared, params: ExportParams, *, log_dir: Path) -> Variants:
    """Every variant in params (reused from the cache when its inputs did not change), measured on the test split;
    a quantized variant slower than float32 is timed again with each interpreter setting (~0.5 s a variant)."""
    test_images, test_labels = prepared.test
    converted, notes, reused = variants_lib.build_tflite_variants(
        prepared.deployable,
        prepared.classifier,
        prepared.train,
        params,
        log_dir=log_dir,
        cache_dir=VARIANT_CACHE_DIR,
        loss=prepared.loss,
        val=prepared.val,
    )
    timing.lap("variants: build (fine-tunes, conversions) or reuse")
    files = {tflite_file(variant): content for variant, content in converted.items()}
    files.update(prepared.files)
    pair = prepared.check_pair(files) if prepared.check_pair else {}
    metrics = measure_variants(
        prepared.deployable,
        (paths.TRAIN / "model.keras").stat().st_size,
        converted,
        test_images,
        test_labels,
        num_threads=params.num_threads,
        latency_runs=params.latency_runs,
        batch_size=params.throughput_batch_size,
        task=prepared.task,
    )
    # A variant further behind the float model than the params allow is measured and reported, never exported.
    refused = variants_not_for_shipping(metrics, params)
    files = {name: content for name, content in files.items() if name not in {tflite_file(v) for v in refused}}
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
    timing.lap("variants: accuracy, latency and throughput")
    return Variants(
        files,
        notes,
        reused,
        metrics,
        decide_int8_gate(metrics, params),
        slower_than_float32(metrics, settings),
        settings,
        cpu.describe_cpu(),
        pair,
        refused,
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
    for file_name in ["report.md", "model_card.md", "summary.json", "variants.png", *variants.files]:
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
            **{f"export.{variant}.not_for_shipping": why[:5000] for variant, why in variants.not_for_shipping.items()},
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
    staging: Path, prepared: Prepared, params: ExportParams, model_name: str, log_dir: Path
) -> tuple[Variants, Path, float]:
    """Builds and measures the variants, writes their files and the SavedModel (as <name>/pending) into staging
    and reads them back: (the variants, the SavedModel's directory, serving parity)."""
    variants = build_and_measure_variants(prepared, params, log_dir=log_dir)
    for name, content in variants.files.items():
        (staging / name).write_bytes(content)
    module = prepared.module
    saved_model = staging / "saved_model" / model_name / "pending"
    tf.saved_model.save(module, str(saved_model), signatures={"serving_default": module.serve})
    parity = prepared.check_parity(saved_model)
    check_written_files(staging, variants.files)
    timing.lap("SavedModel: save, serving parity")
    return variants, saved_model, parity


def register(
    prepared: Prepared, saved_model: Path, model_name: str, blessing: dict, gate: dict, identity: str | None
) -> tuple[int, bool]:
    """(the version, whether it was registered before): a model the registry holds already (same model_identity:
    a rerun, an export-only experiment, a retrained model with the same weights) keeps its version, and this export's
    verdict becomes its tags (a temporary experiment's leaves them alone); any other gets a new version, its champion
    alias untouched. The staged SavedModel's directory takes the version's number (TF Serving's <name>/<version>/)."""
    tags = {
        "blessed": str(blessing["blessed"]).lower(),
        "int8_gate": "passed" if gate["passed"] else "failed",
        "int8_gate.reasons": "; ".join(gate["reasons"]),
        **({model_trust.IDENTITY_TAG: identity} if identity else {}),
    }
    version = model_trust.registered_version_of(model_name, identity)
    if version is None:
        version, reused = prepared.register(saved_model, model_name, tags), False
    else:
        reused = True
        if not promotion.temporary_experiment():
            client = mlflow.MlflowClient()
            for key, value in tags.items():
                client.set_model_version_tag(model_name, str(version), key, value)
    saved_model.rename(saved_model.with_name(str(version)))
    return version, reused


def describe_decision(decision) -> str:
    if decision.already:
        return "the champion already"
    return "now the champion" if decision.promote else "not champion: " + "; ".join(decision.reasons)


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
            slower=variants.slower,
            not_for_shipping=variants.not_for_shipping,
        )
    )
    figure = plot_variants(variants.metrics)
    figure.savefig(staging / "variants.png", dpi=120)
    plt.close(figure)


def main() -> None:
    timing.start()
    all_params = load_params()
    params, model_name = all_params.export, registered_model_name(all_params)
    keras.utils.set_random_seed(params.seed)
    description = json.loads((paths.TRAIN / "model.json").read_text())
    manifest = records.read_manifest(paths.PREPARED)
    description["decoding"] = manifest.get("decoding", {})
    run_reference = run_records.read_run_reference(paths.TRAIN / "run.json")
    blessing = read_blessing(run_reference["run_id"])
    model = load_trained_model(paths.TRAIN)
    prepared = KINDS[kind_of_prepared(manifest)].prepare(model, description, manifest)
    timing.lap("read the test split and the model")

    # Everything is written and read back in a staging directory first; the model is registered only
    # then, and the champion alias moves last, so a failure at any step leaves the previous champion.
    with (
        tracking.stage_run(run_reference["experiment_name"], run_id=run_reference["run_id"]),
        atomic_directory(paths.EXPORT) as staging,
    ):
        log_dir = run_records.tensorboard_dir(run_reference["tensorboard"]) / "pruning"
        variants, saved_model, parity = stage_artifacts(staging, prepared, params, model_name, log_dir)
        identity = model_trust.model_identity(saved_model)
        version, reused = register(prepared, saved_model, model_name, blessing, variants.gate, identity)
        decision = promotion_decision(blessing, variants.gate, model_name, version)
        registration = Registration(model_name, version, decision.promote, decision.reasons)
        timing.lap("MLflow: register the model version")
        # The record pipelines.predict checks before it loads this SavedModel (tfpipe/model_trust.py).
        model_trust.write_manifest(staging, staging / "saved_model" / model_name / str(version), variants.files)
        summary = write_summary(
            staging, variants, blessing, parity, registration, run_reference["run_id"], reused=reused, identity=identity
        )
        write_report(staging, variants, params, blessing.get("baseline"), registration)
        card = write_model_card(staging, model, description, blessing, variants, summary, params.num_threads, prepared)
        timing.lap("outputs (summary, report, model card)")
        log_to_mlflow(
            staging,
            variants,
            log_dir=log_dir,
            parity=parity,
            version=version,
            promoted=decision.promote,
            why_not=decision.reasons,
            num_threads=params.num_threads,
        )
        if not (reused and promotion.temporary_experiment()):
            mlflow.MlflowClient().update_model_version(model_name, str(version), description=card)
        timing.lap("MLflow: logging")
    check_written_files(paths.EXPORT, variants.files)  # the export in place, read back
    write_json(paths.EXPORT_METRICS, headline(variants))
    registered = promotion.registration(model_name, version, run_reference["run_id"], identity, blessing, variants.gate)
    write_json(paths.REGISTRATION, registered)  # what the promote stage acts on
    if decision.promote and not decision.already:  # the last step: only a complete, checked export becomes champion
        promotion.move_champion(model_name, version)
    gate_said = [reason for reason in variants.gate["reasons"] if reason not in decision.reasons]  # said once
    print(
        f"{paths.EXPORT}: {model_name} version {version}"
        + (" (the same model as registered before)" if reused else "")
        + f", {describe_decision(decision)}; "
        + "".join(f"{reason}; " for reason in gate_said)
        + f"variants from {VARIANT_CACHE_DIR}: "
        f"{', '.join(variants.reused) or 'none'}" + "".join(f"; {name} slower than float32" for name in variants.slower)
    )
    timing.write("export")
