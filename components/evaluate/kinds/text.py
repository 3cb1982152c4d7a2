"""The text kind's evaluation: the test documents through the trained model and through the classical baseline the
gate compares with (TF-IDF of words and word pairs with a logistic regression, scikit-learn, fit on the train
split), accuracy, macro F1 and per-class figures as for images, the most confident mistakes as text, and the likely
label errors of every split (confident learning on the baseline's cross-validated probabilities, confirmed by the
network). Reads data/prepared, writes nothing itself.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import confusion_matrix

from components.evaluate.baseline import sample_per_class
from components.evaluate.gate import RegistryError, check_class_names, load_champion
from components.evaluate.label_issues import (
    MAX_EXAMPLES,
    cross_validated_probabilities,
    describe_label_errors,
    find_likely_label_errors,
)
from components.evaluate.metrics import compute_metrics, most_confused
from components.evaluate.report import plot_confusion_matrix, plot_reliability_diagram, plot_rows
from components.evaluate.tasks import Evaluation
from tfpipe import paths, timing
from tfpipe.config import Params
from tfpipe.records import SPLITS

SHOWN = 20
EXCERPT = 160  # characters of a document shown beside a mistake


def tf_idf_logistic():
    """The baseline: TF-IDF of words and word pairs (seen in two documents or more, sublinear counts) into a logistic
    regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000),
        LogisticRegression(max_iter=2000, C=4.0),
    )


def fit_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    start = time.perf_counter()
    model = tf_idf_logistic().fit(train["text"], train["label"])
    predictions = model.predict(test["text"])
    return {
        "name": "tf_idf_logistic",
        "model": "TF-IDF (word 1-2-grams) + LogisticRegression",
        "accuracy": float(np.mean(predictions == test["label"].to_numpy())),
        "train_examples": int(len(train)),
        "seconds": round(time.perf_counter() - start, 2),
    }


def out_of_fold(texts: np.ndarray):
    """The label check's cross-validated model: the baseline's, on the documents its positions index."""

    def probabilities(positions: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
        return cross_validated_probabilities(tf_idf_logistic(), texts[positions], labels, num_classes, seed)

    return probabilities


def champion_probabilities(uri: str, texts: np.ndarray, class_names: list[str]) -> np.ndarray:
    loaded, serving = load_champion(uri)
    if set(serving.structured_input_signature[1]) != {"text"}:
        raise RegistryError(f"takes {sorted(serving.structured_input_signature[1])}, not text: another kind's model")
    outputs = [serving(text=tf.constant(texts[start : start + 512])) for start in range(0, len(texts), 512)]
    probabilities = np.concatenate([output["probabilities"].numpy() for output in outputs])
    check_class_names(loaded, outputs, probabilities, class_names)
    return probabilities


def excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def evaluate(all_params: Params, model, manifest: dict) -> Evaluation:
    class_names, top_k = manifest["class_names"], all_params.evaluate.top_k
    splits = {split: pd.read_parquet(paths.PREPARED / manifest["splits"][split]["file"]) for split in SPLITS}
    test = splits["test"]
    texts, labels = test["text"].to_numpy(dtype=object), test["label"].to_numpy(dtype=np.int64)
    timing.lap("read the splits and the model")
    probabilities = model.predict(texts, batch_size=256, verbose=0)
    baseline = fit_baseline(splits["train"], test)
    print(
        f"classical baseline: {baseline['model']}, test accuracy {baseline['accuracy']:.4f} ({baseline['seconds']} s)"
    )
    timing.lap("network and classical baseline on test")
    metrics = compute_metrics(probabilities, labels, class_names, top_k)
    every = pd.concat([splits[split].assign(split=split) for split in SPLITS], ignore_index=True)
    chosen = sample_per_class(every["label"].to_numpy(), MAX_EXAMPLES, 0)
    documents = every["text"].to_numpy(dtype=object)
    issues, checked = find_likely_label_errors(
        chosen,
        every["label"].to_numpy(dtype=np.int64)[chosen],
        every["file"].to_numpy()[chosen].tolist(),
        every["split"].to_numpy()[chosen].tolist(),
        class_names,
        lambda positions: model.predict(documents[positions], batch_size=256, verbose=0),
        0,
        total=len(every),
        out_of_fold=lambda positions, fold_labels, k, seed: out_of_fold(documents)(positions, fold_labels, k, seed),
    )
    issues = issues.drop(columns="index")
    print(describe_label_errors(issues, checked, "documents"))
    timing.lap("likely label errors (cross-validated TF-IDF)")
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")][:SHOWN]
    mistakes = pd.DataFrame(
        {
            "file": test["file"].to_numpy()[wrong],
            "true": [class_names[i] for i in labels[wrong]],
            "predicted": [class_names[i] for i in predictions[wrong]],
            "confidence": np.round(probabilities[wrong].max(axis=1), 3),
            "text": [excerpt(text) for text in texts[wrong]],
        }
    )
    return Evaluation(
        task="classification",
        metrics=metrics,
        baseline=baseline,
        score_champion=lambda uri: compute_metrics(
            champion_probabilities(uri, texts, class_names), labels, class_names, top_k
        ),
        figures={
            "confusion_matrix.png": plot_confusion_matrix(
                confusion_matrix(labels, predictions, labels=np.arange(len(class_names))), class_names
            ),
            "confident_mistakes.png": plot_rows(mistakes.drop(columns="text"), "Most confident mistakes (test split)"),
            "reliability_diagram.png": plot_reliability_diagram(probabilities, labels),
            "label_issues.png": plot_rows(issues[issues["confirmed"]], "Likely label errors (every split)"),
        },
        tables={"confident_mistakes.csv": mistakes, "label_issues.csv": issues},
        confusion=pd.DataFrame(
            {"actual": [class_names[i] for i in labels], "predicted": [class_names[i] for i in predictions]}
        ),
        details={
            "most_confused": most_confused(labels, predictions, class_names),
            "likely_label_errors": checked,
            "confident_mistakes": json.loads(mistakes.head(5).to_json(orient="records")),
        },
        label_errors=checked,
        tensorboard_images=("confusion_matrix", "confident_mistakes", "reliability_diagram"),
    )
