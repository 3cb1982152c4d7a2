"""Reads params.yaml into frozen, validated dataclasses; an unknown or mistyped key is an error."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

PARAMS_FILE = Path("params.yaml")

# extra="forbid" turns a typo such as `learning_rat` into an error instead of a silent default.
STRICT = ConfigDict(extra="forbid")


class ParamsError(ValueError):
    """Raised when params.yaml is missing, unreadable or does not match the schema."""


@dataclass(frozen=True, config=STRICT)
class DataParams:
    source: str = "mnist_5k"
    raw_dir: str = "data/raw"


@dataclass(frozen=True, config=STRICT)
class ExpectationParams:
    image_height: int = Field(28, gt=0)
    image_width: int = Field(28, gt=0)
    channels: Literal[1, 3] = 1
    pixel_min: int = Field(0, ge=0, le=255)
    pixel_max: int = Field(255, ge=0, le=255)
    min_per_class: int = Field(10, ge=1)
    max_class_share: float = Field(0.5, gt=0, le=1)
    image_mean_min: float = Field(5.0, ge=0, le=255)
    image_mean_max: float = Field(200.0, ge=0, le=255)


@dataclass(frozen=True, config=STRICT)
class IngestParams:
    seed: int = 42
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    num_shards: int = Field(2, ge=1)
    expectations: ExpectationParams = ExpectationParams()


@dataclass(frozen=True, config=STRICT)
class PreprocessParams:
    image_height: int = Field(28, gt=0)
    image_width: int = Field(28, gt=0)


@dataclass(frozen=True, config=STRICT)
class AugmentationParams:
    """Random transforms applied to the train split only; 0 disables one."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(0.0, ge=0, le=0.5)  # fraction of a full turn
    zoom: float = Field(0.0, ge=0, lt=1)
    translation: float = Field(0.0, ge=0, lt=1)  # fraction of height/width


@dataclass(frozen=True, config=STRICT)
class TrainParams:
    model: str = "lenet5"
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)  # L2 on conv/dense kernels
    batch_norm: bool = False
    augmentation: AugmentationParams = AugmentationParams()
    early_stopping_patience: int = Field(4, ge=1)
    shuffle_buffer: int = Field(5000, ge=1)
    seed: int = 42
    deterministic: bool = True

    @pydantic.field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from models import registry  # imported lazily: it pulls in TensorFlow

        registry.get_builder(name)  # raises ValueError listing the known names
        return name


@dataclass(frozen=True, config=STRICT)
class EvaluateParams:
    top_k: int = Field(3, ge=1)
    min_accuracy: float = Field(0.97, ge=0, le=1)


@dataclass(frozen=True, config=STRICT)
class ExportParams:
    model_name: str = "tfpipe_classifier"
    prune_target_sparsity: float = Field(0.75, ge=0, lt=1)
    prune_epochs: int = Field(2, ge=1)
    prune_learning_rate: float = Field(5e-4, gt=0)
    representative_samples: int = Field(200, ge=1)
    seed: int = 42


@dataclass(frozen=True, config=STRICT)
class Params:
    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()


def _describe(error: pydantic.ValidationError, path: Path) -> str:
    lines = [f"{path}: {error.error_count()} invalid parameter(s)"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"  {key}: unknown key (check the spelling; see the schema in pipelines/config.py)")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: dict, path: Path = PARAMS_FILE) -> Params:
    """Validates a params mapping; raises ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return pydantic.TypeAdapter(Params).validate_python(raw)
    except pydantic.ValidationError as error:
        raise ParamsError(_describe(error, path)) from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Reads and validates params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    try:
        with path.open() as stream:
            raw = yaml.safe_load(stream) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, path)
