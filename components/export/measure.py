"""Measures the export stage's variants on the test split: accuracy against the float Keras model, size, sparsity,
speed; and for a quantized variant that is slower than float32 on this machine, the speed of each interpreter setting.

Every variant is timed with the same interpreter settings, in interleaved rounds (each round times every
variant once, in the same order), so a noisy neighbour on a shared machine hits them all alike.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import OpResolverType

from components.export import fine_tune
from tfpipe import tflite

REFERENCE = "keras_float"  # the trained model itself: every variant is compared with it
LATENCY_ROUNDS = 5
# Untimed calls before each timed block: enough to refill the caches another variant's block evicted. A batch
# call takes milliseconds and the batch interpreter is never resized while timing, so two are enough.
WARMUP = {"latency": 20, "invoke": 20, "batch": 2}
# A quantized variant counts as slower than float32 when its invoke p50 is more than this fraction above
# float32's, or its throughput more than this fraction below: closer than that is timing noise on a shared machine.
SLOWER_MARGIN = 0.05
# The interpreter settings timed for a slower variant, as OpResolverType names: AUTO applies the default
# XNNPACK delegate (what the table measures), BUILTIN_WITHOUT_DEFAULT_DELEGATES runs TFLite's own kernels.
SETTINGS = ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")


def class_recalls(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.array(
        [np.mean(predictions[labels == k] == k) if np.any(labels == k) else np.nan for k in range(num_classes)]
    )


def class_correct(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.array([int(np.sum((predictions == labels) & (labels == k))) for k in range(num_classes)])


def time_in_rounds(
    calls: dict[str, dict[str, Callable]], runs: dict[str, int], rounds: int = LATENCY_ROUNDS
) -> dict[str, dict[str, list]]:
    """Milliseconds per call of calls[name][kind], runs[kind] calls per round."""
    timed = {name: {kind: [] for kind in kinds} for name, kinds in calls.items()}
    for _ in range(rounds):
        for name, kinds in calls.items():
            for kind, call in kinds.items():
                timed[name][kind].extend(tflite.time_calls(call, runs[kind], warmup=WARMUP[kind]))
    return timed


def tflite_calls(
    one: tflite.TFLiteClassifier, many: tflite.TFLiteClassifier, single: np.ndarray, batch: np.ndarray
) -> dict[str, Callable]:
    """latency: one uint8 image with (de)quantization, as a user calls it; invoke: the interpreter call alone; batch:
    len(batch) images a call. `one` and `many` are two interpreters of the same file, so no call resizes a tensor."""
    quantized_one, quantized_many = one.quantize_input(single), many.quantize_input(batch)
    many.invoke(quantized_many)  # (re)allocates for the batch size before any timing
    return {
        "latency": lambda: one.predict(single),
        "invoke": lambda: one.invoke(quantized_one),
        "batch": lambda: many.invoke(quantized_many),
    }


def classification_quality(outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    """Per variant: accuracy, its drop, the worst per-class recall drop and the agreement with the float Keras model
    (REFERENCE), from the outputs (probabilities)."""
    num_classes = int(outputs[REFERENCE].shape[-1])
    predictions = {name: np.argmax(values, axis=-1) for name, values in outputs.items()}
    reference_correct = int(np.sum(predictions[REFERENCE] == labels))
    reference_recalls = class_recalls(predictions[REFERENCE], labels, num_classes)
    reference_class_correct = class_correct(predictions[REFERENCE], labels, num_classes)
    quality = {}
    for name, predicted in predictions.items():
        correct = int(np.sum(predicted == labels))
        quality[name] = {
            "accuracy": correct / len(labels),
            # from counts, so one image of 500 is exactly 0.002 and compares equal to a 0.002 threshold
            "accuracy_drop": (reference_correct - correct) / len(labels),
            "max_class_drop": float(np.nanmax(reference_recalls - class_recalls(predicted, labels, num_classes))),
            # The int8 gate never fails on one image: a class's drop counts only where it lost two or more.
            "images_lost": reference_correct - correct,
            "max_class_drop_beyond_one_image": float(
                np.max(
                    np.where(
                        reference_class_correct - class_correct(predicted, labels, num_classes) >= 2,
                        np.nan_to_num(reference_recalls - class_recalls(predicted, labels, num_classes)),
                        0.0,
                    )
                )
            ),
            "agreement": float(np.mean(predicted == predictions[REFERENCE])),
        }
    return quality


def regression_quality(outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, dict]:
    """Per variant: MAE and RMSE in the target's units, the MAE's increase over the float Keras model's (a share of
    it) and the mean absolute difference from that model's predictions."""
    reference = outputs[REFERENCE].reshape(-1)
    reference_mae = float(np.mean(np.abs(reference - targets)))
    quality = {}
    for name, values in outputs.items():
        predicted = values.reshape(-1)
        mae = float(np.mean(np.abs(predicted - targets)))
        quality[name] = {
            "mae": mae,
            "rmse": float(np.sqrt(np.mean((predicted - targets) ** 2))),
            "mae_increase": (mae - reference_mae) / reference_mae if reference_mae else 0.0,
            "mean_abs_difference": float(np.mean(np.abs(predicted - reference))),
        }
    return quality


QUALITY = {"classification": classification_quality, "regression": regression_quality}


def measure_variants(
    model: keras.Model,
    model_size: int,
    converted: dict[str, bytes],
    images,
    labels,
    *,
    num_threads: int,
    latency_runs: int,
    batch_size: int,
    task: str = "classification",
) -> dict[str, dict]:
    """One row per variant, every TFLite variant run by the same interpreter settings.

    latency_*: one example per call including the input quantization and output dequantization a
    user pays; invoke_*: the interpreter call alone; throughput: examples/s in batches of batch_size.
    The quality columns compare with the float Keras model (REFERENCE): a classifier's accuracy_drop,
    max_class_drop and agreement, a regression's mae_increase and mean_abs_difference (QUALITY).
    """
    if len(images) == 0:
        raise ValueError("the test split is empty: there is nothing to measure the exported variants on")
    single, batch = images[:1], images[:batch_size]
    outputs = {REFERENCE: model.predict(images.astype(np.float32), batch_size=256, verbose=0)}
    keras_call = tf.function(lambda inputs: model(inputs, training=False))
    one, many = tf.constant(single, tf.float32), tf.constant(batch, tf.float32)
    calls = {
        REFERENCE: {
            "latency": lambda: keras_call(tf.constant(single, tf.float32)).numpy(),
            "invoke": lambda: keras_call(one),
            "batch": lambda: keras_call(many),
        }
    }
    for variant, content in converted.items():
        runner_one, runner_many = (tflite.TFLiteClassifier(content, num_threads) for _ in range(2))
        outputs[f"tflite_{variant}"] = runner_many.predict(images, batch_size=batch_size)
        calls[f"tflite_{variant}"] = tflite_calls(runner_one, runner_many, single, batch)
    runs = max(1, latency_runs // LATENCY_ROUNDS)
    timed = time_in_rounds(calls, {"latency": runs, "invoke": runs, "batch": max(3, runs // 10)})

    quality = QUALITY[task](outputs, labels)
    metrics = {}
    for name in calls:
        content = converted[name.removeprefix("tflite_")] if name != REFERENCE else None
        metrics[name] = {
            **quality[name],
            "size_bytes": model_size if content is None else len(content),
            "gzip_bytes": None if content is None else len(gzip.compress(content, compresslevel=9, mtime=0)),
            "sparsity": fine_tune.keras_weight_sparsity(model) if content is None else tflite.weight_sparsity(content),
            "latency_p50_ms": float(np.percentile(timed[name]["latency"], 50)),
            "latency_p99_ms": float(np.percentile(timed[name]["latency"], 99)),
            "invoke_p50_ms": float(np.percentile(timed[name]["invoke"], 50)),
            "throughput_images_per_s": float(len(batch) / (np.median(timed[name]["batch"]) / 1000)),
        }
    return metrics


def time_interpreter_settings(
    converted: dict[str, bytes], images, *, num_threads: int, latency_runs: int, batch_size: int
) -> dict[str, dict[str, dict]]:
    """{variant: {setting: {invoke_p50_ms, throughput_images_per_s}}} for every setting in SETTINGS, all timed in the
    same interleaved rounds with num_threads (what the table uses); the table's accuracy does not depend on it."""
    single, batch = images[:1], images[:batch_size]
    calls = {}
    for variant, content in converted.items():
        for setting in SETTINGS:
            runner_one, runner_many = (
                tflite.TFLiteClassifier(content, num_threads, OpResolverType[setting]) for _ in range(2)
            )
            timing = tflite_calls(runner_one, runner_many, single, batch)
            calls[(variant, setting)] = {"invoke": timing["invoke"], "batch": timing["batch"]}
    # Half the table's batch calls: a batch takes 5-15 ms here (TFLite's own kernels are several times slower than
    # XNNPACK's), and the settings differ by far more than the spread of a median of 15 calls.
    runs = max(1, latency_runs // LATENCY_ROUNDS)
    timed = time_in_rounds(calls, {"invoke": runs, "batch": 3})
    figures: dict[str, dict[str, dict]] = {}
    for (variant, setting), kinds in timed.items():
        figures.setdefault(variant, {})[setting] = {
            "invoke_p50_ms": float(np.percentile(kinds["invoke"], 50)),
            "throughput_images_per_s": float(len(batch) / (np.median(kinds["batch"]) / 1000)),
        }
    return figures


def slower_than_float32(
    metrics: dict[str, dict], settings: dict[str, dict[str, dict]] | None = None, margin: float = SLOWER_MARGIN
) -> dict[str, dict]:
    """The quantized variants slower than tflite_float32 in `metrics` (see SLOWER_MARGIN), each with its ratios to
    float32 and, where `settings` (time_interpreter_settings) has figures for it and for float32, each setting's figures
    and the fastest setting for single images and for batches."""
    if "tflite_float32" not in metrics:
        return {}
    reference = metrics["tflite_float32"]
    slower = {}
    for name, row in metrics.items():
        if not name.startswith("tflite_") or name == "tflite_float32":
            continue
        invoke_ratio = row["invoke_p50_ms"] / reference["invoke_p50_ms"]
        throughput_ratio = row["throughput_images_per_s"] / reference["throughput_images_per_s"]
        if invoke_ratio <= 1 + margin and throughput_ratio >= 1 / (1 + margin):
            continue
        variant = name.removeprefix("tflite_")
        facts = {
            "invoke_p50_ratio": invoke_ratio,
            "throughput_ratio": throughput_ratio,
            "slower_in": [
                kind
                for kind, slow in (
                    ("invoke_p50", invoke_ratio > 1 + margin),
                    ("throughput", throughput_ratio < 1 / (1 + margin)),
                )
                if slow
            ],
        }
        timed, float32 = (settings or {}).get(variant), (settings or {}).get("float32")
        if timed and float32:
            facts["settings"] = {
                setting: {**figures, **{f"float32_{key}": value for key, value in float32[setting].items()}}
                for setting, figures in timed.items()
            }
            facts["fastest_invoke_setting"] = min(timed, key=lambda setting: timed[setting]["invoke_p50_ms"])
            facts["fastest_throughput_setting"] = max(
                timed, key=lambda setting: timed[setting]["throughput_images_per_s"]
            )
            facts["float32_fastest_invoke_p50_ms"] = min(figures["invoke_p50_ms"] for figures in float32.values())
            facts["float32_fastest_throughput_images_per_s"] = max(
                figures["throughput_images_per_s"] for figures in float32.values()
            )
        slower[variant] = facts
    return slower
