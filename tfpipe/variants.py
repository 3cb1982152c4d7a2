"""The export variants, declared once: what each is made of, which export params it reads, whether it needs data.

The params schema (tfpipe/config.py) validates export.variants and export.gate_variant against this table, the
export stage builds each variant from its entry (components/export/variants.py: the base model, an optional
quantization-aware fine-tune, then the conversion), and the variant cache keys each on the params it reads
(components/export/cache.py). Adding a variant is one entry here: e.g.
`Variant("pruned_float16", quantization="float16", base="pruned")` exports the pruned model with float16 weights,
keyed on the pruning params and the train data, with no other change anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

# Export params grouped by the step that reads them.
CALIBRATION_PARAMS = frozenset({"representative_samples", "seed"})  # full-integer calibration
PRUNING_PARAMS = frozenset(
    {"prune_target_sparsity", "prune_epochs", "prune_end_fraction", "prune_learning_rate", "prune_min_weights", "seed"}
)
QAT_PARAMS = frozenset({"qat_epochs", "qat_learning_rate", "seed"})
STEP_PARAMS = CALIBRATION_PARAMS | PRUNING_PARAMS | QAT_PARAMS
# Params that never change a converted file: naming, measurement and the gate.
MEASUREMENT_PARAMS = frozenset(
    {
        "model_name",
        "variants",
        "num_threads",
        "latency_runs",
        "throughput_batch_size",
        "gate_variant",
        "max_int8_accuracy_drop",
        "max_int8_class_drop",
        "max_int8_error_increase",
        "max_variant_accuracy_drop",
        "max_variant_error_increase",
    }
)
QUANTIZATIONS = ("float32", "float16", "dynamic_range", "int8")


@dataclass(frozen=True)
class Variant:
    """One TFLite variant: the model it starts from, an optional fine-tune, and the TFLite conversion."""

    name: str
    quantization: str  # float32 | float16 (weights) | dynamic_range (int8 weights) | int8 (full integer, int8 I/O)
    base: str = "trained"  # trained | pruned (prune_low_magnitude fine-tune, then strip_pruning)
    quantization_aware: bool = False  # a QAT fine-tune before converting; pruning-preserving on a pruned base

    def __post_init__(self):
        if self.quantization not in QUANTIZATIONS or self.base not in ("trained", "pruned"):
            raise ValueError(f"variant {self.name}: unknown quantization {self.quantization!r} or base {self.base!r}")

    @property
    def full_integer(self) -> bool:
        return self.quantization == "int8"

    @property
    def reads_params(self) -> frozenset[str]:
        """The export params the variant's file depends on (besides the trained model and the code)."""
        params = frozenset()
        if self.full_integer:
            params |= CALIBRATION_PARAMS
        if self.base == "pruned":
            params |= PRUNING_PARAMS
        if self.quantization_aware:
            params |= QAT_PARAMS
        return params

    @property
    def reads_data(self) -> bool:
        """Whether the train split goes into it (calibration or a fine-tune): its cache key then includes the data."""
        return bool(self.reads_params)


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("float32", quantization="float32"),
        Variant("float16", quantization="float16"),
        Variant("dynamic_range", quantization="dynamic_range"),
        Variant("int8", quantization="int8"),
        Variant("pruned_int8", quantization="int8", base="pruned"),
        Variant("qat_int8", quantization="int8", quantization_aware=True),
        Variant("pqat_int8", quantization="int8", base="pruned", quantization_aware=True),
    )
}
