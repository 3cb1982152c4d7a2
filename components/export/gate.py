"""Whether the exported model becomes the champion: evaluate's blessing (read back and checked against the run) and the
int8 gate on the gate variant. Reads artifacts/evaluate/blessing.json, writes nothing.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

from tfpipe import paths, promotion
from tfpipe.config import ExportParams

BLESSING_FILE = paths.EVALUATE / "blessing.json"


def decide_int8_gate(metrics: dict[str, dict], params: ExportParams) -> dict:
    """The gate variant's accuracy and per-class recall may fall at most the params' thresholds below the float
    model's, and a single test image never fails it: on a small test split one image is more than the threshold
    (1 of 230 is 0.0043 > 0.002), which is noise, not a broken quantization. At mnist_5k's 500 test images the
    thresholds are one image overall and two a class already."""
    if f"tflite_{params.gate_variant}" not in metrics:
        return {
            "variant": params.gate_variant,
            "passed": False,
            "reasons": [
                f"gate_variant {params.gate_variant} was not exported (see the report's notes); "
                "choose another export.gate_variant"
            ],
        }
    row = metrics[f"tflite_{params.gate_variant}"]
    if "mae_increase" in row:  # a regression: its MAE may rise at most max_int8_error_increase (a share)
        passed = row["mae_increase"] <= params.max_int8_error_increase + 1e-9
        reason = (
            f"{params.gate_variant} MAE {row['mae']:.4f}, {row['mae_increase']:+.2%} vs the float model's, "
            f"{'within' if passed else 'beyond'} max_int8_error_increase {params.max_int8_error_increase:.0%}"
        )
        return {"variant": params.gate_variant, "passed": passed, "reasons": [reason]}
    reasons = []
    if row["accuracy_drop"] > params.max_int8_accuracy_drop + 1e-9 and row.get("images_lost", 2) >= 2:
        reasons.append(
            f"{params.gate_variant} accuracy drop {row['accuracy_drop']:.4f} "
            f"> max_int8_accuracy_drop {params.max_int8_accuracy_drop}"
        )
    class_drop = row.get("max_class_drop_beyond_one_image", row["max_class_drop"])
    if class_drop > params.max_int8_class_drop + 1e-9:
        reasons.append(
            f"{params.gate_variant} per-class recall drop {class_drop:.4f} (2 or more images of a class) "
            f"> max_int8_class_drop {params.max_int8_class_drop}"
        )
    if not reasons:
        reasons.append(
            f"{params.gate_variant}: accuracy drop {row['accuracy_drop']:.4f} <= {params.max_int8_accuracy_drop}, "
            f"worst class drop {row['max_class_drop']:.4f} <= {params.max_int8_class_drop}"
        )
        return {"variant": params.gate_variant, "passed": True, "reasons": reasons}
    return {"variant": params.gate_variant, "passed": False, "reasons": reasons}


def promotion_decision(blessing: dict, gate: dict, model_name: str, version: int) -> promotion.Decision:
    """Whether this version becomes the champion (tfpipe/promotion.py): evaluate blessed it, the int8 gate passed,
    and the champion evaluate compared it with is still the champion (another pipeline may have promoted since), in
    the workspace (a queued or --temp experiment leaves the alias to the one the user applies)."""
    reasons = [] if blessing["blessed"] else ["evaluate did not bless the model"]
    reasons += [] if gate["passed"] else gate["reasons"]
    return promotion.decide(model_name, version, reasons, compared_champion(blessing))


def compared_champion(blessing: dict) -> int | None:
    """The champion version evaluate compared the model with (None: there was none)."""
    return (blessing.get("champion") or {}).get("version")


def read_blessing(run_id: str) -> dict:
    """evaluate's decision, which must be about this trained model (the train run's id)."""
    if not BLESSING_FILE.is_file():
        raise FileNotFoundError(f"{BLESSING_FILE}: not found; run the evaluate stage first (dvc repro evaluate)")
    with BLESSING_FILE.open() as stream:
        blessing = json.load(stream)
    evaluated = (blessing.get("candidate") or {}).get("run_id")
    if evaluated != run_id:
        raise ValueError(
            f"{BLESSING_FILE}: evaluates run {evaluated}, but artifacts/train is run {run_id}: run `dvc repro evaluate`"
        )
    return blessing
