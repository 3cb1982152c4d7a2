"""A regression's test metrics (MAE, RMSE, R², in the target's units), its promotion gate (lower is better: the
ceiling, the linear baseline, the champion on the same test split) and its pictures (predicted against actual,
residuals against predicted). Reads the arrays it is given, writes nothing.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from components.evaluate import paired
from components.evaluate.paired import OUTCOMES
from tfpipe.config import EvaluateParams

matplotlib.rcParams["text.parse_math"] = False  # column names are drawn as text, never as mathtext
DECILES = 10  # plots/confusion.csv bins a regression's actual and predicted values into the test split's deciles


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict:
    """MAE, RMSE, R², the median absolute error and the mean error (bias), in the target's units; `outcomes` (each
    row's absolute error, for the gate's paired test against the champion: components/evaluate/paired.py)."""
    predictions, targets = np.asarray(predictions, np.float64).reshape(-1), np.asarray(targets, np.float64)
    if not len(targets):
        raise ValueError("the test split is empty: nothing to evaluate")
    errors = predictions - targets
    total = float(np.sum((targets - targets.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(errors))),
        OUTCOMES: np.abs(errors),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "r2": float(1 - np.sum(errors**2) / total) if total else 0.0,
        "median_absolute_error": float(np.median(np.abs(errors))),
        "mean_error": float(np.mean(errors)),
        "num_examples": int(len(targets)),
    }


def error_by_category(frame: pd.DataFrame, predictions: np.ndarray, target: str, columns: list[str]) -> dict:
    """MAE per value of each categorical column on the test split: where the model is worse."""
    errors = np.abs(np.asarray(predictions).reshape(-1) - frame[target].to_numpy(dtype=np.float64))
    result = {}
    for column in columns:
        groups = pd.Series(errors).groupby(frame[column].fillna("").astype(str).to_numpy())
        result[column] = {str(value): {"mae": float(group.mean()), "rows": int(len(group))} for value, group in groups}
    return result


def resolve_ceiling(params: EvaluateParams, baseline: dict | None) -> dict:
    """The MAE ceiling that applies: evaluate.max_error, or with auto the baseline's MAE x (1 - min_error_reduction)."""
    if params.max_error != "auto":
        return {"value": float(params.max_error), "source": "evaluate.max_error"}
    if baseline is None:
        return {"value": None, "source": "evaluate.max_error is auto, but there is no baseline to set it from"}
    return {
        "value": baseline["mae"] * (1 - params.min_error_reduction),
        "source": f"evaluate.max_error: auto, the linear baseline's MAE {baseline['mae']:.4f} x (1 - "
        f"evaluate.min_error_reduction {params.min_error_reduction})",
    }


def decide_regression(
    candidate: dict,
    params: EvaluateParams,
    champion: dict | None = None,
    *,
    champion_label: str = "the champion",
    no_champion_reason: str = "no champion",
    champion_error: str = "",
    baseline: dict | None = None,
) -> dict:
    """The gate for a regression, lower is better: test MAE at or below the ceiling (resolve_ceiling), and with a
    champion on the same test split, at least as good (compare_regression). Fails closed."""
    mae, ceiling = candidate["mae"], resolve_ceiling(params, baseline)
    reasons = []
    if ceiling["value"] is None:
        reasons.append(f"FAIL: {ceiling['source']}")
    else:
        passed = mae <= ceiling["value"] + 1e-9
        reasons.append(
            f"{'PASS' if passed else 'FAIL'}: test MAE {mae:.4f} is {'at or below' if passed else 'above'} the "
            f"ceiling {ceiling['value']:.4f} ({ceiling['source']})"
        )
    comparison = None
    if champion_error:
        reasons.append(f"FAIL: could not check against the champion: {champion_error}")
    elif champion is None:
        reasons.append(f"SKIP: comparison with a champion: {no_champion_reason}; the ceiling alone decides")
    else:
        comparison, compared = compare_regression(candidate, champion, params, champion_label)
        reasons += compared
    return {
        "blessed": not any(reason.startswith("FAIL") for reason in reasons),
        "reasons": reasons,
        "comparison": comparison,
        "floor": ceiling,
    }


def compare_regression(
    candidate: dict, champion: dict, params: EvaluateParams, champion_label: str = "the champion"
) -> tuple[dict, list[str]]:
    """(the comparison, its reasons) of a candidate and the champion on the same test split (regression_metrics
    results): the candidate replaces it only when its MAE is at most the champion's (a tie is as good;
    evaluate.max_error_increase, 0 by default, is a share above it a user may opt into). Wilcoxon's signed-rank test on
    the paired absolute errors says whether the difference is within noise."""
    mae, limit = candidate["mae"], champion["mae"] * (1 + params.max_error_increase)
    worse = mae > limit + 1e-9
    comparison = {"mae": champion["mae"], "mae_change": mae - champion["mae"]}
    noise = ""
    if OUTCOMES in candidate and OUTCOMES in champion:
        comparison["paired_test"] = paired.wilcoxon(candidate[OUTCOMES], champion[OUTCOMES])
        noise = f"; the difference is {comparison['paired_test']['sentence']}"
    tolerance = (
        f"evaluate.max_error_increase {params.max_error_increase} of it above allowed"
        if params.max_error_increase
        else "a champion is replaced only by a model at least as good"
    )
    return comparison, [
        f"{'FAIL' if worse else 'PASS'}: test MAE {mae:.4f} vs {champion_label}'s {champion['mae']:.4f} on the same "
        f"test split (change {mae - champion['mae']:+.4f}): {'worse' if worse else 'at least as good'} ({tolerance})"
        + noise
    ]


def decile_labels(values: np.ndarray, edges: np.ndarray) -> list[str]:
    """Each value's test-split decile as a label ("18.0–21.5"), for DVC's confusion plot of a regression."""
    bounds = np.concatenate([[values.min()], edges, [values.max()]]) if len(values) else np.zeros(2)
    positions = np.searchsorted(edges, values, side="right")
    return [f"{bounds[index]:.4g}–{bounds[index + 1]:.4g}" for index in positions]


def confusion_frame(predictions: np.ndarray, targets: np.ndarray) -> pd.DataFrame:
    """plots/confusion.csv of a regression: actual and predicted values, each binned by the actual values' deciles
    (a predicted-versus-actual heat map in `dvc plots show`)."""
    targets, predictions = np.asarray(targets, np.float64), np.asarray(predictions, np.float64).reshape(-1)
    edges = np.unique(np.quantile(targets, np.linspace(0, 1, DECILES + 1)[1:-1]))
    clipped = np.clip(predictions, targets.min(), targets.max())
    return pd.DataFrame({"actual": decile_labels(targets, edges), "predicted": decile_labels(clipped, edges)})


def plot_predicted_vs_actual(predictions: np.ndarray, targets: np.ndarray, target: str, mae: float) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(targets, predictions, s=12, alpha=0.6)
    low, high = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    axes.plot([low, high], [low, high], "--", color="gray", label="perfect")
    axes.set(xlabel=f"actual {target}", ylabel=f"predicted {target}", title=f"Test split (MAE {mae:.3f})")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def plot_residuals(predictions: np.ndarray, targets: np.ndarray, target: str) -> plt.Figure:
    figure, (by_value, spread) = plt.subplots(1, 2, figsize=(10, 4))
    residuals = predictions - targets
    by_value.scatter(predictions, residuals, s=12, alpha=0.6)
    by_value.axhline(0, color="gray", linestyle="--")
    by_value.set(xlabel=f"predicted {target}", ylabel="predicted - actual", title="Residuals (test split)")
    spread.hist(residuals, bins=30)
    spread.set(xlabel="predicted - actual", ylabel="rows", title="Residual distribution")
    figure.tight_layout()
    return figure
