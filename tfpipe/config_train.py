"""The params schema of training: `train` (with its augmentation, search and backbone) and `tracking`. Frozen, strict
dataclasses (tfpipe/config.py composes them)."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import Field
from pydantic.dataclasses import dataclass

from tfpipe.config_types import STRICT, Auto, Epochs, Seed


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
    # The search's time budget: once spent, the candidates not yet tried are skipped (the first always runs; each is
    # listed, the cheapest first, so the budget cuts the costliest). null: no budget.
    budget_minutes: float | None = Field(None, gt=0, le=10_000)

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
    # Regression (tables): the loss, computed on the standardized target. auto: huber when the train split's
    # target has heavy tails (excess kurtosis above 3), else mse. The model reports in the target's own units.
    regression_loss: Literal["auto", "mse", "huber", "mae"] = "auto"
    # Regression: auto takes the log of a positive target whose train values are right-skewed (skewness above 1);
    # the model's last layer undoes it, so predictions are in the target's units.
    target_transform: Literal["auto", "none", "log"] = "auto"


@dataclass(frozen=True, config=STRICT)
class TrackingParams:
    """Logging only: train reads it, but no stage lists it in dvc.yaml, so changing it retrains nothing."""

    log_augmented_images: int = Field(8, ge=0, le=256)  # an augmented batch shown in TensorBoard; 0 disables
    histogram_freq: int = Field(0, ge=0, le=10_000)  # weight histograms in TensorBoard every N epochs; 0 disables
