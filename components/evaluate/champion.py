"""A registered model scored on the workspace's test split, as the evaluate stage scores the champion (the candidate's
metrics and the champion's, from the same split, are what the gate compares): `python -m pipelines.store promote`
scores the exported version and the champion now with it. One scorer for each data kind, in a table. Reads
data/prepared (and a table's statistics in artifacts/train), writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from components.evaluate.gate import predict_with_champion
from components.evaluate.metrics import compute_metrics, load_test_split
from components.evaluate.regression import regression_metrics
from tfpipe import paths
from tfpipe.config import Params
from tfpipe.kinds import kind_of_prepared


def image_scorer(params: Params, manifest: dict) -> Callable[[str], dict]:
    images, labels, _ = load_test_split(paths.PREPARED)
    class_names, top_k = manifest["class_names"], params.evaluate.top_k
    return lambda uri: compute_metrics(predict_with_champion(uri, images, class_names), labels, class_names, top_k)


def table_scorer(params: Params, manifest: dict) -> Callable[[str], dict]:
    from components.evaluate.kinds.table import champion_outputs, read_split

    statistics = json.loads((paths.TRAIN / "model.json").read_text())["table"]
    _, inputs, targets = read_split(manifest, statistics, "test")
    if manifest["task"] == "regression":
        return lambda uri: regression_metrics(champion_outputs(uri, inputs, manifest), targets)
    class_names, top_k = manifest["class_names"], params.evaluate.top_k
    return lambda uri: compute_metrics(champion_outputs(uri, inputs, manifest), targets, class_names, top_k)


SCORERS = {"image": image_scorer, "table": table_scorer}


def test_split_scorer(params: Params, manifest: dict) -> Callable[[str], dict]:
    """A model URI (models:/<name>/<version>) -> its metrics on the test split of data/prepared, per-example outcomes
    included; components.evaluate.gate.RegistryError when it cannot be loaded or serves another dataset."""
    return SCORERS[kind_of_prepared(manifest)](params, manifest)
