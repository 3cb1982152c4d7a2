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
    source: str = "mnist_5k"  # mnist_5k | tfds:<name> | folder (pipelines/sources.py)
    raw_dir: str = "data/raw"

    @pydantic.field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source in ("mnist_5k", "folder") or (source.startswith("tfds:") and len(source) > len("tfds:")):
            return source
        raise ValueError("expected mnist_5k, folder or tfds:<name> (e.g. tfds:fashion_mnist)")


@dataclass(frozen=True, config=STRICT)
class ExpectationParams:
    image_height: int = Field(28, gt=0)
    image_width: int = Field(28, gt=0)
    channels: Literal[1, 3] = 1
    pixel_min: int = Field(0, ge=0, le=255)
    pixel_max: int = Field(255, ge=0, le=255)
    min_per_class: int = Field(10, ge=1)
    min_class_share: float = Field(0.0, ge=0, le=1)
    max_class_share: float = Field(0.5, gt=0, le=1)
    image_mean_min: float = Field(5.0, ge=0, le=255)
    image_mean_max: float = Field(200.0, ge=0, le=255)
    # Bits that may differ between the 256-bit perceptual hashes of two images in different splits
    # for them to count as near-duplicates; -1 turns the check off (exact duplicates still fail).
    near_duplicate_max_distance: int = Field(8, ge=-1, le=31)

    @pydantic.model_validator(mode="after")
    def _ordered_bounds(self):
        for low, high in (("pixel_min", "pixel_max"), ("image_mean_min", "image_mean_max"),
                          ("min_class_share", "max_class_share")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})")
        return self


@dataclass(frozen=True, config=STRICT)
class IngestParams:
    seed: int = 42
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    num_shards: int = Field(2, ge=1)
    # Decompression-bomb guard: an image with more pixels is an error before it is decoded
    # (at most Pillow's own hard limit, 2 x Image.MAX_IMAGE_PIXELS).
    max_image_pixels: int = Field(25_000_000, ge=1, le=178_956_970)
    samples_per_class: int = Field(8, ge=1, le=32)  # columns of reports/ingest/samples.png
    resize: bool = False  # true: images of another size are centre-cropped and resized to the expected size
    expectations: ExpectationParams = ExpectationParams()

    @pydantic.model_validator(mode="after")
    def _fractions_leave_a_train_split(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be below 1, got {self.val_fraction + self.test_fraction}")
        return self


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
    contrast: float = Field(0.0, ge=0, lt=1)
    crop_padding: int = Field(0, ge=0)  # pixels of zero padding before a random crop back to size
    erasing: float = Field(0.0, ge=0, le=1)  # probability of erasing a random rectangle


@dataclass(frozen=True, config=STRICT)
class BackboneParams:
    """Keras Applications backbones only (models/applications.py); ignored by the other models."""

    weights: str = "imagenet"  # imagenet (the Keras cache, never downloaded) | none | path to a .h5 weights file
    head_epochs: int = Field(3, ge=0)  # phase 1: the new head trains on the frozen backbone
    fine_tune_layers: int = Field(20, ge=0)  # phase 2: the top N backbone layers train too (batch norm stays frozen)
    fine_tune_learning_rate: float = Field(1e-5, gt=0)  # phase 2's rate
    min_image_size: int = Field(32, ge=32)  # smaller images are resized up to this inside the model


@dataclass(frozen=True, config=STRICT)
class TrainParams:
    model: str = "lenet5"
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and rmsprop
    nesterov: bool = False  # sgd
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    clipnorm: float | None = Field(None, gt=0)  # gradient clipping by norm; null disables
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)  # L2 on conv/dense kernels
    batch_norm: bool = False
    augmentation: AugmentationParams = AugmentationParams()
    early_stopping_patience: int = Field(4, ge=1)
    shuffle_buffer: int = Field(5000, ge=1)
    cache: str = "memory"  # memory | none | a file path prefix for splits larger than memory
    log_augmented_images: int = Field(8, ge=0)  # an augmented batch shown in TensorBoard; 0 disables
    histogram_freq: int = Field(0, ge=0)  # weight histograms in TensorBoard every N epochs; 0 disables
    seed: int = 42
    deterministic: bool = True
    # Hardware: "auto" picks mixed precision and XLA on a capable GPU, float32 and no XLA on CPU.
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    steps_per_execution: int = Field(1, ge=1)
    backbone: BackboneParams = BackboneParams()

    @pydantic.field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from models import registry  # imported lazily: it pulls in TensorFlow

        registry.get_builder(name)  # raises ValueError listing the known names
        return name

    @pydantic.model_validator(mode="after")
    def _backbone_schedule_fits(self):
        from models import applications

        if applications.is_backbone(self.model) and self.backbone.weights != "none" and self.backbone.head_epochs > self.epochs:
            raise ValueError(f"backbone.head_epochs ({self.backbone.head_epochs}) is above epochs ({self.epochs}): "
                             "epochs counts both phases")
        return self


@dataclass(frozen=True, config=STRICT)
class EvaluateParams:
    """The promotion gate's thresholds; the champion is compared on the candidate's own test split."""

    top_k: int = Field(3, ge=1)
    min_accuracy: float = Field(0.97, ge=0, le=1)
    max_accuracy_regression: float = Field(0.01, ge=0, le=1)  # vs the champion's test accuracy
    max_class_recall_drop: float = Field(0.1, ge=0, le=1)  # vs the champion's recall of each class


ExportVariant = Literal["float32", "float16", "dynamic_range", "int8", "pruned_int8", "qat_int8", "pqat_int8"]


@dataclass(frozen=True, config=STRICT)
class ExportParams:
    """The exported variants, their fine-tunes, how they are measured, and the int8 promotion gate."""

    model_name: str = "tfpipe_classifier"
    variants: tuple[ExportVariant, ...] = ("float32", "float16", "dynamic_range", "int8", "pruned_int8", "qat_int8", "pqat_int8")
    representative_samples: int = Field(200, ge=1)  # train images that calibrate full-integer quantization
    seed: int = 42
    prune_target_sparsity: float = Field(0.75, ge=0, lt=1)
    prune_epochs: int = Field(4, ge=1)
    prune_end_fraction: float = Field(0.5, gt=0, le=1)  # the sparsity ramp ends here; the rest recovers accuracy
    prune_learning_rate: float = Field(2e-4, gt=0)
    prune_min_weights: int = Field(1000, ge=0)  # smaller kernels (LeNet's first conv: 150) stay dense
    qat_epochs: int = Field(1, ge=1)  # quantization-aware fine-tune, for qat_int8 and pqat_int8
    qat_learning_rate: float = Field(1e-4, gt=0)
    num_threads: int = Field(1, ge=1)  # every variant is measured with the same interpreter settings
    latency_runs: int = Field(300, ge=10)
    throughput_batch_size: int = Field(64, ge=1)
    gate_variant: ExportVariant = "int8"  # the int8 variant that must pass the gate for `champion`
    max_int8_accuracy_drop: float = Field(0.002, ge=0, le=1)  # vs the float Keras model, whole test split
    max_int8_class_drop: float = Field(0.04, ge=0, le=1)  # per-class recall vs the float model

    @pydantic.model_validator(mode="after")
    def _gate_variant_is_exported(self):
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants lists a variant twice: {list(self.variants)}")
        if self.gate_variant not in self.variants:
            raise ValueError(f"gate_variant {self.gate_variant!r} is not in variants {list(self.variants)}")
        if self.gate_variant in ("float32", "float16", "dynamic_range"):
            raise ValueError(f"gate_variant must be a full-integer variant (*int8), got {self.gate_variant!r}")
        return self


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
