"""Evaluate stage: reads artifacts/train, the train and test splits and the registry's champion;
writes metrics, plots and the gate decision.

Writes metrics/evaluate.json (DVC metrics), plots/confusion.csv (DVC confusion plot) and
artifacts/evaluate/ (blessing.json, which export reads, and three PNGs: confusion matrix, most
confident mistakes, reliability diagram); logs all of it into the model's MLflow run. The gate
compares the model with the registry's champion of the same dataset and with a classical
baseline (components/evaluate/baseline.py) fit on the same train split.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from components.evaluate.baseline import fit_and_score
from components.evaluate.gate import decide_blessing, evaluate_champion, per_class_recall
from components.evaluate.metrics import (
    compute_metrics,
    load_test_split,
)
from components.evaluate.report import (
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_reliability_diagram,
    write_tensorboard_summaries,
)
from models.loading import load_trained_model
from tfpipe import paths, records, run_records, tracking
from tfpipe.config import registered_model_name
from tfpipe.outputs import atomic_directory, write_csv, write_json
from tfpipe.params_file import load_params


def score(model_path: Path, images: np.ndarray, train_split: tuple[np.ndarray, np.ndarray], labels: np.ndarray):
    """(the network's test probabilities, the classical baseline fit on the train split and scored on the test
    split). libsvm fits without Python's lock: the baseline runs on a second core while the network predicts."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        baseline = pool.submit(fit_and_score, *train_split, images, labels)
        probabilities = load_trained_model(model_path).predict(images.astype(np.float32), batch_size=256, verbose=0)
        return probabilities, baseline.result()


def describe_champion(check: dict, gate: dict, reference: dict) -> dict | None:
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
    if check["metrics"] is not None:
        champion["per_class_recall"] = per_class_recall(check["metrics"])
    return champion


def write_outputs(
    blessing: dict,
    metrics: dict,
    test: tuple[np.ndarray, np.ndarray, list[str]],
    probabilities: np.ndarray,
    class_names: list[str],
) -> dict:
    """artifacts/evaluate (blessing.json and the pictures, in one step), plots/confusion.csv and
    metrics/evaluate.json; returns what the metrics file says of the champion."""
    images, labels, files = test
    predictions = probabilities.argmax(axis=1)
    figures = {
        "confusion_matrix.png": plot_confusion_matrix(
            confusion_matrix(labels, predictions, labels=np.arange(len(class_names))), class_names
        ),
        "confident_mistakes.png": plot_confident_mistakes(images, labels, probabilities, class_names, files),
        "reliability_diagram.png": plot_reliability_diagram(probabilities, labels),
    }
    with atomic_directory(paths.EVALUATE) as staging:
        write_json(staging / "blessing.json", blessing)
        for file_name, figure in figures.items():
            figure.savefig(staging / file_name, dpi=120)
            plt.close(figure)
    write_csv(
        paths.CONFUSION_PLOT,
        pd.DataFrame({"actual": [class_names[i] for i in labels], "predicted": [class_names[i] for i in predictions]}),
    )
    compared = {
        key: value
        for key, value in (blessing["champion"] or {}).items()
        if key in ("version", "accuracy", "accuracy_change", "max_class_recall_drop")
    }
    write_json(
        paths.EVALUATE_METRICS,
        {
            **metrics,
            "blessed": blessing["blessed"],
            "run_id": blessing["candidate"]["run_id"],
            "baseline_accuracy": blessing["baseline"]["accuracy"],
            "margin_over_baseline": metrics["accuracy"] - blessing["baseline"]["accuracy"],
            "accuracy_floor": blessing["floor"]["value"],
            **({"champion": compared} if compared else {}),
        },
    )
    return compared


def log_to_mlflow(metrics: dict, blessing: dict, compared: dict, baseline_seconds: float, reference: dict) -> None:
    """Into the model's run (open): test metrics, the baseline, the gate, the outputs and TensorBoard summaries."""
    baseline = blessing["baseline"]
    mlflow.log_metrics({f"test_{key}": value for key, value in metrics.items() if isinstance(value, float)})
    mlflow.log_metrics({f"test_recall_{name}": item["recall"] for name, item in metrics["per_class"].items()})
    mlflow.log_metrics(
        {
            "baseline_accuracy": baseline["accuracy"],
            "margin_over_baseline": metrics["accuracy"] - baseline["accuracy"],
            "baseline_seconds": baseline_seconds,
            **{f"champion_{key}": value for key, value in compared.items() if key != "version"},  # version: a tag
        }
    )
    training = mlflow.get_run(reference["run_id"]).data.tags.get("tfpipe.training", "")
    headline = (
        f"test accuracy {metrics['accuracy']:.4f} (classical baseline {baseline['accuracy']:.4f}), "
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
        (paths.EVALUATE / "confusion_matrix.png").read_bytes(),
        {**metrics, "baseline_accuracy": baseline["accuracy"]},
    )
    mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/evaluate")
    mlflow.log_artifact(str(paths.EVALUATE_METRICS), artifact_path="evaluate")


def main() -> None:
    all_params = load_params()
    params, model_name = all_params.evaluate, registered_model_name(all_params)
    class_names = records.read_manifest(paths.PREPARED)["class_names"]
    test = load_test_split(paths.PREPARED)  # images, labels, file names
    images, labels, _ = test
    train_split = records.load_split_arrays(paths.PREPARED, "train")
    probabilities, baseline = score(paths.TRAIN, images, train_split, labels)
    print(
        f"classical baseline: {baseline['model']}, test accuracy {baseline['accuracy']:.4f} "
        f"({baseline['train_examples']} train images, {baseline['features']} features, {baseline['seconds']} s)"
    )
    metrics = compute_metrics(probabilities, labels, class_names, params.top_k)
    reference = run_records.read_run_reference(paths.TRAIN / "run.json")
    with tracking.stage_run(reference["experiment_name"], run_id=reference["run_id"]):
        check = evaluate_champion(model_name, images, labels, class_names, params.top_k)
        champion = check["version"]
        gate = decide_blessing(
            metrics,
            params,
            check["metrics"],
            champion_label=f"champion v{champion['version']}" if champion else "",
            no_champion_reason=check["skip"],
            champion_error=check["error"],
            baseline=baseline,
        )
        blessing = {
            "blessed": gate["blessed"],
            "reasons": gate["reasons"],
            "floor": gate["floor"],  # the accuracy floor that applied and where it came from
            "registered_model": model_name,
            "champion": describe_champion(check, gate, reference),
            "champion_error": check["error"] or None,
            # Outputs stay deterministic (DVC reruns nothing after a forced rerun): the time goes to MLflow only.
            "baseline": {key: value for key, value in baseline.items() if key not in ("predictions", "seconds")},
            "candidate": {
                "run_id": reference["run_id"],
                "accuracy": metrics["accuracy"],
                "per_class_recall": per_class_recall(metrics),
            },
        }
        compared = write_outputs(blessing, metrics, test, probabilities, class_names)
        log_to_mlflow(metrics, blessing, compared, baseline["seconds"], reference)
    print(
        f"test accuracy {metrics['accuracy']:.4f} on {metrics['num_examples']} images: "
        f"{'BLESSED' if gate['blessed'] else 'NOT blessed'}\n  " + "\n  ".join(gate["reasons"])
    )
