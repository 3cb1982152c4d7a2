"""Prints the export figures from artifacts/export/summary.json and re-times the .tflite files of artifacts/export.

    python benchmarks/bench_export.py [--repo DIR] [--rounds 7] [--json]

The stage's own latency is a p50 over interleaved rounds; this re-times invoke() alone (no Python
(de)quantization), as the minimum over rounds of the per-round median, which is what survives a
noisy shared machine best. Same interpreter settings for every file: ai_edge_litert, default
XNNPACK delegate, one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tfpipe import tflite

FIGURES = [
    (
        "int8 size / float32 TFLite size",
        "<= 0.26",
        lambda m: m["tflite_int8"]["size_bytes"] / m["tflite_float32"]["size_bytes"],
        0.26,
    ),
    ("int8 accuracy drop vs float", "<= 0.002", lambda m: m["tflite_int8"]["accuracy_drop"], 0.002),
    (
        "pruned+int8 gzipped / float32 TFLite gzipped",
        "<= 0.10",
        lambda m: m["tflite_pruned_int8"]["gzip_bytes"] / m["tflite_float32"]["gzip_bytes"],
        0.10,
    ),
    (
        "int8 latency p50 / float32 TFLite latency p50",
        "<= 0.67",
        lambda m: m["tflite_int8"]["latency_p50_ms"] / m["tflite_float32"]["latency_p50_ms"],
        0.67,
    ),
]


def invoke_microseconds(path: Path, batch_size: int, rounds: int, calls: int) -> float:
    classifier = tflite.TFLiteClassifier(path, num_threads=1)
    batch = classifier.quantize_input(np.zeros((batch_size, *classifier.image_shape), np.uint8))
    medians = [np.median(tflite.time_calls(lambda: classifier.invoke(batch), calls)) for _ in range(rounds)]
    return float(min(medians)) * 1000 / batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    args = parser.parse_args()
    metrics = json.loads((args.repo / "artifacts/export/summary.json").read_text())
    rows = []
    for figure, goal, compute, limit in FIGURES:
        value = compute(metrics)
        rows.append(
            {"figure": figure, "goal": goal, "value": round(value, 4), "unit": "", "met": value <= limit + 1e-9}
        )
    files = sorted((args.repo / "artifacts/export").glob("model_*.tflite"))
    timings = {path.stem.removeprefix("model_"): {} for path in files}
    for _ in range(2):  # two interleaved passes: a neighbour's burst hits every file alike
        for path in files:
            for batch_size in (1, 64):
                value = invoke_microseconds(path, batch_size, args.rounds, 300 if batch_size == 1 else 20)
                timings[path.stem.removeprefix("model_")][batch_size] = min(
                    value, timings[path.stem.removeprefix("model_")].get(batch_size, np.inf)
                )
    print(f"{'variant':16s} {'invoke us/image (batch 1)':>26s} {'us/image (batch 64)':>20s}")
    for name, row in timings.items():
        print(f"{name:16s} {row[1]:26.1f} {row[64]:20.1f}")
    if "int8" in timings and "float32" in timings:
        for batch_size in (1, 64):
            ratio = timings["int8"][batch_size] / timings["float32"][batch_size]
            rows.append(
                {
                    "figure": f"int8 / float32 invoke-only latency, batch {batch_size} (min of medians)",
                    "goal": "<= 0.67",
                    "value": round(ratio, 4),
                    "unit": "",
                    "met": ratio <= 0.67,
                }
            )
    for row in rows:
        print(f"  {row['figure']}: {row['value']} (goal {row['goal']}, {'met' if row['met'] else 'NOT met'})")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
