"""The params schema: params.yaml as frozen, validated dataclasses, one per section; an unknown or mistyped key is an
error. A reader finds every param, its type, range and default in the section modules this one composes, in the order
params.yaml lists them: `data` here, `ingest` and `preprocess` in tfpipe/config_ingest.py, `train` and `tracking` in
tfpipe/config_train.py, `evaluate` and `export` in tfpipe/config_gate.py (tfpipe/params_file.py reads and edits the
file).
"""

from __future__ import annotations

import re
from typing import Literal

import pydantic
from pydantic.dataclasses import dataclass

from tfpipe.config_gate import EvaluateParams, ExportParams
from tfpipe.config_ingest import (
    ColumnParams,
    ExpectationParams,
    IngestParams,
    PreprocessParams,
    TableParams,
    TextParams,
)
from tfpipe.config_train import AugmentationParams, BackboneParams, SearchParams, TrackingParams, TrainParams
from tfpipe.config_types import PARAMS_FILE, STRICT, ParamsError, check_safe_name

__all__ = [  # the sections, importable from here as before the schema was split
    "PARAMS_FILE",
    "AugmentationParams",
    "BackboneParams",
    "ColumnParams",
    "DataParams",
    "EvaluateParams",
    "ExpectationParams",
    "ExportParams",
    "IngestParams",
    "Params",
    "ParamsError",
    "PreprocessParams",
    "SearchParams",
    "TableParams",
    "TextParams",
    "TrackingParams",
    "TrainParams",
    "check_safe_name",
]

# Sources that materialize writes into data/raw (pipelines/sources.py): the embedded digits, a tfds dataset, a folder
# of the user's images, a table file of the user's, and the tables that ship inside packages on the index.
NAMED_SOURCES = ("mnist_5k", "folder", "file", "autompg", "penguins", "imdb")


@dataclass(frozen=True, config=STRICT)
class DataParams:
    source: str = "mnist_5k"  # see NAMED_SOURCES, or tfds:<name> (pipelines/materialize.py)
    # The dataset's name: its MLflow experiment and, unless export.model_name is set, its registered
    # model (<name>-classifier or <name>-regressor). null: derived from source ("tfds:cifar10" -> "tfds-cifar10").
    name: str | None = None
    # What data/raw holds (tfpipe/kinds.py): auto recognizes it (one table file: table; folders of documents: text;
    # folders of images: image); a table whose documents are in a text column is `text`.
    kind: Literal["auto", "image", "table", "text"] = "auto"
    target: str | None = None  # tables: the column to predict (python -m pipelines.schema proposes the last one)
    # tables: auto decides from the target (classification when it is not numeric or has few distinct values)
    task: Literal["auto", "classification", "regression"] = "auto"

    @pydantic.field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        # tfds names: a builder, optionally a config and a version (cifar10, imagenet2012/subset, mnist:3.0.1).
        if source in NAMED_SOURCES or re.fullmatch(
            r"tfds:[a-z0-9_]{1,80}(/[A-Za-z0-9_.]{1,80})?(:[0-9.]{1,20})?", source
        ):
            return source
        raise ValueError(f"expected {', '.join(NAMED_SOURCES)} or tfds:<name> (e.g. tfds:fashion_mnist)")

    @pydantic.field_validator("name")
    @classmethod
    def _usable_name(cls, name: str | None) -> str | None:
        return check_safe_name(name, "an MLflow experiment, a registered model and a folder")


@dataclass(frozen=True, config=STRICT)
class Params:
    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    tracking: TrackingParams = TrackingParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()


def model_candidates(params: TrainParams) -> list[str]:
    """The models a train run may end with: the one set, or with train.model: auto every search candidate (the
    preprocess stage sizes the input for all of them)."""
    return list(params.search.models) if params.model == "auto" else [params.model]


def dataset_name(params: Params) -> str:
    """data.name, else derived from data.source: the MLflow experiment ("tfds:cifar10" -> "tfds-cifar10")."""
    return params.data.name or params.data.source.replace(":", "-").replace("/", "-")


def registered_model_name(params: Params) -> str:
    """export.model_name, else one registered model per dataset: "<dataset name>-classifier" ("-regressor" for a
    regression task)."""
    suffix = "regressor" if params.data.task == "regression" else "classifier"
    return params.export.model_name or f"{dataset_name(params)}-{suffix}"
