"""Evaluate stage: reads artifacts/train, data/prepared and the registry's champion; writes metrics, plots and the gate
decision.

Writes metrics/evaluate.json (the headline DVC metrics), plots/confusion.csv (DVC confusion plot) and
artifacts/evaluate/: blessing.json (which export reads), evaluation.json (every test metric, per class too), the
kind's tables (the likely label errors, a regression's largest residuals) and pictures; logs all of it into the
model's MLflow run and TensorBoard. What differs by data kind (reading the test split, the classical baseline, the
pictures) is in components/evaluate/kinds/, what differs by task (the gate: higher accuracy or lower MAE, the
headline) in components/evaluate/tasks.py; the champion check, the outputs and the logging are shared here. The
gate compares the model with the registry's champion of the same dataset, on the candidate's own test split, and
with the classical baseline fit on the same train split.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow

from components.evaluate.gate import evaluate_champion
from components.evaluate.kinds import KINDS
from components.evaluate.paired import without_outcomes
from components.evaluate.report import write_tensorboard_summaries
from components.evaluate.tasks import TASKS, Evaluation, Task
from models.loading import load_trained_model
from tfpipe import paths, records, run_records, timing, tracking
from tfpipe.config import registered_model_name
from tfpipe.kinds import kind_of_prepared
from tfpipe.outputs import atomic_directory, write_csv, write_json
from tfpipe.params_file import load_params


def describe_champion(check: dict, gate: dict, reference: dict, task: Task) -> dict | None:
    """blessing.json's champion entry: its version and run, whether it could be compared, and the comparison."""
    champion = check["version"]
    if champion is None:
        return None
    champion = {
        **champion,
        "comparable": check["metrics"] is not None,
        "same_run": champion["run_id"] == reference["run_id"],
        **(gate["comparison"] or {}),
    }
    if check["metrics"] is not None and "per_class_recall" in task.candidate(check["metrics"]):
        champion["per_class_recall"] = task.candidate(check["metrics"])["per_class_recall"]
    return champion


def write_outputs(blessing: dict, evaluation: Evaluation, task: Task) -> dict:
    """artifacts/evaluate (blessing.json, evaluation.json, the kind's tables and pictures, in one step),
    plots/confusion.csv and metrics/evaluate.json (headline values only); returns what is said of the champion."""
    compared = {key: value for key, value in (blessing["champion"] or {}).items() if key in task.compared_keys}
    baseline = evaluation.baseline
    document = {
        **without_outcomes(evaluation.metrics),
        **evaluation.details,
        "task": task.name,
        "blessed": blessing["blessed"],
        "run_id": blessing["candidate"]["run_id"],
        f"baseline_{task.metric}": baseline[task.metric],
        "baseline_model": baseline["model"],
        "references": evaluation.references,
        # the floor (accuracy) or ceiling (MAE) the gate applied
        f"{task.metric}_{'floor' if task.higher_is_better else 'ceiling'}": blessing["floor"]["value"],
        **({"champion": compared} if compared else {}),
    }
    with atomic_directory(paths.EVALUATE) as staging:
        write_json(staging / "blessing.json", blessing)
        write_json(staging / "evaluation.json", document)
        for file_name, table in evaluation.tables.items():
            write_csv(staging / file_name, table)
        for file_name, figure in evaluation.figures.items():
            figure.savefig(staging / file_name, dpi=120)
            plt.close(figure)
    write_csv(paths.CONFUSION_PLOT, evaluation.confusion)
    # The headline: what a user compares across experiments (`dvc exp show`, `dvc metrics diff`), named short so
    # that a table of them fits a terminal; the rest is in artifacts/evaluate/evaluation.json and MLflow.
    write_json(paths.EVALUATE_METRICS, task.headline(evaluation, blessing["blessed"]))
    return compared


def log_to_mlflow(evaluation: Evaluation, blessing: dict, compared: dict, reference: dict, task: Task) -> None:
    """Into the model's run (open): test metrics, the baseline, the gate, the outputs and TensorBoard summaries."""
    metrics, baseline, metric = evaluation.metrics, evaluation.baseline, task.metric
    margin = (metrics[metric] - baseline[metric]) * (1 if task.higher_is_better else -1)
    label_errors = evaluation.label_errors
    mlflow.log_metrics(task.mlflow_metrics(metrics))
    mlflow.log_metrics(
        {
            f"baseline_{metric}": baseline[metric],
            "margin_over_baseline": margin,
            "baseline_seconds": baseline.get("seconds", 0.0),
            **(
                {"likely_label_errors": label_errors["confirmed"], "label_error_candidates": label_errors["candidates"]}
                if label_errors
                else {}
            ),
            **{f"reference_{item['name']}_{metric}": item[metric] for item in evaluation.references},
            # version: a tag; the paired test: its p-value
            **{f"champion_{key}": value for key, value in compared.items() if isinstance(value, float)},
            **({"champion_paired_p_value": compared["paired_test"]["p_value"]} if "paired_test" in compared else {}),
        }
    )
    training = mlflow.get_run(reference["run_id"]).data.tags.get("tfpipe.training", "")
    headline = (
        f"test {metric} {metrics[metric]:.4f} (classical baseline {baseline[metric]:.4f}), "
        f"{'blessed' if blessing['blessed'] else 'not blessed'}"
    )
    mlflow.set_tags(
        {
            "mlflow.note.content": f"{headline}; {training}" if training else headline,  # the run's description
            "blessed": str(blessing["blessed"]).lower(),
            "gate.reasons": "\n".join(blessing["reasons"])[:5000],
            "gate.floor": f"{blessing['floor']['value']} ({blessing['floor']['source']})"[:5000],
            "gate.champion_version": str(blessing["champion"]["version"]) if blessing["champion"] else "none",
            "gate.registered_model": blessing["registered_model"],
            "baseline.model": baseline["model"],
        }
    )
    mlflow.log_artifacts(str(paths.EVALUATE), artifact_path="evaluate")
    log_dir = run_records.tensorboard_dir(reference["tensorboard"]) / "evaluate"
    write_tensorboard_summaries(
        log_dir,
        {name: (paths.EVALUATE / f"{name}.png").read_bytes() for name in evaluation.tensorboard_images},
        {**metrics, f"baseline_{metric}": baseline[metric]},
    )
    mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/evaluate")
    mlflow.log_artifact(str(paths.EVALUATE_METRICS), artifact_path="evaluate")


def main() -> None:
    timing.start()
    all_params = load_params()
    params, model_name = all_params.evaluate, registered_model_name(all_params)
    manifest = records.read_manifest(paths.PREPARED)
    model = load_trained_model(paths.TRAIN)
    evaluation = KINDS[kind_of_prepared(manifest)].evaluate(all_params, model, manifest)
    task = TASKS[evaluation.task]
    reference = run_records.read_run_reference(paths.TRAIN / "run.json")
    with tracking.stage_run(reference["experiment_name"], run_id=reference["run_id"]):
        check = evaluate_champion(model_name, evaluation.score_champion)
        champion = check["version"]
        timing.lap("MLflow: run and champion")
        gate = task.decide(
            evaluation.metrics,
            params,
            check["metrics"],
            champion_label=f"champion v{champion['version']}" if champion else "",
            no_champion_reason=check["skip"],
            champion_error=check["error"],
            baseline=evaluation.baseline,
        )
        blessing = {
            "blessed": gate["blessed"],
            "reasons": gate["reasons"],
            "floor": gate["floor"],  # the floor (ceiling, for an error) that applied and where it came from
            "task": task.name,
            "registered_model": model_name,
            "champion": describe_champion(check, gate, reference, task),
            "champion_error": check["error"] or None,
            # Outputs stay deterministic (DVC reruns nothing after a forced rerun): the time goes to MLflow only.
            "baseline": {key: value for key, value in evaluation.baseline.items() if key != "seconds"},
            "candidate": {"run_id": reference["run_id"], **task.candidate(evaluation.metrics)},
        }
        compared = write_outputs(blessing, evaluation, task)
        timing.lap("outputs (report, plots)")
        log_to_mlflow(evaluation, blessing, compared, reference, task)
        timing.lap("MLflow and TensorBoard: logging")
    metric = task.metric
    print(
        f"test {metric} {evaluation.metrics[metric]:.4f} on {evaluation.metrics['num_examples']} examples: "
        f"{'BLESSED' if gate['blessed'] else 'NOT blessed'}\n  " + "\n  ".join(gate["reasons"])
    )
    timing.write("evaluate")
