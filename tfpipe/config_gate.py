"""The params schema of the promotion gates: `evaluate` (the blessing: floor, baseline, champion) and `export` (the
variants, their fine-tunes, how they are measured, the int8 gate). Frozen, strict dataclasses (tfpipe/config.py
composes them)."""

from __future__ import annotations

from typing import Annotated

import pydantic
from pydantic import Field
from pydantic.dataclasses import dataclass

from tfpipe.config_types import STRICT, Auto, Seed, check_safe_name
from tfpipe.variants import VARIANTS


@dataclass(frozen=True, config=STRICT)
class EvaluateParams:
    """The promotion gate's thresholds; the champion is compared on the candidate's own test split."""

    top_k: int = Field(3, ge=1, le=1000)
    # The floor: a number is the user's own; auto is the classical baseline's test accuracy plus
    # min_margin_over_baseline (what the schema command writes for a dataset of the user's own).
    min_accuracy: Annotated[float, Field(ge=0, le=1)] | Auto = 0.97
    # vs the champion on the same test split: 0, at least as good; a tolerance below it a user may opt into
    max_accuracy_regression: float = Field(0.0, ge=0, le=1)
    max_class_recall_drop: float = Field(0.1, ge=0, le=1)  # vs the champion's recall of each class
    # test accuracy - the classical baseline's (components/evaluate/baseline.py, same splits) must be at least this
    min_margin_over_baseline: float = Field(0.0, ge=-1, le=1)
    # Regression (lower is better; MAE in the target's units). The ceiling: a number is the user's own; auto is the
    # linear baseline's test MAE reduced by min_error_reduction.
    max_error: Annotated[float, Field(ge=0)] | Auto = "auto"
    min_error_reduction: float = Field(0.0, ge=-1, lt=1)  # share of the baseline's MAE the model must be below it by
    max_error_increase: float = Field(0.0, ge=0, le=10)  # vs the champion's MAE: 0, at least as good; a share above it


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
    # At most; auto: about FINE_TUNE_STEPS optimizer steps whatever the train split's size (components/export/
    # fine_tune.py), and with a validation split the fine-tune stops when val_loss stops improving after the ramp.
    prune_epochs: Annotated[int, Field(ge=1, le=1000)] | Auto = "auto"
    prune_end_fraction: float = Field(0.5, gt=0, le=1)  # the sparsity ramp ends here; the rest recovers accuracy
    prune_learning_rate: float = Field(2e-4, gt=0)
    prune_min_weights: int = Field(1000, ge=0, le=2**31 - 1)  # smaller kernels (LeNet's first conv: 150) stay dense
    # quantization-aware fine-tune, for qat_int8 and pqat_int8: at most; auto as prune_epochs
    qat_epochs: Annotated[int, Field(ge=1, le=1000)] | Auto = "auto"
    qat_learning_rate: float = Field(1e-4, gt=0)
    num_threads: int = Field(1, ge=1, le=1024)  # every variant is measured with the same interpreter settings
    latency_runs: int = Field(300, ge=10, le=1_000_000)
    throughput_batch_size: int = Field(64, ge=1, le=65_536)
    gate_variant: str = "int8"  # the full-integer variant that must pass the gate for `champion`
    max_int8_accuracy_drop: float = Field(0.002, ge=0, le=1)  # vs the float Keras model, whole test split
    max_int8_class_drop: float = Field(0.04, ge=0, le=1)  # per-class recall vs the float model
    max_int8_error_increase: float = Field(0.02, ge=0, le=10)  # regression: int8 MAE vs the float model's, a share
    # Any variant further behind the float model is "not for shipping": marked in the report, the card and
    # summary.json, and its file is not exported (a single test image never decides it)
    max_variant_accuracy_drop: float = Field(0.01, ge=0, le=1)
    max_variant_error_increase: float = Field(0.05, ge=0, le=10)  # regression: MAE above the float model's, a share

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
