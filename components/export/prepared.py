"""What the export stage works with for one data kind (components/export/kinds/ fills it: Prepared): the Keras model
the TFLite variants are made of and the examples it takes, the test split in that form, the files that ship beside the
.tflite files, the serving module, and how the SavedModel is checked and registered; and what the stage makes of
them (Variants, Registration), which the summary, the report and the card read. Reads and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.export.examples import Examples


@dataclass
class Prepared:
    task: str  # classification | regression
    deployable: object  # the Keras model the variants are converted from (an image model; a table's vector model)
    classifier: str  # the registry model's layer inside it (what the fine-tunes prune and quantize)
    train: Examples  # the deployable's inputs on the train split, with targets: fine-tunes and int8 calibration
    test: tuple[np.ndarray, np.ndarray]  # the deployable's inputs on the test split, and the targets
    files: dict[str, bytes]  # shipped beside the .tflite files (labels.txt, decoding.json or encoding.json)
    module: object  # the tf.Module saved as the SavedModel, with its `serve` signature
    check_parity: Callable[[Path], float]  # the SavedModel on disk against the trained model: the largest difference
    register: Callable[[Path, str, dict], int]  # (SavedModel dir, registered model name, tags) -> version
    check_pair: Callable[[dict[str, bytes]], dict] | None = None  # TFLite + files beside vs the SavedModel
    loss: object = None  # what the fine-tunes minimize (None: a classifier's cross-entropy)
    val: Examples | None = None  # the deployable's inputs on the validation split: each fine-tune keeps its best epoch
    card_inputs: tuple[str, ...] = ()  # the model card's lines on what the model takes and returns
    unit: str = "images"  # what one example is, in words (images, rows)


@dataclass
class Variants:
    """The TFLite variants, built (or reused) and measured: what the report, the metrics and MLflow show."""

    files: dict[str, bytes]  # file name in the export -> content (.tflite files and labels.txt)
    notes: dict[str, str]
    reused: list[str]
    metrics: dict[str, dict]
    gate: dict
    slower: dict[str, dict]
    settings: dict
    cpu_description: dict
    pair: dict  # a table's TFLite float32 model with encoding.json against the SavedModel ({} for images)
    not_for_shipping: dict[str, str] = field(default_factory=dict)  # variant -> why (its file is not in `files`)


@dataclass(frozen=True)
class Registration:
    """The version registered and whether it becomes the champion (why_not: the reasons it does not)."""

    model_name: str
    version: int
    promoted: bool
    why_not: list[str]
