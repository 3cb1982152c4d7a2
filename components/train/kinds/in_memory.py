"""What the kinds whose splits train holds in memory share (a table's rows, a text's documents): the preprocess
stage's statistics, the float32 copy of a trained model, and the cache setting. Reads artifacts/preprocess."""

from __future__ import annotations

import json
from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from components.train import hardware
from tfpipe import paths
from tfpipe.config import TrainParams

STATISTICS_FILE = paths.PREPROCESS / "statistics.json"


def read_statistics() -> dict:
    if not STATISTICS_FILE.is_file():
        raise FileNotFoundError(f"{STATISTICS_FILE}: not found; run the preprocess stage first (dvc repro preprocess)")
    return json.loads(STATISTICS_FILE.read_text())


def float32_copy(build_model: Callable, trained: keras.Model, params: TrainParams, manifest: dict) -> keras.Model:
    """The same weights in a float32 model (after mixed precision), built by the kind's build_model: what evaluate
    and export take."""
    float32 = hardware.HardwarePlan("float32", False, "default", "CPU")
    copy, _ = build_model(params, float32, tf.distribute.get_strategy(), manifest)
    copy.set_weights(trained.get_weights())
    return copy


def resolve_cache(cache: str, manifest: dict) -> str:
    """The examples are in memory already (numpy arrays): tf.data keeps them there, whatever train.cache says, unless
    it is a file prefix."""
    return cache if cache not in ("auto", "none", "memory") else "memory"
