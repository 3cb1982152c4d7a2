"""Which exported variants may ship: one that falls further behind the float Keras model than the export params allow
is "not for shipping". Its figures stay in the report, the model card and summary.json, marked so, with the reason;
its .tflite file is not exported (nor logged to MLflow, nor listed in the export's manifest), so nothing serves it.
Reads and writes nothing.

A classifier's variant is not for shipping when its test accuracy is more than export.max_variant_accuracy_drop below
the float model's and it lost two or more test images (one image of a small test split is noise, as for the int8
gate); a regression's when its test MAE is more than export.max_variant_error_increase (a share) above the float
model's.
"""

from __future__ import annotations

from components.export.measure import REFERENCE

NOT_FOR_SHIPPING = "not for shipping"


def variants_not_for_shipping(metrics: dict[str, dict], params) -> dict[str, str]:
    """{variant: why it is not for shipping} for every TFLite variant in `metrics` (export_measure.measure_variants'
    rows) beyond the export params' limits; params: ExportParams."""
    reference = metrics[REFERENCE]
    refused = {}
    for name, row in metrics.items():
        if not name.startswith("tflite_"):
            continue
        variant = name.removeprefix("tflite_")
        if "mae_increase" in row:
            if row["mae_increase"] > params.max_variant_error_increase + 1e-9:
                refused[variant] = (
                    f"MAE {row['mae']:.4f}, {row['mae_increase']:+.1%} vs the float model's {reference['mae']:.4f}, "
                    f"beyond export.max_variant_error_increase {params.max_variant_error_increase:.0%}"
                )
        elif row["accuracy_drop"] > params.max_variant_accuracy_drop + 1e-9 and row.get("images_lost", 2) >= 2:
            refused[variant] = (
                f"accuracy {row['accuracy']:.4f} vs the float model's {reference['accuracy']:.4f} "
                f"({-row['accuracy_drop'] * 100:+.1f} pp, {row['images_lost']} test images), beyond "
                f"export.max_variant_accuracy_drop {params.max_variant_accuracy_drop * 100:g} pp"
            )
    return refused


def describe(refused: dict[str, str]) -> list[str]:
    """One line a variant, for the report and the card."""
    return [
        f"**{variant}** is {NOT_FOR_SHIPPING} (its file is not exported): {why}" for variant, why in refused.items()
    ]
