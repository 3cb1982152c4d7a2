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
    kind,
) -> train_search.Trial:
    """One search candidate's short run (params: Candidate.shortened's), scored on the validation split by the
    kind's objective (`kind`: its module in components/train/kinds/)."""
    keras.utils.set_random_seed(params.seed)
    data = kind.prepare_data(
        params, manifest, plan, kind.resolve_cache("auto" if params.cache != "none" else "none", manifest)
    )
    model, _ = kind.build_model(params, plan, strategy, manifest)
    candidate_plan = hardware.settle_jit_compile(plan, model, params.jit_compile, params.deterministic)
    phase = plan_phases(params)[0]
    monitor = data.objective.monitor
    with strategy.scope():
        compile_model(model, params, data.steps_per_epoch, candidate_plan.jit_compile, phase, data.objective)
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
        val_score=last.get(monitor, math.nan) if math.isfinite(last.get("loss", math.nan)) else math.nan,
        val_loss=last.get("val_loss", math.nan),
        history=rows,
        seconds=round(seconds, 2),
        images_per_second=round(len(rows) * manifest["splits"]["train"]["count"] / max(seconds, 1e-9), 1),
        started_ms=int(started * 1000),
        ended_ms=int(time.time() * 1000),
    )
    print(
        f"search round {round_number}: {candidate.name}: {monitor} {trial.val_score:.4f} after {len(rows)} "
        f"epoch(s), {seconds:.1f} s ({trial.images_per_second:,.0f} examples/s)"
    )
    return trial


def search_candidates(
    params: TrainParams, manifest: dict, plan: hardware.HardwarePlan, strategy, key: str, kind
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
    train = functools.partial(train_candidate, manifest=manifest, plan=plan, strategy=strategy, kind=kind)
    objective = kind.objective(params, manifest)
    result = train_search.search(params, train, objective.monitor, objective.higher_is_better)
    write_json(cache, result.to_dict())
    print(f"search: {result.chosen.name}, {result.reason}")
    return result
