"""Evaluate stage: reads artifacts/train and the test split, writes metrics, plots and the gate decision.

Writes metrics/evaluate.json (DVC metrics), plots/confusion.csv (DVC confusion plot),
artifacts/evaluate/{blessing.json,confusion_matrix.png}; logs all of it into the model's MLflow run.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import tf_keras as keras
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from pipelines import records, tracking
from pipelines.config import EvaluateParams, load_params
from pipelines.outputs import atomic_directory, write_json

PREPARED_DIR = Path("data/prepared")
TRAIN_DIR = Path("artifacts/train")
OUTPUT_DIR = Path("artifacts/evaluate")


def compute_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int) -> dict:
    """Accuracy, top-k accuracy, loss, calibration error and per-class precision/recall/F1."""
    if len(labels) == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    predictions = probabilities.argmax(axis=1)
    top_k = min(top_k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1)[:, :top_k]
    classes = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes, zero_division=0)
    weighted_f1 = float(np.average(f1, weights=support)) if support.sum() else 0.0
    return {
        "accuracy": float((predictions == labels).mean()),
        f"top_{top_k}_accuracy": float((top == labels[:, None]).any(axis=1).mean()),
        "loss": float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)).mean()),
        "expected_calibration_error": expected_calibration_error(probabilities, labels),
        "macro_f1": float(f1.mean()),
        "weighted_f1": weighted_f1,
        "num_examples": int(len(labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
    }


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Gap between confidence and accuracy, averaged over equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    error = 0.0
    for index in range(num_bins):
        in_bin = bins == index
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def decide_blessing(metrics: dict, params: EvaluateParams) -> dict:
    """The promotion gate: a model is blessed only if every check passes; each failure is a reason."""
    reasons = []
    if metrics["accuracy"] < params.min_accuracy:
        reasons.append(f"test accuracy {metrics['accuracy']:.4f} is below evaluate.min_accuracy {params.min_accuracy}")
    return {"blessed": not reasons, "reasons": reasons or ["all checks passed"], "accuracy": metrics["accuracy"]}


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(1 + 0.6 * len(class_names), 1 + 0.6 * len(class_names)))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black", fontsize=8)
    axes.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names, yticklabels=class_names,
             xlabel="predicted", ylabel="actual", title="Confusion matrix (test split)")
    figure.tight_layout()
    return figure


def main() -> None:
    params = load_params().evaluate
    model = keras.models.load_model(TRAIN_DIR / "model.keras")
    class_names = records.read_manifest(PREPARED_DIR)["class_names"]
    images, labels = records.load_split_arrays(PREPARED_DIR, "test")
    probabilities = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    metrics = compute_metrics(probabilities, labels, class_names, params.top_k)
    blessing = decide_blessing(metrics, params)
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, labels=np.arange(len(class_names)))

    reference = tracking.read_run_reference(TRAIN_DIR / "run.json")
    with tracking.stage_run(reference["experiment_name"], run_id=reference["run_id"]):
        with atomic_directory(OUTPUT_DIR) as staging:
            write_json(staging / "blessing.json", blessing)
            plot_confusion_matrix(matrix, class_names).savefig(staging / "confusion_matrix.png", dpi=120)
        Path("plots").mkdir(exist_ok=True)
        pd.DataFrame({"actual": [class_names[i] for i in labels], "predicted": [class_names[i] for i in predictions]}).to_csv(
            "plots/confusion.csv", index=False
        )
        write_json("metrics/evaluate.json", {**metrics, "blessed": blessing["blessed"], "run_id": reference["run_id"]})
        mlflow.log_metrics({f"test_{key}": value for key, value in metrics.items() if isinstance(value, float)})
        mlflow.log_metrics({f"test_recall_{name}": item["recall"] for name, item in metrics["per_class"].items()})
        mlflow.set_tag("blessed", str(blessing["blessed"]).lower())
        mlflow.log_artifacts(str(OUTPUT_DIR), artifact_path="evaluate")
        mlflow.log_artifact("metrics/evaluate.json", artifact_path="evaluate")
    verdict = "BLESSED" if blessing["blessed"] else "NOT blessed"
    print(f"test accuracy {metrics['accuracy']:.4f} on {metrics['num_examples']} images: {verdict} ({'; '.join(blessing['reasons'])})")


if __name__ == "__main__":
    main()
