"""Whether a candidate and the champion differ by more than noise on the same test split: paired tests on each
example's outcome, McNemar's exact test for a classifier (right or wrong), Wilcoxon's signed-rank test for a regression
(the absolute errors). The gate decides on the metric itself (at least as good); these say whether the difference it
saw could be chance, in blessing.json, evaluation.json and the model card. Reads and writes nothing.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

NOISE_LEVEL = 0.05  # p at or above it: the difference is within noise
OUTCOMES = "outcomes"  # the metrics' per-example key: right or wrong (classification), absolute error (regression)


def mcnemar(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> dict:
    """McNemar's exact test on the examples where exactly one of the two is right (a binomial test of those
    discordant pairs at one half): {"test", "p_value", "within_noise", "candidate_only", "champion_only",
    "sentence"}."""
    candidate_correct, champion_correct = np.asarray(candidate_correct, bool), np.asarray(champion_correct, bool)
    candidate_only = int(np.sum(candidate_correct & ~champion_correct))
    champion_only = int(np.sum(~candidate_correct & champion_correct))
    discordant = candidate_only + champion_only
    p_value = float(stats.binomtest(candidate_only, discordant, 0.5).pvalue) if discordant else 1.0
    within = p_value >= NOISE_LEVEL
    return {
        "test": "McNemar's exact test",
        "p_value": p_value,
        "within_noise": within,
        "candidate_only": candidate_only,
        "champion_only": champion_only,
        "sentence": f"{'within noise' if within else 'not within noise'} (McNemar's exact test, p = {p_value:.3g}: "
        f"of {len(candidate_correct)} test examples, {candidate_only} right for the candidate only, "
        f"{champion_only} for the champion only)",
    }


def wilcoxon(candidate_errors: np.ndarray, champion_errors: np.ndarray) -> dict:
    """Wilcoxon's signed-rank test on the paired absolute errors (ties dropped): {"test", "p_value", "within_noise",
    "candidate_better", "champion_better", "sentence"}."""
    difference = np.asarray(candidate_errors, np.float64) - np.asarray(champion_errors, np.float64)
    differing = difference[difference != 0]
    p_value = float(stats.wilcoxon(differing).pvalue) if len(differing) else 1.0
    p_value = 1.0 if np.isnan(p_value) else p_value
    within = p_value >= NOISE_LEVEL
    better, worse = int(np.sum(differing < 0)), int(np.sum(differing > 0))
    return {
        "test": "Wilcoxon signed-rank test",
        "p_value": p_value,
        "within_noise": within,
        "candidate_better": better,
        "champion_better": worse,
        "sentence": f"{'within noise' if within else 'not within noise'} (Wilcoxon signed-rank test on the absolute "
        f"errors, p = {p_value:.3g}: of {len(difference)} test rows, {better} closer for the candidate, {worse} for "
        "the champion)",
    }


def without_outcomes(metrics: dict) -> dict:
    """The metrics without the per-example outcomes (what JSON files and MLflow get)."""
    return {key: value for key, value in metrics.items() if key != OUTCOMES}
