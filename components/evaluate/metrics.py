"""Test-split metrics: accuracy, top-k, loss, per-class precision/recall/F1 and calibration; reads the test split's
shards, writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from components.evaluate.paired import OUTCOMES
from tfpipe import records

CALIBRATION_BINS = 15


def load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split in memory: images uint8 [N,H,W,C], labels [N], file names [N] (empty arrays for an empty split)."""
    batches = list(records.read_split(directory, split, with_file=True).batch(1024).as_numpy_iterator())
    if not batches:
        shape = records.read_manifest(directory)["image_shape"]
        return np.zeros((0, *shape), np.uint8), np.zeros(0, np.int32), []
    images, labels, files = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    return images, labels, [name.decode() for name in files]


def load_test_split(directory: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test split in memory: images uint8 [N,H,W,C], labels [N], file names [N]."""
    test = load_split(directory, "test")
    if not len(test[1]):
        raise ValueError("the test split is empty: nothing to evaluate")
    return test


def most_confused(labels: np.ndarray, predictions: np.ndarray, class_names: list[str], count: int = 5) -> list[dict]:
    """The class pairs the model mixes up most on the test split: {"actual", "predicted", "images", "share"}."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, predictions, labels=np.arange(len(class_names)))
    np.fill_diagonal(matrix, 0)
    totals = np.bincount(labels, minlength=len(class_names))
    pairs = sorted(
        ((int(matrix[a, p]), a, p) for a in range(len(class_names)) for p in range(len(class_names))), reverse=True
    )
    return [
        {"actual": class_names[a], "predicted": class_names[p], "images": n, "share": round(n / max(1, totals[a]), 4)}
        for n, a, p in pairs[:count]
        if n > 0
    ]


def compute_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int) -> dict:
    """Accuracy, top-k accuracy, loss, calibration error and per-class precision/recall/F1; `outcomes` (each
    example right or wrong, for the gate's paired test against the champion: components/evaluate/paired.py)."""
    if len(labels) == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    predictions = probabilities.argmax(axis=1)
    top_k = min(top_k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1)[:, :top_k]
    classes = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    weighted_f1 = float(np.average(f1, weights=support)) if support.sum() else 0.0
    return {
        "accuracy": float((predictions == labels).mean()),
        OUTCOMES: predictions == labels,
        f"top_{top_k}_accuracy": float((top == labels[:, None]).any(axis=1).mean()),
        "loss": float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)).mean()),
        "expected_calibration_error": expected_calibration_error(probabilities, labels),
        "macro_f1": float(f1.mean()),
        "weighted_f1": weighted_f1,
        "num_examples": len(labels),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        },
    }


def calibration_bins(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = CALIBRATION_BINS):
    """Per equal-width confidence bin: example count, mean confidence, accuracy (NaN for empty bins)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / counts
        accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / counts
    return counts, mean_confidence, accuracy


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = CALIBRATION_BINS
) -> float:
    """Gap between confidence and accuracy, averaged over equal-width confidence bins."""
    counts, mean_confidence, accuracy = calibration_bins(probabilities, labels, num_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_confidence[filled])) / counts.sum())
