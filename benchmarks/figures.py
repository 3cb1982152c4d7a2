"""The model's figures and the benchmarks beside the pipeline, for `make bench` (benchmarks/run.py): the train
stage's wall time, test accuracy against the classical baseline, the export's int8 and pruned variants against float32
(size, accuracy, latency, throughput); the input-bound share of training, ingest throughput
(benchmarks/bench_ingest.py) and the own-images datasets (benchmarks/bench_datasets.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks.overhead import PYTHON, input_bound_share, timed
from tests.workspace import ROOT, run


def measure_model(repo: Path, row, env: dict) -> None:
    """The default preset's model: the train stage alone, its accuracy and the baseline's, the export's variants."""
    train_wall = timed([PYTHON, "-m", "components.train"], repo, env=env)  # alone: the process from start to exit
    epochs = json.loads((repo / "metrics/train.json").read_text())["epochs"]
    row(
        f"train stage wall time, default preset ({epochs} epochs, start-up and tracking included)",
        "-",
        train_wall,
        "s",
        None,
    )
    run([PYTHON, "-m", "dvc", "repro"], repo, env=env)  # evaluate and export the model just trained
    evaluate = json.loads((repo / "artifacts/evaluate/evaluation.json").read_text())
    model = json.loads((repo / "artifacts/train/model.json").read_text())["model"]
    row(
        f"test accuracy, default preset (mnist_5k + {model})",
        ">= 0.990",
        evaluate["accuracy"],
        "",
        evaluate["accuracy"] >= 0.990,
    )
    row(
        "classical baseline's test accuracy (same splits)",
        "<= network",
        evaluate["baseline_accuracy"],
        "",
        evaluate["baseline_accuracy"] <= evaluate["accuracy"],
    )
    export = json.loads((repo / "artifacts/export/summary.json").read_text())
    float_tflite, int8, pruned = export["tflite_float32"], export["tflite_int8"], export["tflite_pruned_int8"]
    ratios = [
        (
            "int8 size / float32 TFLite size",
            "<= 0.26",
            int8["size_bytes"] / float_tflite["size_bytes"],
            lambda v: v <= 0.26,
        ),
        ("int8 accuracy drop vs float", "<= 0.002", int8["accuracy_drop"], lambda v: v <= 0.002),
        (
            "pruned+int8 gzipped / float32 TFLite gzipped",
            "<= 0.10",
            pruned["gzip_bytes"] / float_tflite["gzip_bytes"],
            lambda v: v <= 0.10,
        ),
        (
            "int8 invoke p50 / float32 invoke p50 (batch 1, interpreter call only)",
            "<= 0.67",
            int8["invoke_p50_ms"] / float_tflite["invoke_p50_ms"],
            lambda v: v <= 0.67,
        ),
        (
            f"int8 / float32 throughput (batch {export.get('throughput_batch_size', 64)})",
            ">= 1.5",
            int8["throughput_images_per_s"] / float_tflite["throughput_images_per_s"],
            lambda v: v >= 1.5,
        ),
        (
            "int8 latency p50 / float32 latency p50 (with Python input/output)",
            "-",
            int8["latency_p50_ms"] / float_tflite["latency_p50_ms"],
            lambda v: None,
        ),
    ]
    for figure, goal, value, check in ratios:
        row(figure, goal, value, "", check(value))


def measure_elsewhere(repo: Path, directory: Path, rows: list[dict], row) -> None:
    """The input-bound share of training, then ingest's and the own-images datasets' benchmarks (their own scripts)."""
    share = input_bound_share(repo)
    row("input-bound share of training time", "< 0.05", share, "", share < 0.05)

    ingest = subprocess.run(
        [PYTHON, "-m", "benchmarks.bench_ingest", "--json", "--images", "30000", "--command"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if ingest.returncode == 0 and ingest.stdout.strip():
        for figure in json.loads(ingest.stdout.strip().splitlines()[-1]):
            rows.append(figure)
    else:
        rows.append(
            {
                "figure": "ingest throughput",
                "goal": ">= 1500 images/s",
                "value": None,
                "unit": "images/s",
                "met": None,
                "note": (ingest.stderr or "benchmarks/bench_ingest.py missing")[-300:],
            }
        )
    datasets = subprocess.run(
        [PYTHON, "-m", "benchmarks.bench_datasets", "--json", str(Path(directory) / "datasets.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    for item in json.loads((Path(directory) / "datasets.json").read_text()) if datasets.returncode == 0 else []:
        row(
            f"own images, {item['dataset']} ({item['images']} images): network test accuracy (baseline "
            f"{item.get('baseline_accuracy', float('nan')):.4f}, {item.get('test_images')} test images, "
            f"`dvc repro` {item['seconds']['dvc repro']} s)",
            ">= baseline",
            item.get("accuracy", float("nan")),
            "",
            item.get("accuracy", 0) >= item.get("baseline_accuracy", 1),
        )
        reference = item.get("reference")
        if reference:  # the colour-photo datasets: auto against the hand-written recipe on the same splits
            search = item.get("search") or {}
            row(
                f"own images, {item['dataset']}: auto ({search.get('model')} + {search.get('augmentation')}) "
                f"test accuracy vs the reference recipe's {reference['test_accuracy']:.4f}",
                ">= reference",
                item.get("accuracy", float("nan")),
                "",
                item.get("accuracy", 0) >= reference["test_accuracy"],
            )
            row(
                f"own images, {item['dataset']}: train stage (search included) vs the reference's "
                f"{reference['wall_seconds']:.1f} s",
                "<= reference, <= 180 s",
                item["seconds"].get("train stage", float("nan")),
                "s",
                item["seconds"].get("train stage", 1e9) <= min(reference["wall_seconds"], 180),
            )
