"""The image kind's evaluation: the test split's images through the trained model and through the classical baseline
(an RBF SVM on downscaled pixels, fit on a train sample, on the second core meanwhile), the likely label errors of
every split (components/evaluate/label_issues.py), the confusion matrix, the most confident mistakes and the
reliability diagram. Reads data/prepared's shards, writes nothing itself.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from components.evaluate.baseline import MAX_TRAIN_EXAMPLES, fit_and_score, sample_per_class
from components.evaluate.gate import predict_with_champion
from components.evaluate.label_issues import (
    MAX_EXAMPLES,
    describe_label_errors,
    find_likely_label_errors,
    plot_label_issues,
)
from components.evaluate.metrics import compute_metrics, load_test_split, most_confused
from components.evaluate.report import plot_confident_mistakes, plot_confusion_matrix, plot_reliability_diagram
from components.evaluate.tasks import Evaluation
from tfpipe import paths, records, timing
from tfpipe.config import Params


def predict(model, images: np.ndarray) -> np.ndarray:
    return model.predict(images.astype(np.float32), batch_size=256, verbose=0)


def score(model, images: np.ndarray, train_split: tuple[np.ndarray, np.ndarray], labels: np.ndarray):
    """(the network's test probabilities, the classical baseline fit on the train split and scored on the test
    split). libsvm fits without Python's lock: the baseline runs on a second core while the network predicts."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        baseline = pool.submit(fit_and_score, *train_split, images, labels)
        return predict(model, images), baseline.result()


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


def evaluate(all_params: Params, model, manifest: dict) -> Evaluation:
    top_k, class_names = all_params.evaluate.top_k, manifest["class_names"]
    test = load_test_split(paths.PREPARED)  # images, labels, file names
    images, labels, files = test
    # train and val are read for their labels; only the samples the baseline and the label check use keep images.
    split_labels = {split: records.read_labels(paths.PREPARED, split) for split in ("train", "val")}
    split_labels["test"] = (labels, files)
    train_labels = split_labels["train"][0]
    baseline_sample = sample_per_class(train_labels, MAX_TRAIN_EXAMPLES, seed=0)
    label_sample = label_check_sample(split_labels, seed=0)
    baseline_images, label_images = gather_samples("train", baseline_sample, label_sample["train"])  # one pass
    sample_images = {
        "train": label_images,
        "val": gather_samples("val", label_sample["val"])[0],
        "test": images[label_sample["test"]],
    }
    timing.lap("read the splits and the model")
    probabilities, baseline = score(model, images, (baseline_images, train_labels[baseline_sample]), labels)
    timing.lap("network and classical baseline on test")
    print(
        f"classical baseline: {baseline['model']}, test accuracy {baseline['accuracy']:.4f} "
        f"({baseline['train_examples']} train images, {baseline['features']} features, {baseline['seconds']} s)"
    )
    metrics = compute_metrics(probabilities, labels, class_names, top_k)
    issues, checked, issue_images = find_label_errors(split_labels, label_sample, sample_images, class_names, model, 0)
    print(describe_label_errors(issues, checked))
    timing.lap("likely label errors (cross-validated SVM)")
    predictions = probabilities.argmax(axis=1)
    return Evaluation(
        task="classification",
        metrics=metrics,
        baseline={key: value for key, value in baseline.items() if key != "predictions"},
        score_champion=lambda uri: compute_metrics(
            predict_with_champion(uri, images, class_names), labels, class_names, top_k
        ),
        figures={
            "confusion_matrix.png": plot_confusion_matrix(
                confusion_matrix(labels, predictions, labels=np.arange(len(class_names))), class_names
            ),
            "confident_mistakes.png": plot_confident_mistakes(images, labels, probabilities, class_names, files),
            "reliability_diagram.png": plot_reliability_diagram(probabilities, labels),
            "label_issues.png": plot_label_issues(issue_images, issues),
        },
        tables={"label_issues.csv": issues.drop(columns="index")},
        confusion=pd.DataFrame(
            {"actual": [class_names[i] for i in labels], "predicted": [class_names[i] for i in predictions]}
        ),
        details={"most_confused": most_confused(labels, predictions, class_names), "likely_label_errors": checked},
        label_errors=checked,
        tensorboard_images=("confusion_matrix", "confident_mistakes", "label_issues"),
    )
