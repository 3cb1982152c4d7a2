"""The promotion gate (TFX Evaluator's blessing): the accuracy floor, the classical baseline and the registry's
champion, compared on the candidate's own test split; reads the registry, writes nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import mlflow
import numpy as np
import tensorflow as tf
from mlflow.exceptions import MlflowException

from components.evaluate import paired
from components.evaluate.paired import OUTCOMES
from tfpipe import model_trust, tracking
from tfpipe.config import EvaluateParams
from tfpipe.redaction import redact


class RegistryError(RuntimeError):
    """The registry could not be read, or its champion could not be loaded or compared: the gate fails closed."""


def find_champion(model_name: str):
    """The registry's champion ModelVersion, or None when there is none yet (no such registered model, or no
    alias); raises RegistryError when the registry cannot be read: "could not check" is not "no champion"."""
    try:
        return tracking.champion_version(model_name)
    except MlflowException as error:
        reason = error.message
    except Exception as error:  # noqa: BLE001  (an unreachable server raises requests' or the store's own errors)
        reason = f"{type(error).__name__}: {error}"
    raise RegistryError(redact(f"the model registry at {mlflow.get_tracking_uri()} could not be read ({reason[:300]})"))


def load_champion(model_uri: str):
    """(the loaded SavedModel, its serving_default signature) of a registered version our export recorded the digest
    of; raises RegistryError when it cannot be loaded (or carries no digest)."""
    try:
        with tempfile.TemporaryDirectory() as directory:
            # A SavedModel runs its graph: only the one our export registered (its recorded digest) is loaded.
            which, recorded = model_trust.registered_digest(model_uri)
            saved_model = model_trust.download_mlflow_model(model_uri, Path(directory))
            if recorded is None:
                name, number = which.split(" version ")
                raise model_trust.UntrustedModel(
                    f"{which} carries no digest of its SavedModel ({model_trust.DIGEST_TAG}: exported before tfpipe "
                    f"recorded one); {model_trust.WHY}. If you trust it, record its digest: "
                    f"python -m pipelines.store trust-version {name} {number}"
                )
            model_trust.check_saved_model(saved_model, recorded=recorded)
            loaded = tf.saved_model.load(str(saved_model))
            serving = loaded.signatures["serving_default"]
    except Exception as error:  # noqa: BLE001  (any failure to load means: could not check, and say why)
        raise RegistryError(redact(f"could not be loaded ({type(error).__name__}: {str(error)[:600]})")) from None
    return loaded, serving


def check_class_names(loaded, outputs: list[dict], probabilities: np.ndarray, class_names: list[str]) -> None:
    """A champion that predicts other classes is another dataset's model: RegistryError."""
    if hasattr(loaded, "class_names"):  # export's ServingModule keeps every class name in a variable
        named = dict(enumerate(name.decode() for name in loaded.class_names.numpy()))
    else:  # an older export: the names of the classes it predicts
        named = {
            int(i): name.decode()
            for output in outputs
            for i, name in zip(output["class_ids"].numpy(), output["class_names"].numpy(), strict=True)
        }
    if probabilities.shape[1] != len(class_names) or any(
        index >= len(class_names) or class_names[index] != name for index, name in named.items()
    ):
        raise RegistryError(
            f"has classes {[named.get(i, '?') for i in range(probabilities.shape[1])]}, the candidate "
            f"{class_names}: another dataset's model"
        )


def predict_with_champion(model_uri: str, images: np.ndarray, class_names: list[str]) -> np.ndarray:
    """The champion's probabilities on the candidate's test images; raises RegistryError when it cannot be loaded,
    or when it takes other images or predicts other classes (a champion is never replaced by another dataset's
    model)."""
    loaded, serving = load_champion(model_uri)
    if "images" not in serving.structured_input_signature[1]:
        raise RegistryError(f"takes {sorted(serving.structured_input_signature[1])}, not images: another kind's model")
    input_shape = tuple(serving.structured_input_signature[1]["images"].shape[1:])
    if input_shape != images.shape[1:]:
        raise RegistryError(
            f"takes images of shape {input_shape}, the candidate {images.shape[1:]}: another dataset's model"
        )
    outputs = [serving(images=tf.constant(images[start : start + 256])) for start in range(0, len(images), 256)]
    probabilities = np.concatenate([output["probabilities"].numpy() for output in outputs])
    check_class_names(loaded, outputs, probabilities, class_names)
    return probabilities


def evaluate_champion(model_name: str, score) -> dict:
    """What the gate compares against: {"version": {"version", "run_id"} or None, "metrics": the champion's metrics
    on the candidate's test split or None, "skip": why there is nothing to compare (no champion yet: the
    thresholds decide), "error": why the comparison could not be made (the gate fails closed)}. score: a model URI
    -> its metrics on the candidate's test split (raises RegistryError when it cannot be compared)."""
    check = {"version": None, "metrics": None, "skip": "", "error": ""}
    try:
        version = find_champion(model_name)
    except RegistryError as error:
        return {**check, "error": str(error)}
    if version is None:
        return {
            **check,
            "skip": f"no champion: registered model {model_name!r} has no {tracking.CHAMPION_ALIAS!r} version yet",
        }
    check["version"] = {"version": int(version.version), "run_id": version.run_id}
    try:
        metrics = score(f"models:/{model_name}/{version.version}")
    except RegistryError as error:
        return {
            **check,
            "error": f"champion v{version.version} of {model_name!r} {error}; a champion is only replaced by a "
            "model it can be compared with (another dataset needs its own data.name or export.model_name)",
        }
    return {**check, "metrics": metrics}


def decide_blessing(
    candidate: dict,
    params: EvaluateParams,
    champion: dict | None = None,
    *,
    champion_label: str = "the champion",
    no_champion_reason: str = "no champion",
    champion_error: str = "",
    baseline: dict | None = None,
) -> dict:
    """The promotion gate. `candidate` and `champion` are compute_metrics() results on the same test split.

    No champion yet: the thresholds decide. A champion that could not be checked (`champion_error`:
    an unreadable registry, a champion that cannot be loaded or serves another dataset) is a FAIL:
    the gate fails closed. `baseline` (baseline.fit_and_score on the same splits) must be beaten by
    evaluate.min_margin_over_baseline. Every check is a reason, passed or not.
    """
    accuracy = candidate["accuracy"]
    floor = resolve_floor(params, baseline)
    passed = floor["value"] is not None and accuracy >= floor["value"] - 1e-9
    if floor["value"] is None:
        reasons = [f"FAIL: {floor['source']}"]
    elif params.min_accuracy == "auto":
        reasons = [
            f"{'PASS' if passed else 'FAIL'}: test accuracy {accuracy:.4f} is {'at or above' if passed else 'below'} "
            f"the floor {floor['value']:.4f} ({floor['source']})"
        ]
    else:
        reasons = [
            f"{'PASS' if passed else 'FAIL'}: test accuracy {accuracy:.4f} is "
            f"{'at or above' if passed else 'below'} evaluate.min_accuracy {params.min_accuracy}"
        ]
    if baseline is not None and params.min_accuracy != "auto":  # with auto, the floor is this very check
        margin = accuracy - baseline["accuracy"]
        beaten = margin >= params.min_margin_over_baseline - 1e-9
        reasons.append(
            f"{'PASS' if beaten else 'FAIL'}: test accuracy {accuracy:.4f} "
            f"vs the classical baseline's {baseline['accuracy']:.4f} "
            f"({baseline['model']}, same splits): margin {margin:+.4f} is {'at or above' if beaten else 'below'} "
            f"evaluate.min_margin_over_baseline {params.min_margin_over_baseline}"
        )
    comparison = None
    if champion_error:
        reasons.append(f"FAIL: could not check against the champion: {champion_error}")
    elif champion is None:
        reasons.append(
            f"SKIP: comparison with a champion (at least as accurate, per-class recall): {no_champion_reason}; "
            "the thresholds alone decide"
        )
    else:
        comparison, compared = compare_with_champion(candidate, champion, params, champion_label)
        reasons += compared
    return {
        "blessed": not any(reason.startswith("FAIL") for reason in reasons),
        "reasons": reasons,
        "comparison": comparison,
        "floor": floor,
    }


def compare_with_champion(
    candidate: dict, champion: dict, params: EvaluateParams, champion_label: str = "the champion"
) -> tuple[dict, list[str]]:
    """(the comparison, its reasons) of a candidate and the champion on the same test split (compute_metrics results):
    the candidate replaces it only when at least as accurate (a tie is as good; evaluate.max_accuracy_regression, 0 by
    default, is a tolerance a user may opt into) and no class's recall falls more than evaluate.max_class_recall_drop.
    McNemar's exact test on the two models' outcomes says whether the difference is within noise."""
    accuracy = candidate["accuracy"]
    drops = {
        name: champion["per_class"][name]["recall"] - item["recall"] for name, item in candidate["per_class"].items()
    }
    worst = max(drops, key=drops.get)
    change = accuracy - champion["accuracy"]
    comparison = {
        "accuracy": champion["accuracy"],
        "accuracy_change": change,
        "max_class_recall_drop": drops[worst],
        "max_class_recall_drop_class": worst,
    }
    noise = ""
    if OUTCOMES in candidate and OUTCOMES in champion:
        comparison["paired_test"] = paired.mcnemar(candidate[OUTCOMES], champion[OUTCOMES])
        noise = f"; the difference is {comparison['paired_test']['sentence']}"
    # The epsilon keeps 0.95 vs 0.96 at a tolerance of 0.01 a pass despite float rounding.
    worse = change < -params.max_accuracy_regression - 1e-9
    tolerance = (
        f"evaluate.max_accuracy_regression {params.max_accuracy_regression} below it allowed"
        if params.max_accuracy_regression
        else "a champion is replaced only by a model at least as accurate"
    )
    reasons = [
        f"{'FAIL' if worse else 'PASS'}: test accuracy {accuracy:.4f} vs {champion_label}'s {champion['accuracy']:.4f} "
        f"on the same test split (change {change:+.4f}): {'worse' if worse else 'at least as good'} ({tolerance})"
        + noise
    ]
    failing = [name for name, drop in drops.items() if drop > params.max_class_recall_drop + 1e-9]
    for name in failing:
        reasons.append(
            f"FAIL: recall of class {name!r} fell {drops[name]:.4f} "
            f"from {champion_label}'s {champion['per_class'][name]['recall']:.4f} "
            f"to {candidate['per_class'][name]['recall']:.4f}, "
            f"more than evaluate.max_class_recall_drop {params.max_class_recall_drop}"
        )
    if not failing:
        reasons.append(
            f"PASS: largest per-class recall drop vs {champion_label} is {drops[worst]:+.4f} (class {worst!r}), "
            f"within evaluate.max_class_recall_drop {params.max_class_recall_drop}"
        )
    return comparison, reasons


def resolve_floor(params: EvaluateParams, baseline: dict | None) -> dict:
    """The accuracy floor that applies and where it comes from: {"value": float or None, "source": words}.

    A number in evaluate.min_accuracy is the user's floor for their dataset. `auto` is the classical baseline's
    test accuracy (same splits) plus evaluate.min_margin_over_baseline, capped at 1: a floor that fits any
    dataset. Without a baseline, auto cannot be resolved and the gate fails closed (value None).
    """
    if params.min_accuracy != "auto":
        return {"value": float(params.min_accuracy), "source": "evaluate.min_accuracy"}
    if baseline is None:
        return {
            "value": None,
            "source": "evaluate.min_accuracy is auto, but there is no classical baseline to set the floor from",
        }
    value = min(1.0, baseline["accuracy"] + params.min_margin_over_baseline)
    return {
        "value": value,
        "source": f"evaluate.min_accuracy: auto, the classical baseline's {baseline['accuracy']:.4f} + "
        f"evaluate.min_margin_over_baseline {params.min_margin_over_baseline}",
    }


def per_class_recall(metrics: dict) -> dict[str, float]:
    return {name: item["recall"] for name, item in metrics["per_class"].items()}
