"""The table kind's evaluation: the test split's rows through the trained model and through the classical models (the
linear baseline the gate uses, gradient boosting beside it: components/evaluate/kinds/table_baselines.py), then by
task. A classification: accuracy and per-class figures as for images, the likely label errors of every split
(confident learning on a cross-validated logistic regression, confirmed by the network), the most confident mistakes
as rows. A regression: MAE, RMSE and R² in the target's units, predicted against actual, the residuals, the error by
category and the rows with the largest errors. Reads data/prepared and the model's statistics (artifacts/train),
writes nothing itself.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import confusion_matrix

from components.evaluate import regression
from components.evaluate.baseline import sample_per_class
from components.evaluate.gate import RegistryError, check_class_names, load_champion
from components.evaluate.kinds import table_baselines
from components.evaluate.label_issues import MAX_EXAMPLES, describe_label_errors, find_likely_label_errors
from components.evaluate.metrics import compute_metrics, most_confused
from components.evaluate.report import plot_confusion_matrix, plot_reliability_diagram, plot_rows
from components.evaluate.tasks import Evaluation
from models.loading import vector_model
from tfpipe import paths, timing
from tfpipe.config import Params
from tfpipe.records import SPLITS
from tfpipe.table_encoding import encode, read_prepared_split
from tfpipe.tables import ROW

SHOWN = 20  # rows in the confident-mistake and largest-residual tables


def read_split(manifest: dict, statistics: dict, split: str) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """(the split's rows as stored, the model's inputs, the targets: class ids or values)."""
    return read_prepared_split(paths.PREPARED, manifest, statistics, split)


def predict(model, inputs: dict) -> np.ndarray:
    return model.predict(inputs, batch_size=1024, verbose=0)


def champion_outputs(uri: str, inputs: dict, manifest: dict) -> np.ndarray:
    """The champion's outputs on the candidate's test rows (probabilities, or values); RegistryError when it takes
    other columns or predicts other classes (another dataset's model)."""
    loaded, serving = load_champion(uri)
    expected = set(serving.structured_input_signature[1])
    if expected != set(inputs):
        raise RegistryError(
            f"takes the columns {sorted(expected)}, the candidate {sorted(inputs)}: another dataset's model"
        )
    outputs = []
    rows = len(next(iter(inputs.values())))
    for start in range(0, rows, 1024):
        batch = {name: tf.constant(values[start : start + 1024].reshape(-1)) for name, values in inputs.items()}
        outputs.append(serving(**batch))
    if manifest["task"] == "classification":
        probabilities = np.concatenate([output["probabilities"].numpy() for output in outputs])
        check_class_names(loaded, outputs, probabilities, manifest["class_names"])
        return probabilities
    if "prediction" not in outputs[0]:
        raise RegistryError("returns no prediction: not a regression model")
    return np.concatenate([output["prediction"].numpy().reshape(-1) for output in outputs])


def label_error_check(manifest, statistics, splits: dict, network, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The likely label errors of every split, on a stratified sample of MAX_EXAMPLES rows."""
    labels = np.concatenate([splits[split][2] for split in SPLITS])
    chosen = sample_per_class(labels, MAX_EXAMPLES, seed)
    inputs = {name: np.concatenate([splits[split][1][name] for split in SPLITS]) for name in splits["train"][1]}
    rows = np.concatenate([splits[split][0][ROW].to_numpy() for split in SPLITS])
    names = [split for split in SPLITS for _ in range(len(splits[split][2]))]
    features = encode({name: values[chosen] for name, values in inputs.items()}, statistics)
    issues, checked = find_likely_label_errors(
        features,
        labels[chosen],
        [f"row {row}" for row in rows[chosen]],
        [names[index] for index in chosen],
        manifest["class_names"],
        lambda batch: network.predict(batch, batch_size=1024, verbose=0),
        seed,
        total=len(labels),
        out_of_fold=table_baselines.out_of_fold_probabilities,
    )
    return issues.drop(columns="index"), checked


def classification(manifest, statistics, model, splits, baselines, top_k: int) -> dict:
    """The classification's metrics, pictures and tables (Evaluation's fields)."""
    frame, inputs, labels = splits["test"]
    class_names = manifest["class_names"]
    probabilities = predict(model, inputs)
    predictions = probabilities.argmax(axis=1)
    metrics = compute_metrics(probabilities, labels, class_names, top_k)
    network = vector_model(model, json.loads((paths.TRAIN / "model.json").read_text())["params"]["model"])
    issues, checked = label_error_check(manifest, statistics, splits, network)
    print(describe_label_errors(issues, checked, "rows"))
    wrong = np.flatnonzero(predictions != labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")][:SHOWN]
    mistakes = frame.iloc[wrong].assign(
        predicted=[class_names[i] for i in predictions[wrong]],
        confidence=np.round(probabilities[wrong].max(axis=1), 3),
    )
    return {
        "metrics": metrics,
        "score_champion": lambda uri: compute_metrics(
            champion_outputs(uri, inputs, manifest), labels, class_names, top_k
        ),
        "figures": {
            "confusion_matrix.png": plot_confusion_matrix(
                confusion_matrix(labels, predictions, labels=np.arange(len(class_names))), class_names
            ),
            "confident_mistakes.png": plot_rows(mistakes, "Most confident mistakes (test split)"),
            "reliability_diagram.png": plot_reliability_diagram(probabilities, labels),
            "label_issues.png": plot_rows(issues[issues["confirmed"]], "Likely label errors (every split)"),
        },
        "tables": {"label_issues.csv": issues, "confident_mistakes.csv": mistakes},
        "confusion": pd.DataFrame(
            {"actual": [class_names[i] for i in labels], "predicted": [class_names[i] for i in predictions]}
        ),
        "details": {"most_confused": most_confused(labels, predictions, class_names), "likely_label_errors": checked},
        "label_errors": checked,
        "tensorboard_images": ("confusion_matrix", "confident_mistakes", "reliability_diagram"),
    }


def regression_outputs(manifest, statistics, model, splits) -> dict:
    """The regression's metrics, pictures and tables (Evaluation's fields)."""
    frame, inputs, targets = splits["test"]
    target = manifest["target"]
    predictions = predict(model, inputs).reshape(-1)
    metrics = regression.regression_metrics(predictions, targets)
    errors = predictions - targets
    largest = np.argsort(-np.abs(errors), kind="stable")[:SHOWN]
    residuals = frame.iloc[largest].assign(
        predicted=np.round(predictions[largest], 4), error=np.round(errors[largest], 4)
    )
    categorical = [item["column"] for item in statistics["inputs"] if item["type"] in ("categorical", "boolean")]
    return {
        "metrics": metrics,
        "score_champion": lambda uri: regression.regression_metrics(champion_outputs(uri, inputs, manifest), targets),
        "figures": {
            "predicted_vs_actual.png": regression.plot_predicted_vs_actual(
                predictions, targets, target, metrics["mae"]
            ),
            "residuals.png": regression.plot_residuals(predictions, targets, target),
            "confident_mistakes.png": plot_rows(residuals, "Largest errors (test split)"),
        },
        "tables": {"largest_residuals.csv": residuals},
        "confusion": regression.confusion_frame(predictions, targets),
        "details": {"error_by_category": regression.error_by_category(frame, predictions, target, categorical)},
        "tensorboard_images": ("predicted_vs_actual", "residuals"),
    }


def evaluate(all_params: Params, model, manifest: dict) -> Evaluation:
    statistics = json.loads((paths.TRAIN / "model.json").read_text())["table"]
    splits = {split: read_split(manifest, statistics, split) for split in SPLITS}
    timing.lap("read the splits and the model")
    train_features = encode(splits["train"][1], statistics)
    test_features = encode(splits["test"][1], statistics)
    baselines = table_baselines.score_models(
        manifest["task"], (train_features, splits["train"][2]), (test_features, splits["test"][2])
    )
    metric = "accuracy" if manifest["task"] == "classification" else "mae"
    for item in baselines:
        print(f"classical model: {item['model']}, test {metric} {item[metric]:.4f} ({item['seconds']} s)")
    timing.lap("classical models")
    if manifest["task"] == "classification":
        fields = classification(manifest, statistics, model, splits, baselines, all_params.evaluate.top_k)
    else:
        fields = regression_outputs(manifest, statistics, model, splits)
    timing.lap("network on test, pictures, label check")
    baseline, *references = [{k: v for k, v in item.items() if k != "predictions"} for item in baselines]
    return Evaluation(task=manifest["task"], baseline=baseline, references=references, **fields)
