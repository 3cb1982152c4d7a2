"""The params schema: params.yaml as frozen, validated dataclasses, one per section; an unknown or mistyped key is an
error. Kept in one place on purpose: a reader finds every param, its type, range and default here, in the order
params.yaml lists them (tfpipe/params_file.py reads and edits the file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import pydantic
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from tfpipe.variants import VARIANTS

PARAMS_FILE = Path("params.yaml")

# extra="forbid" turns a typo such as `learning_rat` into an error instead of a silent default;
# parse_params validates in strict mode, so "0.5" is not a number and "yes" not a boolean.
STRICT = ConfigDict(extra="forbid")
Positive = Annotated[int, Field(ge=1)]
# Every integer has a range: a typo such as `epochs: 1e23` or `seed: -1` is an error naming its key, not a
# traceback deep inside TensorFlow. Seeds are what numpy and TensorFlow both take.
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Epochs = Annotated[int, Field(ge=1, le=10_000)]
Side = Annotated[int, Field(ge=1, le=8192)]
# A name that becomes a path and an MLflow name: letters, digits, '_', '.', '-', not starting with a dot.
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
Auto = Literal["auto"]  # resolved from the data when the stage runs; the resolved value is logged to MLflow


class ParamsError(ValueError):
    """Raised when params.yaml is missing, unreadable or does not match the schema."""


def check_safe_name(name: str | None, what: str) -> str | None:
    """A name that becomes a path (and an MLflow name) matches SAFE_NAME: no separator, no leading dot, no `..`
    to climb out of the project, at most 100 characters."""
    if name is not None and not re.fullmatch(SAFE_NAME, name):
        raise ValueError(
            f"expected 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit (it names {what}); "
            "a path elsewhere is not a name"
        )
    return name


@dataclass(frozen=True, config=STRICT)
class DataParams:
    source: str = "mnist_5k"  # mnist_5k | tfds:<name> | folder (pipelines/materialize.py)
    # The dataset's name: its MLflow experiment and, unless export.model_name is set, its registered
    # model (<name>-classifier). null: derived from source ("tfds:cifar10" -> "tfds-cifar10").
    name: str | None = None

    @pydantic.field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        # tfds names: a builder, optionally a config and a version (cifar10, imagenet2012/subset, mnist:3.0.1).
        if source in ("mnist_5k", "folder") or re.fullmatch(
            r"tfds:[a-z0-9_]{1,80}(/[A-Za-z0-9_.]{1,80})?(:[0-9.]{1,20})?", source
        ):
            return source
        raise ValueError("expected mnist_5k, folder or tfds:<name> (e.g. tfds:fashion_mnist)")

    @pydantic.field_validator("name")
    @classmethod
    def _usable_name(cls, name: str | None) -> str | None:
        return check_safe_name(name, "an MLflow experiment, a registered model and a folder")


@dataclass(frozen=True, config=STRICT)
class ExpectationParams:
    """What ingest checks; the defaults are mnist_5k's, as `python -m pipelines.schema` inferred them (params.yaml)."""

    image_height: int = Field(28, ge=1, le=8192)
    image_width: int = Field(28, ge=1, le=8192)
    channels: Literal[1, 3] = 1
    pixel_min: int = Field(0, ge=0, le=255)
    pixel_max: int = Field(255, ge=0, le=255)
    # null: any number (at least 2); a class that disappears fails when set
    num_classes: int | None = Field(10, ge=2, le=100_000)
    min_per_class: int = Field(250, ge=1, le=10_000_000)
    min_class_share: float = Field(0.05, ge=0, le=1)
    max_class_share: float = Field(0.15, gt=0, le=1)
    image_mean_min: float = Field(3.78, ge=0, le=255)
    image_mean_max: float = Field(92.7, ge=0, le=255)
    # Bits that may differ between the 256-bit perceptual hashes of two images for them to count as near
    # duplicates: grouped into one split, and a leak when the user's own train/ and test/ folders part them.
    # -1 turns near duplicates off (identical images are still grouped).
    near_duplicate_max_distance: int = Field(8, ge=-1, le=31)

    @pydantic.model_validator(mode="after")
    def _ordered_bounds(self):
        for low, high in (
            ("pixel_min", "pixel_max"),
            ("image_mean_min", "image_mean_max"),
            ("min_class_share", "max_class_share"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})")
        return self


@dataclass(frozen=True, config=STRICT)
class IngestParams:
    seed: Seed = 42
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    num_shards: int = Field(2, ge=1, le=1024)
    # Decompression-bomb guard: an image with more pixels is an error before it is decoded
    # (at most Pillow's own hard limit, 2 x Image.MAX_IMAGE_PIXELS).
    max_image_pixels: int = Field(25_000_000, ge=1, le=178_956_970)
    samples_per_class: int = Field(8, ge=1, le=32)  # columns of reports/ingest/samples.png
    resize: bool = False  # true: images of another size are centre-cropped and resized to the expected size
    alpha_background: int = Field(255, ge=0, le=255)  # grey level transparent pixels are composited on (255 white)
    expectations: ExpectationParams = ExpectationParams()

    @pydantic.model_validator(mode="after")
    def _fractions_leave_a_train_split(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1, got {self.val_fraction + self.test_fraction}"
            )
        return self


@dataclass(frozen=True, config=STRICT)
class PreprocessParams:
    """The model's input size. auto: the data's size, scaled up (aspect kept) to the smallest side the model was
    designed for (models/registry.py: lenet5 28, vgg13 and resnet18 32, the backbones 32, mlp any)."""

    image_height: Side | Auto = "auto"
    image_width: Side | Auto = "auto"


@dataclass(frozen=True, config=STRICT)
class AugmentationParams:
    """Random transforms applied to the train split only; 0 disables one."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(0.0, ge=0, le=0.5)  # fraction of a full turn
    zoom: float = Field(0.0, ge=0, lt=1)
    translation: float = Field(0.0, ge=0, lt=1)  # fraction of height/width
    contrast: float = Field(0.0, ge=0, lt=1)
    crop_padding: float = Field(
        0.0, ge=0, le=0.5
    )  # fraction of height/width padded on each side before a random crop back to size
    erasing: float = Field(0.0, ge=0, le=1)  # probability of erasing a random rectangle


# The augmentation settings train.augmentation: auto chooses among (components/train/search.py holds each one's
# transforms): shift (small rotation, zoom and translation: the digits' recipe), the same plus horizontal flips,
# and CIFAR's random crop after 4 px of padding plus horizontal flips.
AugmentationPreset = Literal["shift", "shift_flip", "crop_flip"]


@dataclass(frozen=True, config=STRICT)
class SearchParams:
    """train.model: auto and train.augmentation: auto: a short seeded comparison on the validation split. Each
    candidate trains `fraction` of the final run's epochs (at least one) on a learning-rate schedule of its own,
    complete in that time; the winner then trains from the start."""

    models: tuple[str, ...] = ("lenet5_s2d", "resnet_small")  # registered models (models/registry.py)
    augmentations: tuple[AugmentationPreset, ...] = ("shift", "shift_flip", "crop_flip")
    fraction: float = Field(0.1, gt=0, le=1)

    @pydantic.model_validator(mode="after")
    def _not_empty(self):
        for name in ("models", "augmentations"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must list at least one candidate, each once; got {list(values)}")
        return self


@dataclass(frozen=True, config=STRICT)
class BackboneParams:
    """Keras Applications backbones only (models/applications.py); ignored by the other models."""

    weights: str = "imagenet"  # imagenet (the Keras cache, never downloaded) | none | path to a .h5 weights file
    head_epochs: int = Field(3, ge=0, le=10_000)  # phase 1: the new head trains on the frozen backbone
    fine_tune_layers: int = Field(
        20, ge=0, le=10_000
    )  # phase 2: the top N backbone layers train too (batch norm stays frozen)
    fine_tune_learning_rate: float = Field(1e-5, gt=0)  # phase 2's rate
    min_image_size: int = Field(32, ge=32, le=1024)  # smaller images are resized up to this inside the model


@dataclass(frozen=True, config=STRICT)
class TrainParams:
    model: str = "lenet5_s2d"  # a registered model, or auto: the search picks one of search.models
    # Options of the model's builder beyond the common ones (resnet_small: width, depth); checked against its
    # signature when the stage starts.
    model_options: dict[str, int | float | bool | str] = Field(default_factory=dict)
    epochs: Epochs | Auto = "auto"  # auto: resolve_train_schedule (about 2,500 optimizer steps, 20..300 epochs)
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | Auto = (
        "auto"  # auto: the power of two nearest sqrt(train images), 16..128
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(2e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and rmsprop
    nesterov: bool = False  # sgd
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    clipnorm: float | None = Field(None, gt=0)  # gradient clipping by norm; null disables
    lr_schedule: Literal["constant", "cosine", "exponential"] = "cosine"
    warmup_epochs: int = Field(1, ge=0, le=10_000)
    dropout_rate: float = Field(0.25, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)  # L2 on conv/dense kernels
    batch_norm: bool = True
    augmentation: AugmentationParams | Auto = AugmentationParams(
        rotation=0.03, zoom=0.1, translation=0.1
    )  # auto: the search picks a preset
    search: SearchParams = SearchParams()
    early_stopping_patience: Epochs | Auto = "auto"  # auto: 15% of the epochs, at least 6
    shuffle_buffer: int = Field(5000, ge=1, le=10_000_000)
    cache: str = "auto"  # auto (memory when the splits fit a budget, else none) | memory | none | a file path prefix
    seed: Seed = 42
    deterministic: bool = True
    # Hardware: "auto" picks mixed precision and XLA on a capable GPU, float32 and no XLA on CPU.
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    steps_per_execution: int = Field(1, ge=1, le=10_000)
    backbone: BackboneParams = BackboneParams()


@dataclass(frozen=True, config=STRICT)
class TrackingParams:
    """Logging only: train reads it, but no stage lists it in dvc.yaml, so changing it retrains nothing."""

    log_augmented_images: int = Field(8, ge=0, le=256)  # an augmented batch shown in TensorBoard; 0 disables
    histogram_freq: int = Field(0, ge=0, le=10_000)  # weight histograms in TensorBoard every N epochs; 0 disables


@dataclass(frozen=True, config=STRICT)
class EvaluateParams:
    """The promotion gate's thresholds; the champion is compared on the candidate's own test split."""

    top_k: int = Field(3, ge=1, le=1000)
    # The floor: a number is the user's own; auto is the classical baseline's test accuracy plus
    # min_margin_over_baseline (what the schema command writes for a dataset of the user's own).
    min_accuracy: Annotated[float, Field(ge=0, le=1)] | Auto = 0.97
    max_accuracy_regression: float = Field(0.01, ge=0, le=1)  # vs the champion's test accuracy
    max_class_recall_drop: float = Field(0.1, ge=0, le=1)  # vs the champion's recall of each class
    # test accuracy - the classical baseline's (components/evaluate/baseline.py, same splits) must be at least this
    min_margin_over_baseline: float = Field(0.0, ge=-1, le=1)


@dataclass(frozen=True, config=STRICT)
class ExportParams:
    """The exported variants, their fine-tunes, how they are measured, and the int8 promotion gate."""

    model_name: str | None = None  # the registered model; null: <data name>-classifier, one per dataset

    @pydantic.field_validator("model_name")
    @classmethod
    def _usable_model_name(cls, name: str | None) -> str | None:
        return check_safe_name(name, "a registered model and the folder artifacts/export/saved_model/<name>")

    variants: tuple[str, ...] = tuple(VARIANTS)  # tfpipe/variants.py declares each
    representative_samples: int = Field(200, ge=1, le=100_000)  # train images that calibrate full-integer quantization
    seed: Seed = 42
    prune_target_sparsity: float = Field(0.75, ge=0, lt=1)
    prune_epochs: int = Field(4, ge=1, le=1000)
    prune_end_fraction: float = Field(0.5, gt=0, le=1)  # the sparsity ramp ends here; the rest recovers accuracy
    prune_learning_rate: float = Field(2e-4, gt=0)
    prune_min_weights: int = Field(1000, ge=0, le=2**31 - 1)  # smaller kernels (LeNet's first conv: 150) stay dense
    qat_epochs: int = Field(1, ge=1, le=1000)  # quantization-aware fine-tune, for qat_int8 and pqat_int8
    qat_learning_rate: float = Field(1e-4, gt=0)
    num_threads: int = Field(1, ge=1, le=1024)  # every variant is measured with the same interpreter settings
    latency_runs: int = Field(300, ge=10, le=1_000_000)
    throughput_batch_size: int = Field(64, ge=1, le=65_536)
    gate_variant: str = "int8"  # the full-integer variant that must pass the gate for `champion`
    max_int8_accuracy_drop: float = Field(0.002, ge=0, le=1)  # vs the float Keras model, whole test split
    max_int8_class_drop: float = Field(0.04, ge=0, le=1)  # per-class recall vs the float model

    @pydantic.model_validator(mode="after")
    def _gate_variant_is_exported(self):
        if unknown := [name for name in (*self.variants, self.gate_variant) if name not in VARIANTS]:
            raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)} (tfpipe/variants.py)")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants lists a variant twice: {list(self.variants)}")
        if self.gate_variant not in self.variants:
            raise ValueError(f"gate_variant {self.gate_variant!r} is not in variants {list(self.variants)}")
        if not VARIANTS[self.gate_variant].full_integer:
            raise ValueError(f"gate_variant must be a full-integer variant (*int8), got {self.gate_variant!r}")
        return self


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
    """export.model_name, else one registered model per dataset: "<dataset name>-classifier"."""
    return params.export.model_name or f"{dataset_name(params)}-classifier"
