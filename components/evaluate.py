"""Evaluate stage: reads artifacts/train, the train and test splits and the registry's champion;
writes metrics, plots and the gate decision.

Writes metrics/evaluate.json (DVC metrics), plots/confusion.csv (DVC confusion plot) and
artifacts/evaluate/ (blessing.json, which export reads, and three PNGs: confusion matrix, most
confident mistakes, reliability diagram); logs all of it into the model's MLflow run. The gate
compares the model with the registry's champion of the same dataset and with a classical
baseline (components/baseline.py) fit on the same train split.
"""

from __future__ import annotations

import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.exceptions import MlflowException
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from components.baseline import fit_and_score
from models.loading import load_trained_model
from pipelines import model_trust, paths, records, tracking
from pipelines.config import EvaluateParams, load_params, registered_model_name
from pipelines.outputs import atomic_directory, run_stage, write_csv, write_json
from pipelines.redaction import redact

CALIBRATION_BINS = 15
MISTAKES_SHOWN = 16


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


class RegistryError(RuntimeError):
    """The registry could not be read, or its champion could not be loaded or compared: the gate fails closed."""


def find_champion(model_name: str):
    """The registry's champion ModelVersion, or None when there is none yet (no such registered model, or no
    alias); raises RegistryError when the registry cannot be read: "could not check" is not "no champion"."""
    try:
        return tracking.champion_version(model_name)
    except MlflowException as error:
        reason = error.message
    except Exception as error:  # noqa: BLE001  (an unreachable server raises requests' or the store's own errors)
        reason = f"{type(error).__name__}: {error}"
    raise RegistryError(redact(f"the model registry at {mlflow.get_tracking_uri()} could not be read ({reason[:300]})"))


def predict_with_champion(model_uri: str, images: np.ndarray, class_names: list[str]) -> np.ndarray:
    """The champion's probabilities on the candidate's test images; raises RegistryError when it cannot be loaded,
    or when it takes other images or predicts other classes (a champion is never replaced by another dataset's
    model)."""
    try:
        with tempfile.TemporaryDirectory() as directory:
            # A SavedModel runs its graph: only the one our export registered (its recorded digest) is loaded.
            which, recorded = model_trust.registered_digest(model_uri)
            saved_model = model_trust.download_mlflow_model(model_uri, Path(directory))
            if recorded is None:
                name, number = which.split(" version ")
                raise model_trust.UntrustedModel(
                    f"{which} carries no digest of its SavedModel ({model_trust.DIGEST_TAG}: exported before tfpipe "
                    f"recorded one); {model_trust.WHY}. If you trust it, record its digest: "
                    f"python -m pipelines.tracking trust-version {name} {number}"
                )
            model_trust.check_saved_model(saved_model, recorded=recorded)
            loaded = tf.saved_model.load(str(saved_model))
            serving = loaded.signatures["serving_default"]
    except Exception as error:  # noqa: BLE001  (any failure to load means: could not check, and say why)
        raise RegistryError(redact(f"could not be loaded ({type(error).__name__}: {str(error)[:600]})")) from None
    input_shape = tuple(serving.structured_input_signature[1]["images"].shape[1:])
    if input_shape != images.shape[1:]:
        raise RegistryError(
            f"takes images of shape {input_shape}, the candidate {images.shape[1:]}: another dataset's model"
        )
    outputs = [serving(images=tf.constant(images[start : start + 256])) for start in range(0, len(images), 256)]
    probabilities = np.concatenate([output["probabilities"].numpy() for output in outputs])
    if hasattr(loaded, "class_names"):  # export's ServingModule keeps every class name in a variable
        named = dict(enumerate(name.decode() for name in loaded.class_names.numpy()))
    else:  # an older export: the names of the classes it predicts
        named = {
            int(i): name.decode()
            for output in outputs
            for i, name in zip(output["class_ids"].numpy(), output["class_names"].numpy(), strict=True)
        }
    if probabilities.shape[1] != len(class_names) or any(
        index >= len(class_names) or class_names[index] != name for index, name in named.items()
    ):
        raise RegistryError(
            f"has classes {[named.get(i, '?') for i in range(probabilities.shape[1])]}, the candidate "
            f"{class_names}: another dataset's model"
        )
    return probabilities


def evaluate_champion(
    model_name: str, images: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int
) -> dict:
    """What the gate compares against: {"version": {"version", "run_id"} or None, "metrics": the champion's metrics
    on the candidate's test split or None, "skip": why there is nothing to compare (no champion yet: the
    thresholds decide), "error": why the comparison could not be made (the gate fails closed)}."""
    check = {"version": None, "metrics": None, "skip": "", "error": ""}
    try:
        version = find_champion(model_name)
    except RegistryError as error:
        return {**check, "error": str(error)}
    if version is None:
        return {
            **check,
            "skip": f"no champion: registered model {model_name!r} has no {tracking.CHAMPION_ALIAS!r} version yet",
        }
    check["version"] = {"version": int(version.version), "run_id": version.run_id}
    try:
        probabilities = predict_with_champion(f"models:/{model_name}/{version.version}", images, class_names)
    except RegistryError as error:
        return {
            **check,
            "error": f"champion v{version.version} of {model_name!r} {error}; a champion is only replaced by a "
            "model it can be compared with (another dataset needs its own data.name or export.model_name)",
        }
    return {**check, "metrics": compute_metrics(probabilities, labels, class_names, top_k)}


def decide_blessing(
    candidate: dict,
    params: EvaluateParams,
    champion: dict | None = None,
    *,
    champion_label: str = "the champion",
    no_champion_reason: str = "no champion",
    champion_error: str = "",
    baseline: dict | None = None,
) -> dict:
    """The promotion gate. `candidate` and `champion` are compute_metrics() results on the same test split.

    No champion yet: the thresholds decide. A champion that could not be checked (`champion_error`:
    an unreadable registry, a champion that cannot be loaded or serves another dataset) is a FAIL:
    the gate fails closed. `baseline` (baseline.fit_and_score on the same splits) must be beaten by
    evaluate.min_margin_over_baseline. Every check is a reason, passed or not.
    """
    accuracy = candidate["accuracy"]
    floor = resolve_floor(params, baseline)
    passed = floor["value"] is not None and accuracy >= floor["value"] - 1e-9
    if floor["value"] is None:
        reasons = [f"FAIL: {floor['source']}"]
    elif params.min_accuracy == "auto":
        reasons = [
            f"{'PASS' if passed else 'FAIL'}: test accuracy {accuracy:.4f} is {'at or above' if passed else 'below'} "
            f"the floor {floor['value']:.4f} ({floor['source']})"
        ]
    else:
        reasons = [
            f"{'PASS' if passed else 'FAIL'}: test accuracy {accuracy:.4f} is "
            f"{'at or above' if passed else 'below'} evaluate.min_accuracy {params.min_accuracy}"
        ]
    if baseline is not None and params.min_accuracy != "auto":  # with auto, the floor is this very check
        margin = accuracy - baseline["accuracy"]
        beaten = margin >= params.min_margin_over_baseline - 1e-9
        reasons.append(
            f"{'PASS' if beaten else 'FAIL'}: test accuracy {accuracy:.4f} "
            f"vs the classical baseline's {baseline['accuracy']:.4f} "
            f"({baseline['model']}, same splits): margin {margin:+.4f} is {'at or above' if beaten else 'below'} "
            f"evaluate.min_margin_over_baseline {params.min_margin_over_baseline}"
        )
    comparison = None
    if champion_error:
        reasons.append(f"FAIL: could not check against the champion: {champion_error}")
    elif champion is None:
        reasons.append(
            f"SKIP: accuracy regression and per-class recall drop checks: {no_champion_reason}; "
            "the thresholds alone decide"
        )
    else:
        drops = {
            name: champion["per_class"][name]["recall"] - item["recall"]
            for name, item in candidate["per_class"].items()
        }
        worst = max(drops, key=drops.get)
        change = accuracy - champion["accuracy"]
        comparison = {
            "accuracy": champion["accuracy"],
            "accuracy_change": change,
            "max_class_recall_drop": drops[worst],
            "max_class_recall_drop_class": worst,
        }
        # The epsilon keeps 0.95 vs 0.96 at a tolerance of 0.01 a pass despite float rounding.
        regressed = change < -params.max_accuracy_regression - 1e-9
        reasons.append(
            f"{'FAIL' if regressed else 'PASS'}: test accuracy {accuracy:.4f} "
            f"vs {champion_label}'s {champion['accuracy']:.4f} (change {change:+.4f}) "
            f"is {'beyond' if regressed else 'within'} "
            f"evaluate.max_accuracy_regression {params.max_accuracy_regression}"
        )
        failing = [name for name, drop in drops.items() if drop > params.max_class_recall_drop + 1e-9]
        for name in failing:
            reasons.append(
                f"FAIL: recall of class {name!r} fell {drops[name]:.4f} "
                f"from {champion_label}'s {champion['per_class'][name]['recall']:.4f} "
                f"to {candidate['per_class'][name]['recall']:.4f}, "
                f"more than evaluate.max_class_recall_drop {params.max_class_recall_drop}"
            )
        if not failing:
            reasons.append(
                f"PASS: largest per-class recall drop vs {champion_label} is {drops[worst]:+.4f} (class {worst!r}), "
                f"within evaluate.max_class_recall_drop {params.max_class_recall_drop}"
            )
    return {
        "blessed": not any(reason.startswith("FAIL") for reason in reasons),
        "reasons": reasons,
        "comparison": comparison,
        "floor": floor,
    }


def resolve_floor(params: EvaluateParams, baseline: dict | None) -> dict:
    """The accuracy floor that applies and where it comes from: {"value": float or None, "source": words}.

    A number in evaluate.min_accuracy is the user's floor for their dataset. `auto` is the classical baseline's
    test accuracy (same splits) plus evaluate.min_margin_over_baseline, capped at 1: a floor that fits any
    dataset. Without a baseline, auto cannot be resolved and the gate fails closed (value None).
    """
    if params.min_accuracy != "auto":
        return {"value": float(params.min_accuracy), "source": "evaluate.min_accuracy"}
    if baseline is None:
        return {
            "value": None,
            "source": "evaluate.min_accuracy is auto, but there is no classical baseline to set the floor from",
        }
    value = min(1.0, baseline["accuracy"] + params.min_margin_over_baseline)
    return {
        "value": value,
        "source": f"evaluate.min_accuracy: auto, the classical baseline's {baseline['accuracy']:.4f} + "
        f"evaluate.min_margin_over_baseline {params.min_margin_over_baseline}",
    }


def per_class_recall(metrics: dict) -> dict[str, float]:
    return {name: item["recall"] for name, item in metrics["per_class"].items()}


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


def write_tensorboard_summaries(log_dir: Path, confusion_png: bytes, metrics: dict) -> None:
    """The confusion matrix (Images tab) and the test metrics (with the baseline's accuracy), which the HParams
    dashboard shows beside each run's params."""
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        tf.summary.image("confusion_matrix", tf.image.decode_png(confusion_png, channels=4)[tf.newaxis], step=0)
        for key, value in metrics.items():
            if isinstance(value, float):
                tf.summary.scalar(f"test_{key}", value, step=0)


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
    log_dir = tracking.tensorboard_dir(reference["tensorboard"]) / "evaluate"
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
    reference = tracking.read_run_reference(paths.TRAIN / "run.json")
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


if __name__ == "__main__":
    run_stage("evaluate", main)
