"""Where a run's time goes, for `make bench` (benchmarks/run.py): timing a command, the stages' own profiles
(.cache/timings/<stage>.json, tfpipe/timing.py) printed beside the bare Keras script's time, and the share of a
training epoch spent waiting for input."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.workspace import run

PYTHON = sys.executable


def timed(command: list[str], cwd: Path, env: dict | None = None) -> float:
    start = time.perf_counter()
    run(command, cwd, env=env)
    return time.perf_counter() - start


def median_of(command: list[str], cwd: Path, repeats: int) -> float:
    return statistics.median(timed(command, cwd) for _ in range(repeats))


def input_bound_share(repo: Path) -> float:
    """Share of a training epoch spent waiting for input: real tf.data pipeline vs the same batches in memory."""
    code = """
import json, statistics, time, tfpipe
import tensorflow as tf
from components.train.data import build_augmenter, build_input_pipeline
from components.train.model import build_classifier, build_training_model
from components.train.schedule import compile_model, resolve_train_schedule
from models.preprocessing import load_preprocessor
from tfpipe import records
from tfpipe.params_file import load_params
manifest = records.read_manifest("data/prepared")  # the data's own size and classes, whatever the dataset
train_count = manifest["splits"]["train"]["count"]
params = resolve_train_schedule(load_params().train, train_count)
split = records.read_split("data/prepared", "train")
data = build_input_pipeline(split, params.batch_size, True, params.shuffle_buffer, params.seed,
                            build_augmenter(params.augmentation, params.seed))
in_memory = tf.data.Dataset.from_tensor_slices(tuple(tf.concat(t, 0) for t in zip(*list(data))))
in_memory = in_memory.batch(params.batch_size).cache().prefetch(tf.data.AUTOTUNE)
list(in_memory)
preprocessor = load_preprocessor()
model = build_training_model(preprocessor,
                             build_classifier(params, preprocessor.output_shape[1:], len(manifest["class_names"])))
compile_model(model, params, steps_per_epoch=-(-train_count // params.batch_size), jit_compile=False)
model.fit(data, epochs=1, verbose=0)
times = {"pipeline": [], "memory": []}
for _ in range(3):
    for name, dataset in (("pipeline", data), ("memory", in_memory)):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        times[name].append(time.perf_counter() - start)
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""
    result = json.loads(run([PYTHON, "-c", code], repo, env={"PYTHONPATH": str(repo)}).stdout.strip().splitlines()[-1])
    return max(0.0, (result["pipeline"] - result["memory"]) / result["pipeline"])


def read_timings(repo: Path) -> dict[str, dict]:
    """The last run's per-stage timings (tfpipe/timing.py: .cache/timings/<stage>.json), in pipeline order."""
    order = ["ingest", "preprocess", "train", "evaluate", "export"]
    found = {path.stem: json.loads(path.read_text()) for path in (repo / ".cache/timings").glob("*.json")}
    return {stage: found[stage] for stage in order if stage in found}


def print_profile(stages: dict[str, dict], pipeline_seconds: float, bare_seconds: float) -> None:
    """Where the pipeline's time goes beyond the bare script's: each stage's start-up and phases, and DVC itself."""
    table = Table(
        title=f"where `dvc repro -f` goes ({pipeline_seconds:.1f} s; the bare Keras script: {bare_seconds:.1f} s)"
    )
    for column in ("stage", "phase", "seconds", "share"):
        table.add_column(column, justify="right" if column in ("seconds", "share") else "left")
    for stage, figures in stages.items():
        for phase, seconds in figures["phases_s"].items():
            table.add_row(stage, phase, f"{seconds:.1f}", f"{seconds / pipeline_seconds:.0%}")
        table.add_row(
            stage, "[b]stage total[/b]", f"{figures['total_s']:.1f}", f"{figures['total_s'] / pipeline_seconds:.0%}"
        )
    dvc = pipeline_seconds - sum(figures["total_s"] for figures in stages.values())
    table.add_row("dvc", "hashing, locking, starting the stages", f"{dvc:.1f}", f"{dvc / pipeline_seconds:.0%}")
    Console(width=120).print(table)
