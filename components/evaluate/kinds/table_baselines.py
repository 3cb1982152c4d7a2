"""A table's classical models, fit on the train split's feature vectors (the same columns the network reads, encoded
the same way: tfpipe/table_encoding.py): the linear baseline the gate compares with (logistic regression, or ridge
with its penalty chosen by cross-validation) and gradient boosting (scikit-learn's HistGradientBoosting), shown beside
it as the strong reference; and the out-of-fold probabilities the likely-label-error check reads. Reads the arrays it
is given, writes nothing.
"""

from __future__ import annotations

import time

import numpy as np

from components.evaluate.label_issues import cross_validated_probabilities

MAX_TRAIN_ROWS = 200_000  # a larger train split is sampled (seeded) for the classical models
RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def sample_rows(count: int, limit: int, seed: int) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def fit_models(task: str, seed: int) -> dict:
    """{name: (description, estimator)}: the gate's linear baseline first, then the reference."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV

    if task == "classification":
        return {
            "linear": ("LogisticRegression on the encoded columns", LogisticRegression(max_iter=2000)),
            "gradient_boosting": (
                "HistGradientBoostingClassifier on the encoded columns",
                HistGradientBoostingClassifier(random_state=seed),
            ),
        }
    return {
        "linear": ("RidgeCV (alpha by cross-validation) on the encoded columns", RidgeCV(alphas=RIDGE_ALPHAS)),
        "gradient_boosting": (
            "HistGradientBoostingRegressor on the encoded columns",
            HistGradientBoostingRegressor(random_state=seed),
        ),
    }


def score_models(
    task: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 0
) -> list[dict]:
    """Each classical model fit on (a sample of) the train split and scored on the test split: {"name", "model",
    "accuracy" or "mae" (and "rmse"), "train_examples", "features", "seconds", "predictions"}."""
    features, targets = train
    chosen = sample_rows(len(targets), MAX_TRAIN_ROWS, seed)
    results = []
    for name, (description, estimator) in fit_models(task, seed).items():
        start = time.perf_counter()
        estimator.fit(features[chosen], targets[chosen])
        predictions = estimator.predict(test[0])
        result = {
            "name": name,
            "model": description,
            "train_examples": int(len(chosen)),
            "features": int(features.shape[1]),
            "predictions": predictions,
        }
        if task == "classification":
            result["accuracy"] = float(np.mean(predictions == test[1]))
        else:
            errors = predictions - test[1]
            result.update(mae=float(np.mean(np.abs(errors))), rmse=float(np.sqrt(np.mean(errors**2))))
        result["seconds"] = round(time.perf_counter() - start, 2)
        results.append(result)
    return results


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """[N, classes] probabilities of a logistic regression, each row from a model fit on the other folds."""
    from sklearn.linear_model import LogisticRegression

    return cross_validated_probabilities(LogisticRegression(max_iter=2000), features, labels, num_classes, seed)
