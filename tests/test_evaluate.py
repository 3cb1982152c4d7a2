"""Evaluation metrics and the promotion gate."""
import numpy as np
import pytest

from components import evaluate
from pipelines.config import EvaluateParams


def test_metrics_on_known_predictions():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array([
        [0.9, 0.05, 0.05], [0.6, 0.3, 0.1],   # both right
        [0.2, 0.7, 0.1], [0.5, 0.4, 0.1],     # one wrong (1 -> 0), but right in top-2
        [0.1, 0.1, 0.8], [0.1, 0.1, 0.8],
    ])
    metrics = evaluate.compute_metrics(probabilities, labels, ["a", "b", "c"], top_k=2)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["top_2_accuracy"] == 1.0
    assert metrics["per_class"]["b"]["recall"] == 0.5
    assert metrics["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"]["f1"] == 1.0
    assert metrics["num_examples"] == 6


def test_calibration_error_is_zero_for_calibrated_and_large_for_overconfident():
    labels = np.array([0, 1] * 50)
    confident_and_right = np.eye(2)[labels]
    assert evaluate.expected_calibration_error(confident_and_right, labels) == pytest.approx(0.0)
    confident_and_wrong = np.eye(2)[1 - labels]
    assert evaluate.expected_calibration_error(confident_and_wrong, labels) == pytest.approx(1.0)


def test_gate_blesses_a_good_model_and_refuses_a_weak_one_naming_why():
    params = EvaluateParams(min_accuracy=0.9)
    assert evaluate.decide_blessing({"accuracy": 0.95}, params)["blessed"] is True
    refused = evaluate.decide_blessing({"accuracy": 0.5}, params)
    assert refused["blessed"] is False
    assert "0.5000 is below evaluate.min_accuracy 0.9" in refused["reasons"][0]


def test_empty_test_split_is_an_error():
    with pytest.raises(ValueError, match="test split is empty"):
        evaluate.compute_metrics(np.zeros((0, 3)), np.zeros((0,), int), ["a", "b", "c"], top_k=1)
