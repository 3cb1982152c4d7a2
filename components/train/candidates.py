"""The search's candidates trained (train.model / train.augmentation: auto, components/train/search.py decides): each a
short run on the prepared splits, scored on val; the choice cached under .cache/train-search, keyed on the run.
"""

from __future__ import annotations

import functools
import json
import math
import time

import tf_keras as keras

from components.train import hardware
from components.train import search as train_search
from components.train.fit import prepare_data
from components.train.model import build_model
from components.train.resume import resolve_cache
from components.train.schedule import (
    compile_model,
    plan_phases,
)
from tfpipe import paths
from tfpipe.config import TrainParams
from tfpipe.outputs import write_json


def train_candidate(
    params: TrainParams,
    candidate: train_search.Candidate,
    round_number: int,
    *,
    manifest: dict,
    plan: hardware.HardwarePlan,
    strategy,
) -> train_search.Trial:
    """One search candidate's short run (params: Candidate.shortened's), scored on the validation split."""
    keras.utils.set_random_seed(params.seed)
    data = prepare_data(params, manifest, plan, resolve_cache("auto" if params.cache != "none" else "none", manifest))
    model, _ = build_model(params, plan, strategy, len(data.class_names))
    candidate_plan = hardware.settle_jit_compile(plan, model, params.jit_compile, params.deterministic)
    phase = plan_phases(params)[0]
    with strategy.scope():
        compile_model(model, params, data.steps_per_epoch, candidate_plan.jit_compile, phase)
    epochs = phase.end_epoch  # params are the candidate's short run (Candidate.shortened)
    started = time.time()
    history = model.fit(
        data.train(range(epochs)),
        validation_data=data.val,
        epochs=epochs,
        steps_per_epoch=data.steps_per_epoch,
        callbacks=[keras.callbacks.TerminateOnNaN()],
        verbose=0,
    )
    seconds = time.time() - started
    rows = [
        {name: float(values[epoch]) for name, values in history.history.items()} for epoch in range(len(history.epoch))
    ]
    last = rows[-1] if rows else {}
    trial = train_search.Trial(
        candidate,
        round_number,
        val_accuracy=last.get("val_accuracy", math.nan) if math.isfinite(last.get("loss", math.nan)) else math.nan,
        val_loss=last.get("val_loss", math.nan),
        history=rows,
        seconds=round(seconds, 2),
        images_per_second=round(len(rows) * manifest["splits"]["train"]["count"] / max(seconds, 1e-9), 1),
        started_ms=int(started * 1000),
        ended_ms=int(time.time() * 1000),
    )
    print(
        f"search round {round_number}: {candidate.name}: val_accuracy {trial.val_accuracy:.4f} after {len(rows)} "
        f"epoch(s), {seconds:.1f} s ({trial.images_per_second:,.0f} images/s)"
    )
    return trial


def search_candidates(
    params: TrainParams, manifest: dict, plan: hardware.HardwarePlan, strategy, key: str
) -> train_search.SearchResult:
    """train.model / train.augmentation: auto resolved (components/train/search.py). The choice is cached under the
    run key, so a killed run that resumes does not search again."""
    cache = paths.CACHE / "train-search" / f"{key}.json"
    if cache.is_file():
        result = train_search.SearchResult.from_dict(json.loads(cache.read_text()))
        print(f"search: the choice of a killed run with the same inputs: {result.chosen.name}")
        return result
    if manifest["splits"].get("val", {}).get("count", 0) == 0:
        chosen = train_search.first_round(params)[0]
        return train_search.SearchResult(
            chosen, "no validation split (ingest.val_fraction is 0): the first candidate, not compared", [], 0
        )
    print(train_search.describe_budget(params))
    train = functools.partial(train_candidate, manifest=manifest, plan=plan, strategy=strategy)
    result = train_search.search(params, train)
    write_json(cache, result.to_dict())
    print(f"search: {result.chosen.name}, {result.reason}")
    return result
