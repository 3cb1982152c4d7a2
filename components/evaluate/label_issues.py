"""Likely label errors in every split: files whose given label a model that never saw them finds improbable (the
confident-learning rule, cleanlab's find_label_issues, on out-of-fold predicted probabilities), confirmed by the
trained network. Reads the arrays it is given; draws the gallery; writes nothing itself.

The out-of-fold probabilities come from a cheap model, cross-validated: an RBF SVM on the first principal components
of downscaled pixels (the classical baseline's features), its one-vs-rest decision scores turned into probabilities
by a softmax whose temperature is fit on those same out-of-fold scores, each image scored by the folds that did not
train on it.
Where the mistakes of a user's labelling sit, in the train split, is where they do the harm, so every split is
checked. The cheap model is wrong on a few percent of images by itself (MNIST: ~4%), so what it flags is a
candidate list; a candidate the trained network also rejects (it gives the given label less than chance, 1/classes)
is `confirmed`, and the confirmed ones come first and are counted as the likely label errors. The network saw the
train split's labels, but with augmentation, dropout, label smoothing and early stopping it rarely learns a flipped
one (20 of 2,000 MNIST training labels flipped: 19 confirmed among 27; a candidate the network merely confuses with
a neighbouring class keeps more than chance and stays unconfirmed).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from components.evaluate.baseline import downscale, sample_per_class
from tfpipe import paths

FOLDS = 5
COMPONENTS = 50  # principal components of the downscaled pixels the out-of-fold SVM works on
MAX_EXAMPLES = 10_000  # an RBF SVM costs O(n^2): a larger dataset is checked on a stratified sample of this size
SHOWN = 16  # in the gallery (the CSV lists every one)
COLUMNS = [
    "file",
    "split",
    "given",
    "suggested",
    "suggested_probability",  # the out-of-fold model's
    "given_probability",
    "confirmed",  # the trained network gives the given label less than chance (1 / classes)
    "network_suggests",
    "network_given_probability",
]


def cross_validated_probabilities(estimator, features, labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """[N, classes] predict_proba of a scikit-learn estimator, each row from a fit on the other folds (FOLDS, fewer
    when the smallest class holds fewer examples); a class absent from `labels` gets 0. The label check of tables
    and texts."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(labels, minlength=num_classes)
    folds = int(min(FOLDS, counts[counts > 0].min()))
    scores = cross_val_predict(
        estimator, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )
    probabilities = np.zeros((len(labels), num_classes))
    probabilities[:, np.unique(labels)] = scores
    return probabilities


def out_of_fold_probabilities(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """[N, classes] probabilities, each row from a model fit on the other folds."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax, softmax
    from sklearn.decomposition import PCA
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import SVC

    folds = min(FOLDS, int(np.bincount(labels, minlength=num_classes)[np.unique(labels)].min()))
    pixels = downscale(images)
    # PCA (unsupervised: no label reaches the folds) to COMPONENTS values: the SVM fits ~6x faster than on the
    # downscaled pixels and is as good or better (mnist_5k: 9.0 s -> 1.6 s, out-of-fold accuracy 0.953 -> 0.963).
    components = min(COMPONENTS, pixels.shape[1], len(pixels) - 1)
    features = PCA(components, random_state=seed).fit_transform(pixels) if components > 0 else pixels
    scores = cross_val_predict(
        SVC(kernel="rbf", decision_function_shape="ovr", random_state=seed),
        features,
        labels,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        method="decision_function",
        n_jobs=2,
    )
    if scores.ndim == 1:  # two classes: one decision score, positive for the second
        scores = np.stack([-scores, scores], axis=1)
    present = np.unique(labels)
    rows = np.arange(len(labels))
    position = np.searchsorted(present, labels)  # each label's column among the present classes

    def negative_log_likelihood(temperature: float) -> float:
        return -log_softmax(scores * temperature, axis=1)[rows, position].mean()

    temperature = minimize_scalar(negative_log_likelihood, bounds=(0.05, 100.0), method="bounded").x
    probabilities = np.zeros((len(labels), num_classes))
    probabilities[:, present] = softmax(scores * temperature, axis=1)
    return probabilities


def find_likely_label_errors(
    images: np.ndarray,
    labels: np.ndarray,
    files: list[str],
    splits: list[str],
    class_names: list[str],
    predict: Callable[[np.ndarray], np.ndarray],
    seed: int = 0,
    total: int | None = None,
    out_of_fold: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """(the candidates, confirmed first and each group most likely first: COLUMNS + "index" into images; what was
    checked: {"checked", "sampled", "candidates", "confirmed", "skipped"}). predict: the trained network's
    probabilities for a batch of images. total: how many images these were sampled from (default: these), for
    the "sampled" flag: the stage passes a stratified sample of MAX_EXAMPLES read from the splits. `images` may be any
    examples' features (a table's feature vectors) with `out_of_fold` their cross-validated model (default: the SVM on
    downscaled pixels, out_of_fold_probabilities)."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(class_names))
    nothing = {"checked": 0, "sampled": False, "candidates": 0, "confirmed": 0}
    if (counts[counts > 0] < FOLDS).any() or (counts > 0).sum() < 2:
        return pd.DataFrame(columns=[*COLUMNS, "index"]), {**nothing, "skipped": f"a class has under {FOLDS} images"}
    chosen = sample_per_class(labels, MAX_EXAMPLES, seed)
    probabilities = (out_of_fold or out_of_fold_probabilities)(images[chosen], labels[chosen], len(class_names), seed)
    ranked = find_label_issues(labels[chosen], probabilities, return_indices_ranked_by="self_confidence")
    indices = chosen[ranked]
    network = predict(images[indices]) if len(indices) else np.zeros((0, len(class_names)))
    rows = []
    for position, index, from_network in zip(ranked, indices, network, strict=True):
        given, suggested = labels[index], int(np.argmax(probabilities[position]))
        rows.append(
            {
                "file": files[index],
                "split": splits[index],
                "given": class_names[given],
                "suggested": class_names[suggested],
                "suggested_probability": round(float(probabilities[position, suggested]), 4),
                "given_probability": round(float(probabilities[position, given]), 4),
                "confirmed": bool(from_network[given] < 1 / len(class_names)),
                "network_suggests": class_names[int(np.argmax(from_network))],
                "network_given_probability": round(float(from_network[given]), 4),
                "index": int(index),
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "index"])
    frame["confirmed"] = frame["confirmed"].astype(bool)  # an empty frame's column is object: a mask must be bool
    frame = pd.concat([frame[frame["confirmed"]], frame[~frame["confirmed"]]], ignore_index=True)
    return frame, {
        "checked": int(len(chosen)),
        "sampled": bool(len(chosen) < (total or len(labels))),
        "candidates": int(len(frame)),
        "confirmed": int(frame["confirmed"].sum()),
        "skipped": "",
    }


def plot_label_issues(images: np.ndarray, issues: pd.DataFrame, shown: int = SHOWN):
    """A gallery of the most likely label errors: each image with its given label, the suggested one and how sure."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # file and class names are drawn as text, never as mathtext
    import matplotlib.pyplot as plt

    top = issues[issues["confirmed"].astype(bool)].head(shown)
    columns = min(4, max(1, len(top)))
    rows = max(1, math.ceil(len(top) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row in zip(axes.flat, top.itertuples(), strict=False):
        image = images[row.index]
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axis.set_title(
            f"labelled {row.given}, likely {row.suggested} ({row.suggested_probability:.2f})\n{row.split}: {row.file}",
            fontsize=7,
        )
    if top.empty:
        axes[0, 0].text(0.5, 0.5, "no likely label errors found", ha="center", va="center")
    figure.suptitle("Likely label errors (every split: out-of-fold SVM + confident learning, confirmed by the network)")
    figure.tight_layout()
    return figure


def describe_label_errors(issues: pd.DataFrame, checked: dict, unit: str = "images") -> str:
    """The stage's summary of the likely label errors: how many, and the first few named (unit: what an example
    is, in words: images, rows, documents)."""
    if checked.get("skipped"):
        return f"likely label errors: not checked ({checked['skipped']})"
    confirmed = issues[issues["confirmed"].astype(bool)]
    return (
        f"likely label errors: {checked['confirmed']} ({checked['candidates']} candidates of {checked['checked']} "
        f"{unit} checked; {paths.EVALUATE / 'label_issues.csv'}, label_issues.png)"
        + "".join(
            f"\n  {row.split}: {row.file} labelled {row.given}, likely {row.suggested}"
            for row in confirmed.head(5).itertuples()
        )
    )
