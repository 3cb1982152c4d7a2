"""The export's records beside its models: summary.json (every variant's figures, the CPU, the gate and the
registration as it stood when the export ran), the headline DVC metrics (metrics/export.json) and the model card."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import mlflow

from components.export import cpu, model_card
from components.export.prepared import Prepared, Registration, Variants
from tfpipe import paths, records
from tfpipe.outputs import write_json


def headline(variants: Variants) -> dict:
    """metrics/export.json: what a user compares across experiments, for the variants a user ships (float32, the
    TFLite twin of the served SavedModel, and the gate's variant): test accuracy, size in kB and invoke p50 in µs,
    and whether the gate variant passed. Facts of the model, never of the registry (which version is champion is
    the registry's to say: a `dvc repro` that restores this file from DVC's run-cache runs no code, and the
    champion may have moved since); every variant's figures and the registration are in summary.json."""
    shipped = dict.fromkeys(["float32", variants.gate["variant"]])
    figures = {}
    for variant in shipped:
        row = variants.metrics.get(f"tflite_{variant}")
        if row:
            metric = "mae" if "mae" in row else "accuracy"
            figures[variant] = {
                metric: row[metric],
                "kb": round(row["size_bytes"] / 1000, 1),
                "p50_us": round(row["invoke_p50_ms"] * 1000, 1),
            }
    return {**figures, "gate_passed": bool(variants.gate["passed"])}


def write_model_card(
    staging: Path,
    model,
    description: dict,
    blessing: dict,
    variants: Variants,
    summary: dict,
    num_threads: int,
    prepared: Prepared,
) -> str:
    """model_card.md (components/export/model_card.py); returns the text for the registered version's description
    (the same card, shortened only if MLflow's limit requires)."""
    evaluation_file = paths.EVALUATE / "evaluation.json"
    if not evaluation_file.is_file():
        raise SystemExit(f"{evaluation_file} is missing: run the evaluate stage first (dvc repro evaluate)")
    tags = mlflow.get_run(summary["run_id"]).data.tags
    arguments = {
        "description": description,
        "manifest": records.read_manifest(paths.PREPARED),
        "evaluation": json.loads(evaluation_file.read_text()),
        "blessing": blessing,
        "variants": variants.metrics,
        "gate": variants.gate,
        "registration": {
            "model_name": summary["registered_model"],
            "version": summary["version"],
            "promoted": summary["promoted"],
            "why_not": summary["not_promoted_because"],
            "exported_at": summary["exported_at"],
            "run_id": summary["run_id"],
        },
        "cpu": cpu.format_cpu(variants.cpu_description),
        "num_threads": num_threads,
        "fingerprints": {
            "data.dvc md5 (the raw data)": tags.get("data.dvc.md5"),
            "prepared data (dvc.lock)": tags.get("dvc.lock.ingest.data/prepared"),
            "git commit": tags.get("git.commit"),
        },
        "parameters": int(model.count_params()),
        "inputs": list(prepared.card_inputs),
        "not_for_shipping": variants.not_for_shipping,
        "unit": prepared.unit,
    }
    card = model_card.model_card(**arguments)
    (staging / "model_card.md").write_text(card)
    return model_card.registry_description(arguments, card)


def write_summary(
    staging: Path,
    variants: Variants,
    blessing: dict,
    parity: float,
    registration: Registration,
    run_id: str,
    *,
    reused: bool = False,
    identity: str | None = None,
) -> dict:
    """artifacts/export/summary.json: every variant's figures, the CPU they were timed on, the gate, and the
    registration as it stood when this export ran (`exported_at`); the promote stage reads it."""
    gate = variants.gate
    summary = {
        **variants.metrics,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "version": registration.version,
        "registered_model": registration.model_name,
        "model_identity": identity,  # tfpipe/model_trust.model_identity: the same on every save of this model
        "registered_before": reused,  # the registry held this model already (same identity): its version reused
        "compared_champion": (blessing.get("champion") or {}).get("version"),  # what evaluate compared it with
        "blessed": bool(blessing["blessed"]),
        "promoted": registration.promoted,
        "not_promoted_because": registration.why_not,
        "registry_note": (
            "version and promoted are the registry's state when this export ran; the champion may have moved "
            "since (python -m pipelines.store champion)"
        ),
        "variant_notes": variants.notes,
        # variant -> why: further behind the float model than the params allow, its file not exported
        "not_for_shipping": variants.not_for_shipping,
        "serving_parity_max_difference": parity,
        "cpu": variants.cpu_description,
        "slower_than_float32": variants.slower,
        "variants_from_cache": variants.reused,
        "int8_gate": {"passed": gate["passed"], "variant": gate["variant"], "reasons": gate["reasons"]},
        # a table's TFLite float32 model with encoding.json against the SavedModel on the test rows
        **({"tflite_with_encoding": variants.pair} if variants.pair else {}),
    }
    write_json(staging / "summary.json", summary)
    return summary
