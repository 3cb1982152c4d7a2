"""A table's features outside TensorFlow: the model's named inputs from a prepared (or parsed) DataFrame, and the
feature vector models/table_preprocessing.py computes, in numpy, for the TFLite models (which take the vector: a
TFLite model holds no string lookup). The export ships the statistics this reads (encoding.json) beside the .tflite
files; predict and the export's checks use this module, and a test holds it equal to the Keras preprocessing model.
Reads a prepared split's Parquet file (read_prepared_split: train, evaluate and export read the splits so); writes
nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from tfpipe.date_parts import ISO_PATTERN, days_from_civil, part_values

ISO_PREFIX = re.compile(ISO_PATTERN)  # what models/table_layers.DateParts reads as a date


def read_prepared_split(
    prepared: Path, manifest: dict, statistics: dict, split: str
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray]:
    """(the split's rows as stored, the model's inputs, the targets: int64 class ids or float64 values) of one split
    of data/prepared."""
    frame = pd.read_parquet(prepared / manifest["splits"][split]["file"])
    target = frame[manifest["target"]]
    if manifest["task"] == "classification":
        index = {name: position for position, name in enumerate(manifest["class_names"])}
        return frame, feed(frame, statistics), target.map(index).to_numpy(dtype=np.int64)
    return frame, feed(frame, statistics), target.to_numpy(dtype=np.float64)


def feed(frame: pd.DataFrame, statistics: dict) -> dict[str, np.ndarray]:
    """{input name: [N, 1]} for the model: numbers float32 (NaN empty), every other type text ("" empty)."""
    inputs = {}
    for item in statistics["inputs"]:
        values = frame[item["column"]]
        if item["type"] == "numeric":
            inputs[item["input"]] = values.to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
        else:
            inputs[item["input"]] = values.fillna("").astype(str).to_numpy(dtype=object).reshape(-1, 1)
    return inputs


def date_fields(text: np.ndarray) -> tuple[np.ndarray, ...]:
    """(valid, year, month, day, weekday, hour) of ISO text, as models/table_layers.DateParts reads it."""
    flat = np.array([str(value).strip() for value in np.asarray(text).reshape(-1)], dtype=object)
    valid = np.array([bool(ISO_PREFIX.fullmatch(value)) for value in flat])
    padded = [value + "T00:00:00" if ok else "1970-01-01T00:00:00" for value, ok in zip(flat, valid, strict=True)]
    year = np.array([int(value[0:4]) for value in padded], np.int64)
    month = np.array([int(value[5:7]) for value in padded], np.int64)
    day = np.array([int(value[8:10]) for value in padded], np.int64)
    hour = np.array([int(value[11:13]) for value in padded], np.int64)
    weekday = (days_from_civil(year, month, day) + 4) % 7
    return valid, year, month, day, weekday, hour


def date_parts(text: np.ndarray, parts: list[str]) -> np.ndarray:
    """float32 [N, len(parts)], NaN for an empty or unparseable date (DateParts' numpy twin)."""
    valid, *fields = date_fields(text)
    as_float = [field.astype(np.float32) for field in fields]
    values = np.stack([part_values(part, *as_float, np.sin, np.cos) for part in parts], axis=1).astype(np.float32)
    values[~valid] = np.nan
    return values


def numeric_block(inputs: dict[str, np.ndarray], statistics: dict) -> np.ndarray:
    """The numbers and date parts, raw, in the statistics' order: float32 [N, K]."""
    blocks = []
    for item in statistics["inputs"]:
        if item["type"] == "numeric":
            blocks.append(inputs[item["input"]].astype(np.float32))
        elif item["type"] == "date" and item.get("parts"):
            blocks.append(date_parts(inputs[item["input"]], item["parts"]))
    rows = len(next(iter(inputs.values()))) if inputs else 0
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((rows, 0), np.float32)


def encode(inputs: dict[str, np.ndarray], statistics: dict) -> np.ndarray:
    """The feature vector float32 [N, statistics["output_size"]], as the preprocessing model computes it."""
    raw = numeric_block(inputs, statistics)
    parts = []
    if raw.shape[1]:
        mean = np.array([entry["mean"] for entry in statistics["numeric"]], np.float32)
        variance = np.array([entry["variance"] for entry in statistics["numeric"]], np.float32)
        # Keras' Normalization divides by max(sqrt(variance), epsilon).
        normalized = (raw - mean) / np.maximum(np.sqrt(variance), np.float32(1e-7))
        parts.append(np.where(np.isnan(normalized), np.float32(0), normalized).astype(np.float32))
        flagged = [index for index, entry in enumerate(statistics["numeric"]) if entry["missing"]]
        if flagged:
            parts.append(np.isnan(raw[:, flagged]).astype(np.float32))
    for entry in statistics["categorical"]:
        index = {value: position + 1 for position, value in enumerate(entry["vocabulary"])}  # 0: out of vocabulary
        codes = np.array([index.get(str(value), 0) for value in inputs[entry["input"]].reshape(-1)], np.int64)
        one_hot = np.zeros((len(codes), len(entry["vocabulary"]) + 1), np.float32)
        one_hot[np.arange(len(codes)), codes] = 1.0
        parts.append(one_hot)
    return np.concatenate(parts, axis=1).astype(np.float32)


def target_statistics(values: np.ndarray) -> dict:
    """A regression target's train statistics: what train.regression_loss and train.target_transform: auto decide
    on, and the standardization the model's head undoes (in the target's units and, when positive, of its log)."""
    values = np.asarray(values, np.float64)
    centred = values - values.mean()
    std = float(values.std()) or 1.0
    statistics = {
        "mean": float(values.mean()),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "skewness": float(np.mean(centred**3) / std**3) if len(values) else 0.0,
        "excess_kurtosis": float(np.mean(centred**4) / std**4 - 3) if len(values) else 0.0,
    }
    if statistics["min"] > 0:
        logs = np.log(values)
        log_std = float(logs.std()) or 1.0
        statistics.update(
            log_mean=float(logs.mean()),
            log_std=log_std,
            log_skewness=float(np.mean((logs - logs.mean()) ** 3) / log_std**3),
        )
    return statistics
