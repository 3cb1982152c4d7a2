"""The evaluate stage's pictures (confusion matrix, most confident mistakes, reliability diagram) and TensorBoard
summaries; writes only what its caller passes it.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from components.evaluate.metrics import (
    CALIBRATION_BINS,
    calibration_bins,
    expected_calibration_error,
)

matplotlib.rcParams["text.parse_math"] = False  # file and class names are drawn as text, never as mathtext

MISTAKES_SHOWN = 16


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(1 + 0.6 * len(class_names), 1 + 0.6 * len(class_names)))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
            fontsize=8,
        )
    axes.set(
        xticks=range(len(class_names)),
        yticks=range(len(class_names)),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix (test split)",
    )
    figure.tight_layout()
    return figure


def select_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to `count` misclassified examples, the most confident first."""
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    return wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")][:count]


def plot_confident_mistakes(
    images, labels, probabilities, class_names, files, count: int = MISTAKES_SHOWN
) -> plt.Figure:
    """A grid of the most confident mistakes, each titled with its true and predicted label."""
    indices = select_confident_mistakes(probabilities, labels, count)
    columns = min(4, max(1, len(indices)))
    rows = max(1, math.ceil(len(indices) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, indices, strict=False):
        image = images[index]
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        predicted = int(probabilities[index].argmax())
        axis.set_title(
            f"true {class_names[labels[index]]}, predicted {class_names[predicted]} "
            f"({probabilities[index, predicted]:.2f})\n{files[index]}",
            fontsize=8,
        )
    if not len(indices):
        axes[0, 0].text(0.5, 0.5, "no mistakes on the test split", ha="center", va="center")
    figure.suptitle("Most confident mistakes (test split)")
    figure.tight_layout()
    return figure


def plot_reliability_diagram(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = CALIBRATION_BINS
) -> plt.Figure:
    """Accuracy per confidence bin against the diagonal a perfectly calibrated model would follow."""
    _, mean_confidence, accuracy = calibration_bins(probabilities, labels, num_bins)
    edges = np.linspace(0, 1, num_bins + 1)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.bar(edges[:-1], np.nan_to_num(accuracy), width=1 / num_bins, align="edge", edgecolor="black", label="accuracy")
    axes.hlines(mean_confidence, edges[:-1], edges[1:], colors="tab:red", linewidth=2, label="mean confidence")
    axes.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ece = expected_calibration_error(probabilities, labels, num_bins)
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"Reliability diagram (test split, ECE {ece:.3f})",
    )
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def write_tensorboard_summaries(log_dir: Path, pictures: dict[str, bytes], metrics: dict) -> None:
    """The pictures (PNG bytes by name: the Images tab shows them side by side) and the test metrics (with the
    baseline's accuracy), which the HParams dashboard shows beside each run's params."""
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        for name, png in pictures.items():
            tf.summary.image(name, tf.image.decode_png(png, channels=4)[tf.newaxis], step=0)
        for key, value in metrics.items():
            if isinstance(value, float):
                tf.summary.scalar(f"test_{key}", value, step=0)


ROWS_SHOWN = 12  # rows drawn in a table picture (the CSV beside it lists every one)


def plot_rows(frame, title: str, shown: int = ROWS_SHOWN) -> plt.Figure:
    """A table's rows as a picture (a table's confident mistakes, label errors or largest residuals): the first
    `shown` rows, each cell cut to 24 characters."""
    rows = frame.head(shown).map(lambda cell: str(cell) if len(str(cell)) <= 24 else str(cell)[:23] + "…")
    width = min(22, 1.4 + 1.3 * max(1, len(rows.columns)))
    figure, axes = plt.subplots(figsize=(width, 0.8 + 0.32 * (len(rows) + 1)))
    axes.axis("off")
    if rows.empty:
        axes.text(0.5, 0.5, "none", ha="center", va="center")
    else:
        table = axes.table(cellText=rows.to_numpy().tolist(), colLabels=list(rows.columns), loc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure
