"""train.model: auto and train.augmentation: auto: which zoo model and augmentation suit this data, chosen on the
validation split by a short seeded comparison; reads nothing itself (the train stage passes a function that trains
one candidate) and writes nothing (the stage caches the choice and logs each candidate as a child MLflow run).

Two rounds. Each candidate trains train.search.fraction of the final run's epochs (at least one), with the run's
batch size, optimizer and seed and a learning-rate schedule of its own that completes in that time (a truncated long
schedule would favour whatever learns fastest at a high rate, not what ends best), then is scored on the validation
split:
1. each model of train.search.models with the first augmentation (or the one params set), when the model is auto;
2. the winner with every other augmentation of train.search.augmentations, when the augmentation is auto.
The best score on the validation split wins (val_accuracy for a classifier, val_mae lower for a regression: the
kind's objective says which); a tie goes to the lower validation loss, then to the candidate listed first (the
cheaper models and the milder augmentations come first). Every candidate's figures, and the reason for the
choice, go to the stage's metrics and MLflow.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tfpipe.config import AugmentationParams, TrainParams, model_candidates

# The presets train.search.augmentations names. shift: the digits' recipe (mnist_5k's params); shift_flip: the same
# with mirror images, which photos of things allow and digits do not; crop_flip: CIFAR's classic 4 px pad-and-crop
# at 32 px with mirror images.
AUGMENTATIONS = {
    "shift": AugmentationParams(rotation=0.03, zoom=0.1, translation=0.1),
    "shift_flip": AugmentationParams(flip="horizontal", rotation=0.03, zoom=0.1, translation=0.1),
    "crop_flip": AugmentationParams(flip="horizontal", crop_padding=0.125),
}


@dataclass(frozen=True)
class Candidate:
    model: str
    augmentation: str  # a preset name, or "as set" (params' own augmentation)

    @property
    def name(self) -> str:
        return f"{self.model} + {self.augmentation}"

    def apply(self, params: TrainParams) -> TrainParams:
        """params with this candidate's model and augmentation."""
        augmentation = params.augmentation if self.augmentation == "as set" else AUGMENTATIONS[self.augmentation]
        return dataclasses.replace(params, model=self.model, augmentation=augmentation)

    def shortened(self, params: TrainParams) -> TrainParams:
        """The candidate's short run: candidate_epochs(params) epochs on a schedule complete in them."""
        epochs = candidate_epochs(params)
        return dataclasses.replace(
            self.apply(params), epochs=epochs, warmup_epochs=min(params.warmup_epochs, epochs // 4)
        )


@dataclass
class Trial:
    """One candidate's short run: validation figures at its last epoch, and its history for MLflow."""

    candidate: Candidate
    round: int
    val_score: float  # the objective's monitored metric (val_accuracy, val_mae, ...) at the last epoch
    val_loss: float
    history: list[dict] = field(default_factory=list)  # per epoch: accuracy, loss, val_accuracy, val_loss
    seconds: float = 0.0
    images_per_second: float = 0.0
    started_ms: int = 0
    ended_ms: int = 0

    def sort_key(self, order: int, higher_is_better: bool = True) -> tuple:
        if not math.isfinite(self.val_score):
            badness = math.inf
        else:
            badness = -self.val_score if higher_is_better else self.val_score
        loss = self.val_loss if math.isfinite(self.val_loss) else math.inf
        return (round(badness, 6) if math.isfinite(badness) else math.inf, round(loss, 6), order)


@dataclass
class SearchResult:
    chosen: Candidate
    reason: str
    trials: list[Trial]
    epochs: int  # each candidate's short run
    metric: str = "val_accuracy"  # what the trials' val_score is

    def to_dict(self) -> dict:
        return {
            "chosen": {"model": self.chosen.model, "augmentation": self.chosen.augmentation},
            "reason": self.reason,
            "metric": self.metric,
            "epochs_per_candidate": self.epochs,
            "trials": [
                {**dataclasses.asdict(trial), "candidate": dataclasses.asdict(trial.candidate)} for trial in self.trials
            ],
        }

    @classmethod
    def from_dict(cls, values: dict) -> SearchResult:
        trials = [
            Trial(**{**trial, "candidate": Candidate(**trial["candidate"])}) for trial in values.get("trials", [])
        ]
        return cls(
            Candidate(**values["chosen"]),
            values["reason"],
            trials,
            values["epochs_per_candidate"],
            values.get("metric", "val_accuracy"),
        )

    def resolved(self, params: TrainParams) -> TrainParams:
        return self.chosen.apply(params)


def candidate_epochs(params: TrainParams) -> int:
    """Epochs of each candidate's short run: search.fraction of the run's (resolved) epochs, at least one."""
    return max(1, round(params.search.fraction * params.epochs))


def needs_search(params: TrainParams) -> bool:
    return params.model == "auto" or params.augmentation == "auto"


def first_round(params: TrainParams) -> list[Candidate]:
    augmentation = params.search.augmentations[0] if params.augmentation == "auto" else "as set"
    return [Candidate(model, augmentation) for model in model_candidates(params)]


def second_round(params: TrainParams, model: str) -> list[Candidate]:
    if params.augmentation != "auto":
        return []
    return [Candidate(model, name) for name in params.search.augmentations[1:]]


def pick(trials: list[Trial], higher_is_better: bool = True) -> Trial:
    return min(trials, key=lambda trial: trial.sort_key(trials.index(trial), higher_is_better))


def describe(trial: Trial) -> str:
    return f"{trial.candidate.name} {trial.val_score:.4f}"


def search(
    params: TrainParams,
    train_candidate: Callable[[TrainParams, Candidate, int], Trial],
    metric: str = "val_accuracy",
    higher_is_better: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Runs the two rounds (module docstring) with train_candidate(the candidate's short-run params, candidate,
    round), which trains it and returns its Trial, scored on `metric`. params: train's, with epochs resolved. Once
    train.search.budget_minutes is spent, the candidates not yet tried are skipped and named in the reason."""
    if not needs_search(params):
        raise ValueError("nothing to search: train.model and train.augmentation are both set")
    epochs, started, skipped = candidate_epochs(params), clock(), []
    budget = params.search.budget_minutes

    def run(candidates: list[Candidate], round_number: int) -> list[Trial]:
        trials = []
        for candidate in candidates:
            if budget is not None and (clock() - started) >= 60 * budget and (trials or round_number > 1):
                skipped.append(candidate.name)
                continue
            trials.append(train_candidate(candidate.shortened(params), candidate, round_number))
        return trials

    trials = run(first_round(params), 1)
    best = pick(trials, higher_is_better)
    trials += run(second_round(params, best.candidate.model), 2)
    winner = pick(trials, higher_is_better)
    others = ", ".join(describe(trial) for trial in trials if trial is not winner)
    best = "highest" if higher_is_better else "lowest"
    reason = f"{best} {metric} after a {epochs}-epoch run each: {describe(winner)}" + (
        f" (others: {others})" if others else ""
    )
    if skipped:
        reason += f"; skipped, the {budget}-minute budget spent: {', '.join(skipped)}"
    return SearchResult(winner.candidate, reason, trials, epochs, metric)


def describe_budget(params: TrainParams) -> str:
    """The search's stated budget in epochs, beside the run it precedes."""
    runs = len(first_round(params)) + max(0, len(params.search.augmentations) - 1) * (params.augmentation == "auto")
    each = candidate_epochs(params)
    return (
        f"search: {runs} candidate(s) x {each} epoch(s) = {runs * each} epoch(s) "
        f"({runs * each / params.epochs:.0%} of the {params.epochs}-epoch run that follows; train.search.fraction "
        f"{params.search.fraction})"
    )
