"""The table kind's preprocess: reads data/prepared/train.parquet, writes artifacts/preprocess/statistics.json.

From the train split only: each numeric column's mean and variance (empty cells left out) and whether it had empty
cells (then it gets a missing-value indicator), each date column's parts that vary (a date that is always January 1st
keeps only its year), each categorical column's vocabulary (most frequent first; an empty cell is a value of its own
when train has one), and a regression target's statistics. models/table_preprocessing.py builds the preprocessing
model from them; the statistics are JSON, not a saved model, so the same analysis gives the same bytes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.table_preprocessing import build_table_preprocessor
from tfpipe import paths
from tfpipe.config import Params
from tfpipe.date_parts import DATE_PARTS
from tfpipe.outputs import atomic_directory, write_json
from tfpipe.table_encoding import date_fields, date_parts, target_statistics


def moments(values: np.ndarray) -> tuple[float, float]:
    """(mean, variance) of the non-empty values; (0, 1) when there are none (the column is then all indicator)."""
    present = values[~np.isnan(values)]
    if not len(present):
        return 0.0, 1.0
    return float(present.mean()), float(present.var())


# The field of the date each part follows: a part is kept when its field varies on the train split (dates that are
# all January 1st keep their year alone: their weekday would only encode the year again).
PART_FIELDS = {"year": 1, "month_sin": 2, "month_cos": 2, "day": 3, "weekday_sin": 3, "weekday_cos": 3}
PART_FIELDS.update(hour_sin=5, hour_cos=5)


def varying_parts(text: np.ndarray) -> list[str]:
    valid, *fields = date_fields(text)
    varies = {index: len(np.unique(fields[index - 1][valid])) > 1 for index in set(PART_FIELDS.values())}
    return [part for part in DATE_PARTS if varies[PART_FIELDS[part]]]


def analyze(train: pd.DataFrame, manifest: dict) -> dict:
    """The statistics (module docstring) of the train split, with the feature vector's layout."""
    inputs, numeric, categorical, dropped = [], [], [], []
    for feature in manifest["features"]:
        column, name, kind = feature["column"], feature["input"], feature["type"]
        values = train[column]
        item = {"column": column, "input": name, "type": kind}
        if kind == "numeric":
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            mean, variance = moments(numbers)
            numeric.append(
                {
                    "input": name,
                    "part": None,
                    "mean": mean,
                    "variance": variance,
                    "missing": bool(np.isnan(numbers).any()),
                }
            )
        elif kind == "date":
            text = values.fillna("").astype(str).to_numpy(dtype=object)
            parts = date_parts(text, list(DATE_PARTS))
            kept = varying_parts(text)
            if not kept:
                dropped.append(f"{column}: the same date in every train row")
                continue
            item["parts"] = kept
            missing = bool(np.isnan(parts[:, 0]).any())
            for part in kept:
                mean, variance = moments(parts[:, DATE_PARTS.index(part)].astype(np.float64))
                numeric.append({"input": name, "part": part, "mean": mean, "variance": variance, "missing": missing})
        else:
            counts = values.fillna("").astype(str).value_counts()
            ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            categorical.append({"input": name, "vocabulary": [value for value, _ in ordered]})
        inputs.append(item)
    indicators = sum(entry["missing"] for entry in numeric)
    start, slices = len(numeric) + indicators, []
    for entry in categorical:
        size = len(entry["vocabulary"]) + 1  # index 0: a value train never saw
        slices.append([start, size])
        start += size
    statistics = {
        "kind": "table",
        "task": manifest["task"],
        "target": manifest["target"],
        "class_names": manifest["class_names"],
        "inputs": inputs,
        "numeric": numeric,
        "categorical": categorical,
        "layout": {"numeric": len(numeric), "indicators": indicators, "slices": slices},
        "output_size": start,
        "dropped": dropped,
        "num_rows": int(len(train)),
    }
    if manifest["task"] == "regression":
        statistics["target_statistics"] = target_statistics(train[manifest["target"]].to_numpy(dtype=np.float64))
    return statistics


def preprocess(params: Params, manifest: dict) -> None:
    train = pd.read_parquet(paths.PREPARED / manifest["splits"]["train"]["file"])
    if not len(train):
        raise SystemExit("preprocess failed: the train split is empty: nothing to compute statistics from")
    statistics = analyze(train, manifest)
    preprocessor = build_table_preprocessor(statistics)  # built once here: a statistics file it cannot build fails now
    if int(preprocessor.output_shape[-1]) != statistics["output_size"]:
        raise RuntimeError(
            f"the preprocessing model gives {preprocessor.output_shape}, not {statistics['output_size']}"
        )
    with atomic_directory(paths.PREPROCESS) as staging:
        write_json(staging / "statistics.json", statistics)
    layout = statistics["layout"]
    print(
        f"{paths.PREPROCESS}: {len(statistics['inputs'])} input columns -> a {statistics['output_size']}-value "
        f"feature vector ({layout['numeric']} numbers and date parts, {layout['indicators']} missing-value "
        f"indicators, {len(layout['slices'])} categorical one-hot blocks) from {statistics['num_rows']} train rows"
        + "".join(f"; dropped {reason}" for reason in statistics["dropped"])
    )
