"""A classical baseline for the evaluate stage: an RBF SVM on downscaled pixels, fit on the train split.

A network that cannot beat a support vector machine on raw pixels is not worth shipping; the gate
(evaluate.min_margin_over_baseline) says so with both numbers. Inputs are uint8 image arrays; the
stage reads and writes nothing here.
"""

from __future__ import annotations

import math
import time

import numpy as np

MAX_FEATURES = 1024  # larger images are downscaled (area average) to at most this many values
MAX_TRAIN_EXAMPLES = 5000  # an RBF SVM costs O(n^2): a stratified, seeded sample of a larger train split


def downscale(images: np.ndarray, max_features: int = MAX_FEATURES) -> np.ndarray:
    """uint8 [N,H,W,C] -> float32 [N, F] in 0..1, area-averaged so that F <= max_features (aspect ratio kept)."""
    height, width, channels = images.shape[1:]
    if height * width * channels > max_features:
        import tensorflow as tf

        scale = math.sqrt(max_features / (height * width * channels))
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        images = np.concatenate(
            [
                tf.image.resize(images[start : start + 1024], size, method="area").numpy()
                for start in range(0, len(images), 1024)
            ]
        )
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def sample_per_class(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most `limit` examples, each class keeping its share (all of them when there are fewer)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(members, size=max(1, round(len(members) * limit / len(labels))), replace=False)
        for members in (np.flatnonzero(labels == label) for label in np.unique(labels))
    ]
    return np.sort(np.concatenate(chosen))


def fit_and_score(
    train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray, seed: int = 0
) -> dict:
    """Fits sklearn's SVC (RBF kernel, its default C and gamma) on the train split, scores it on the test split."""
    from sklearn.svm import SVC

    if len(np.unique(train_labels)) < 2:
        raise ValueError("the baseline needs at least two classes in the train split")
    start = time.perf_counter()
    chosen = sample_per_class(train_labels, MAX_TRAIN_EXAMPLES, seed)
    train_features, test_features = downscale(train_images[chosen]), downscale(test_images)
    model = SVC(kernel="rbf", random_state=seed).fit(train_features, train_labels[chosen])
    predictions = model.predict(test_features)
    return {
        "model": "SVC(kernel='rbf') on downscaled pixels",
        "accuracy": float(np.mean(predictions == test_labels)),
        "train_examples": int(len(chosen)),
        "features": int(train_features.shape[1]),
        "seconds": round(time.perf_counter() - start, 2),
        "predictions": predictions,
    }
