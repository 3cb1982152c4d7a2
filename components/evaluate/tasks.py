"""What evaluate does by task, in one table: the gate that decides (higher accuracy, or lower MAE), what blessing.json
says of the candidate, the headline metrics (metrics/evaluate.json) and what MLflow gets. Every kind's evaluation
(components/evaluate/kinds/) returns an Evaluation, and the stage does the rest with the task's entry. Reads and
writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from components.evaluate.gate import compare_with_champion, decide_blessing, per_class_recall
from components.evaluate.regression import compare_regression, decide_regression
from tfpipe.run_records import metric_keys


@dataclass
class Evaluation:
    """A kind's evaluation of the trained model on its test split, and how to score the champion on the same split."""

    task: str  # classification | regression
    metrics: dict  # the test metrics (components/evaluate/metrics.compute_metrics or regression.regression_metrics)
    baseline: dict  # the gate's classical baseline, fit on the train split: {"model", "accuracy" or "mae", ...}
    score_champion: Callable[[str], dict]  # a registered model's URI -> its metrics on this test split
    figures: dict = field(default_factory=dict)  # file name -> matplotlib Figure (artifacts/evaluate)
    tables: dict = field(default_factory=dict)  # file name -> DataFrame (artifacts/evaluate, CSV)
    confusion: pd.DataFrame | None = None  # plots/confusion.csv: actual, predicted
    details: dict = field(default_factory=dict)  # added to evaluation.json
    label_errors: dict = field(default_factory=dict)  # {"checked", "candidates", "confirmed", ...} when checked
    references: list[dict] = field(default_factory=list)  # other classical models, shown beside the baseline
    tensorboard_images: tuple[str, ...] = ()  # figures (without .png) shown side by side in TensorBoard


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # the headline: accuracy | mae
    higher_is_better: bool
    decide: Callable[..., dict]  # the gate: (metrics, params, champion metrics, ..., baseline=) -> decision
    candidate: Callable[[dict], dict]  # blessing.json's candidate entry, beside the run id
    compared_keys: tuple[str, ...]  # the champion comparison's keys evaluation.json repeats
    # (candidate metrics, champion metrics, params, champion label) -> (comparison, reasons): at least as good?
    compare: Callable[..., tuple[dict, list[str]]]

    def headline(self, evaluation: Evaluation, blessed: bool) -> dict:
        """metrics/evaluate.json: what a user compares across experiments, named short; the gate baseline's figure
        on the same metric, the margin (positive: better than it) and the blessing."""
        metrics, baseline = evaluation.metrics, evaluation.baseline[self.metric]
        value = metrics[self.metric]
        margin = value - baseline if self.higher_is_better else baseline - value
        if self.name == "classification":
            extra = {"macro_f1": metrics["macro_f1"], "ece": metrics["expected_calibration_error"]}
        else:
            extra = {"rmse": metrics["rmse"], "r2": metrics["r2"]}
        label_errors = {"label_errors": evaluation.label_errors["confirmed"]} if evaluation.label_errors else {}
        return {self.metric: value, **extra, "baseline": baseline, "margin": margin, "blessed": blessed, **label_errors}

    def mlflow_metrics(self, metrics: dict) -> dict:
        logged = {f"test_{key}": value for key, value in metrics.items() if isinstance(value, float)}
        if self.name == "classification":
            keys = metric_keys("test_recall_", list(metrics["per_class"]))
            logged.update({keys[name]: item["recall"] for name, item in metrics["per_class"].items()})
        return logged


TASKS = {
    task.name: task
    for task in (
        Task(
            "classification",
            "accuracy",
            True,
            decide_blessing,
            lambda metrics: {"accuracy": metrics["accuracy"], "per_class_recall": per_class_recall(metrics)},
            ("version", "accuracy", "accuracy_change", "max_class_recall_drop", "paired_test"),
            compare_with_champion,
        ),
        Task(
            "regression",
            "mae",
            False,
            decide_regression,
            lambda metrics: {"mae": metrics["mae"], "rmse": metrics["rmse"], "r2": metrics["r2"]},
            ("version", "mae", "mae_change", "paired_test"),
            compare_regression,
        ),
    )
}
