"""Evaluate stage: reads artifacts/train, every split and the registry's champion; writes metrics, plots and the
gate decision.

Writes metrics/evaluate.json (the headline DVC metrics), plots/confusion.csv (DVC confusion plot) and
artifacts/evaluate/: blessing.json (which export reads), evaluation.json (every test metric, per class too, and the
classes most confused), label_issues.csv (the likely label errors of every split) and four PNGs (confusion matrix,
most confident mistakes, reliability diagram, likely label errors); logs all of it into the model's MLflow run and
TensorBoard. The gate compares the model with the registry's champion of the same dataset and with a classical
baseline (components/evaluate/baseline.py) fit on the same train split.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from components.evaluate.baseline import MAX_TRAIN_EXAMPLES, fit_and_score, sample_per_class
from components.evaluate.gate import decide_blessing, evaluate_champion, per_class_recall
from components.evaluate.label_issues import (
    MAX_EXAMPLES,
    describe_label_errors,
    find_likely_label_errors,
    plot_label_issues,
)
from components.evaluate.metrics import compute_metrics, load_test_split, most_confused
from components.evaluate.report import (
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_reliability_diagram,
    write_tensorboard_summaries,
)
from models.loading import load_trained_model
from tfpipe import paths, records, run_records, timing, tracking
from tfpipe.config import registered_model_name
from tfpipe.outputs import atomic_directory, write_csv, write_json
from tfpipe.params_file import load_params


def score(model, images: np.ndarray, train_split: tuple[np.ndarray, np.ndarray], labels: np.ndarray):
    """(the network's test probabilities, the classical baseline fit on the train split and scored on the test
    split). libsvm fits without Python's lock: the baseline runs on a second core while the network predicts."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        baseline = pool.submit(fit_and_score, *train_split, images, labels)
        return predict(model, images), baseline.result()


def predict(model, images: np.ndarray) -> np.ndarray:
    return model.predict(images.astype(np.float32), batch_size=256, verbose=0)


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


def label_check_sample(split_labels: dict[str, tuple[np.ndarray, list[str]]], seed: int) -> dict[str, np.ndarray]:
    """Each split's positions (ascending) in the likely-label-error check: one stratified sample of MAX_EXAMPLES
    over every split, so the memory is bounded whatever the dataset's size."""
    chosen = sample_per_class(np.concatenate([labels for labels, _ in split_labels.values()]), MAX_EXAMPLES, seed)
    sample, start = {}, 0
    for split, (labels, _) in split_labels.items():
        sample[split] = chosen[(chosen >= start) & (chosen < start + len(labels))] - start
        start += len(labels)
    return sample


def gather_samples(split: str, *samples: np.ndarray) -> list[np.ndarray]:
    """The images of each sample (ascending positions in the split), from one pass over the split's shards."""
    wanted = np.unique(np.concatenate(samples))
    images = records.gather_images(paths.PREPARED, split, wanted)
    return [images[np.searchsorted(wanted, sample)] for sample in samples]


def find_label_errors(
    split_labels: dict[str, tuple[np.ndarray, list[str]]],
    sample: dict[str, np.ndarray],
    sample_images: dict[str, np.ndarray],
    class_names: list[str],
    model,
    seed: int,
) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """(the likely label errors of every split, what was checked, the images they index into), on the images of
    label_check_sample's positions."""
    images = np.concatenate([sample_images[split] for split in split_labels])
    issues, checked = find_likely_label_errors(
        images,
        np.concatenate([labels[sample[split]] for split, (labels, _) in split_labels.items()]),
        [files[index] for split, (_, files) in split_labels.items() for index in sample[split]],
        [split for split in split_labels for _ in sample[split]],
        class_names,
        lambda batch: predict(model, batch),
        seed,
        total=sum(len(labels) for labels, _ in split_labels.values()),
    )
    return issues, checked, images


def write_outputs(
    blessing: dict,
    metrics: dict,
    test: tuple[np.ndarray, np.ndarray, list[str]],
    probabilities: np.ndarray,
    class_names: list[str],
    label_errors: tuple[pd.DataFrame, dict, np.ndarray],
) -> dict:
    """artifacts/evaluate (blessing.json, evaluation.json, label_issues.csv and the pictures, in one step),
    plots/confusion.csv and metrics/evaluate.json (headline values only); returns what is said of the champion."""
    images, labels, files = test
    issues, checked, issue_images = label_errors
    predictions = probabilities.argmax(axis=1)
    figures = {
        "confusion_matrix.png": plot_confusion_matrix(
            confusion_matrix(labels, predictions, labels=np.arange(len(class_names))), class_names
        ),
        "confident_mistakes.png": plot_confident_mistakes(images, labels, probabilities, class_names, files),
        "reliability_diagram.png": plot_reliability_diagram(probabilities, labels),
        "label_issues.png": plot_label_issues(issue_images, issues),
    }
    compared = {
        key: value
        for key, value in (blessing["champion"] or {}).items()
        if key in ("version", "accuracy", "accuracy_change", "max_class_recall_drop")
    }
    evaluation = {
        **metrics,
        "most_confused": most_confused(labels, predictions, class_names),
        "blessed": blessing["blessed"],
        "run_id": blessing["candidate"]["run_id"],
        "baseline_accuracy": blessing["baseline"]["accuracy"],
        "accuracy_floor": blessing["floor"]["value"],
        "likely_label_errors": checked,
        **({"champion": compared} if compared else {}),
    }
    with atomic_directory(paths.EVALUATE) as staging:
        write_json(staging / "blessing.json", blessing)
        write_json(staging / "evaluation.json", evaluation)
        write_csv(staging / "label_issues.csv", issues.drop(columns="index"))
        for file_name, figure in figures.items():
            figure.savefig(staging / file_name, dpi=120)
            plt.close(figure)
    write_csv(
        paths.CONFUSION_PLOT,
        pd.DataFrame({"actual": [class_names[i] for i in labels], "predicted": [class_names[i] for i in predictions]}),
    )
    # The headline: what a user compares across experiments (`dvc exp show`, `dvc metrics diff`), named short so
    # that a table of them fits a terminal; the rest is in artifacts/evaluate/evaluation.json and MLflow.
    write_json(
        paths.EVALUATE_METRICS,
        {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "ece": metrics["expected_calibration_error"],
            "baseline": blessing["baseline"]["accuracy"],
            "margin": metrics["accuracy"] - blessing["baseline"]["accuracy"],
            "blessed": blessing["blessed"],
            "label_errors": checked["confirmed"],
        },
    )
    return compared


TENSORBOARD_IMAGES = ("confusion_matrix", "confident_mistakes", "label_issues")  # the Images tab, side by side


def log_to_mlflow(
    metrics: dict, blessing: dict, compared: dict, baseline_seconds: float, reference: dict, label_errors: dict
) -> None:
    """Into the model's run (open): test metrics, the baseline, the gate, the outputs and TensorBoard summaries."""
    baseline = blessing["baseline"]
    mlflow.log_metrics({f"test_{key}": value for key, value in metrics.items() if isinstance(value, float)})
    mlflow.log_metrics({f"test_recall_{name}": item["recall"] for name, item in metrics["per_class"].items()})
    mlflow.log_metrics(
        {
            "baseline_accuracy": baseline["accuracy"],
            "margin_over_baseline": metrics["accuracy"] - baseline["accuracy"],
            "baseline_seconds": baseline_seconds,
            "likely_label_errors": label_errors["confirmed"],
            "label_error_candidates": label_errors["candidates"],
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
        {name: (paths.EVALUATE / f"{name}.png").read_bytes() for name in TENSORBOARD_IMAGES},
        {**metrics, "baseline_accuracy": baseline["accuracy"]},
    )
    mlflow.log_artifacts(str(log_dir), artifact_path="tensorboard/evaluate")
    mlflow.log_artifact(str(paths.EVALUATE_METRICS), artifact_path="evaluate")


def main() -> None:
    timing.start()
    all_params = load_params()
    params, model_name = all_params.evaluate, registered_model_name(all_params)
    class_names = records.read_manifest(paths.PREPARED)["class_names"]
    test = load_test_split(paths.PREPARED)  # images, labels, file names
    images, labels, _ = test
    # train and val are read for their labels; only the samples the baseline and the label check use keep images.
    split_labels = {split: records.read_labels(paths.PREPARED, split) for split in ("train", "val")}
    split_labels["test"] = (labels, test[2])
    train_labels = split_labels["train"][0]
    baseline_sample = sample_per_class(train_labels, MAX_TRAIN_EXAMPLES, seed=0)
    label_sample = label_check_sample(split_labels, seed=0)
    baseline_images, label_images = gather_samples("train", baseline_sample, label_sample["train"])  # one pass
    train_sample = (baseline_images, train_labels[baseline_sample])
    sample_images = {
        "train": label_images,
        "val": gather_samples("val", label_sample["val"])[0],
        "test": images[label_sample["test"]],
    }
    model = load_trained_model(paths.TRAIN)
    timing.lap("read the splits and the model")
    probabilities, baseline = score(model, images, train_sample, labels)
    timing.lap("network and classical baseline on test")
    print(
        f"classical baseline: {baseline['model']}, test accuracy {baseline['accuracy']:.4f} "
        f"({baseline['train_examples']} train images, {baseline['features']} features, {baseline['seconds']} s)"
    )
    metrics = compute_metrics(probabilities, labels, class_names, params.top_k)
    label_errors = find_label_errors(split_labels, label_sample, sample_images, class_names, model, seed=0)
    print(describe_label_errors(*label_errors[:2]))
    timing.lap("likely label errors (cross-validated SVM)")
    reference = run_records.read_run_reference(paths.TRAIN / "run.json")
    with tracking.stage_run(reference["experiment_name"], run_id=reference["run_id"]):
        check = evaluate_champion(model_name, images, labels, class_names, params.top_k)
        champion = check["version"]
        timing.lap("MLflow: run and champion")
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
        compared = write_outputs(blessing, metrics, test, probabilities, class_names, label_errors)
        timing.lap("outputs (report, plots)")
        log_to_mlflow(metrics, blessing, compared, baseline["seconds"], reference, label_errors[1])
        timing.lap("MLflow and TensorBoard: logging")
    print(
        f"test accuracy {metrics['accuracy']:.4f} on {metrics['num_examples']} images: "
        f"{'BLESSED' if gate['blessed'] else 'NOT blessed'}\n  " + "\n  ".join(gate["reasons"])
    )
    timing.write("evaluate")
