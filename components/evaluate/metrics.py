"""Test-split metrics: accuracy, top-k, loss, per-class precision/recall/F1 and calibration; reads the test split's
shards, writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from tfpipe import records

CALIBRATION_BINS = 15


def load_test_split(directory: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test split in memory: images uint8 [N,H,W,C], labels [N], file names [N]."""
    batches = list(records.read_split(directory, "test", with_file=True).batch(1024).as_numpy_iterator())
    if not batches:
        raise ValueError("the test split is empty: nothing to evaluate")
    images, labels, files = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    return images, labels, [name.decode() for name in files]


def compute_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int) -> dict:
    """Accuracy, top-k accuracy, loss, calibration error and per-class precision/recall/F1."""
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
