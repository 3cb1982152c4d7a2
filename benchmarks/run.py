"""`make bench`: prints every figure tfpipe promises, measured now, and writes benchmarks/results.json.

Runs in a fresh temporary copy of the repository. Timings are medians of several runs after a
warm-up; comparisons are ratios of runs interleaved in the same session, because this machine is
shared and noisy. Needs nothing but the installed venv; about 10 minutes on 2 cores. The stages run with the
warm server (TFPIPE_WARM=1, opt-in: tfpipe/warm.py), and a forced run without it is timed beside them.
The steps: the pipeline's overhead (benchmarks/overhead.py), the model's figures (benchmarks/figures.py), the
train stage against the bare script at fixed epochs, then ingest and the own-images datasets.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.figures import measure_elsewhere, measure_model  # noqa: E402
from benchmarks.overhead import PYTHON, median_of, print_profile, read_timings, timed  # noqa: E402
from components.export import cpu  # noqa: E402
from tests.workspace import ROOT, copy_repository, run, set_params  # noqa: E402

WARM = {"TFPIPE_WARM": "1"}  # the stages in forks of a warm server, as the figures were measured since issue 26
Row = Callable[[str, str, float, str, bool | None], None]


def measure_overhead(repo: Path, repeats: int, row: Row) -> None:
    """The whole pipeline: a first run, a no-op run, forced reruns against the bare Keras script, where they go."""
    full = timed([PYTHON, "-m", "dvc", "repro"], repo, env=WARM)
    row("full pipeline `dvc repro`, fresh copy (cold caches)", "-", full, "s", None)
    noop = median_of([PYTHON, "-m", "dvc", "repro"], repo, repeats)
    row("no-op `dvc repro`", "<= 3 s", noop, "s", noop <= 3)
    # What a user sees rerunning everything: the export's variant cache is warm (same trained weights). Each
    # forced run is followed by the bare Keras script (the same model, epochs and data), back to back.
    forced, bare = [], []
    for _ in range(2):
        forced.append(timed([PYTHON, "-m", "dvc", "repro", "-f", "--no-run-cache"], repo, env=WARM))
        stages = read_timings(repo)
        bare.append(timed([PYTHON, str(repo / "benchmarks/bare_keras.py")], repo))
    median = statistics.median(forced)
    row("`dvc repro -f --no-run-cache` (median of 2, TFPIPE_WARM=1)", "<= 90 s", median, "s", median <= 90)
    row("bare Keras script, default preset (median of 2)", "-", statistics.median(bare), "s", None)
    ratio = median / statistics.median(bare)
    row(
        "pipeline (`dvc repro -f --no-run-cache`, TFPIPE_WARM=1) / bare Keras script, default preset (medians of 2)",
        "<= 1.8",
        ratio,
        "x",
        ratio <= 1.8,
    )
    # The same forced run with every stage importing for itself (no warm server: tfpipe/warm.py), for reference.
    cold = timed([PYTHON, "-m", "dvc", "repro", "-f", "--no-run-cache"], repo, env={"TFPIPE_WARM": "0"})
    row("`dvc repro -f --no-run-cache` with TFPIPE_WARM=0 (each stage imports for itself)", "-", cold, "s", None)
    row("the same, / bare Keras script", "-", cold / statistics.median(bare), "x", None)
    print_profile(stages, forced[-1], bare[-1])
    if "train" in stages:  # the stage's own wall (its start-up included) in the last forced run, same epochs
        ratio = stages["train"]["total_s"] / bare[-1]
        row("train stage / bare Keras script, default preset (the last forced run)", "-", ratio, "x", None)


def measure_train_epochs(repo: Path, repeats: int, row: Row) -> None:
    """Train stage vs a bare Keras script: fixed epochs (no early stop) and no augmentation in both."""
    set_params(
        repo,
        {
            "train": {
                "epochs": 8,
                "early_stopping_patience": 100,
                "augmentation": {"rotation": 0.0, "zoom": 0.0, "translation": 0.0},
            },
            "tracking": {"log_augmented_images": 0},
        },
    )
    stage, bare = [], []
    for _ in range(repeats):
        stage.append(timed([PYTHON, "-m", "components.train"], repo, env=WARM))
        bare.append(timed([PYTHON, str(repo / "benchmarks/bare_keras.py")], repo))
    row(f"train stage, 8 epochs (median of {repeats})", "-", statistics.median(stage), "s", None)
    row(f"bare Keras script, 8 epochs (median of {repeats})", "-", statistics.median(bare), "s", None)
    ratio = statistics.median(stage) / statistics.median(bare)
    row(f"train stage / bare Keras script (8 epochs, medians of {repeats})", "<= 1.15", ratio, "x", ratio <= 1.15)


def measure(repeats: int, overhead_only: bool = False) -> list[dict]:
    rows = []

    def row(figure: str, goal: str, value: float, unit: str, met: bool | None):
        rows.append({"figure": figure, "goal": goal, "value": round(value, 4), "unit": unit, "met": met})
        Console().print(f"  {figure}: {value:.4g} {unit}")

    with tempfile.TemporaryDirectory(prefix="tfpipe-bench-") as directory:
        repo = copy_repository(Path(directory))
        measure_overhead(repo, repeats, row)
        if not overhead_only:
            measure_model(repo, row, WARM)
        measure_train_epochs(repo, repeats, row)
        if not overhead_only:
            measure_elsewhere(repo, Path(directory), rows, row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)  # this machine is noisy: single runs vary by 20%
    parser.add_argument(
        "--overhead-only", action="store_true", help="the pipeline and train stage vs the bare script, and the profile"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results.json")
    args = parser.parse_args()
    commit = run(["git", "rev-parse", "--short", "HEAD"], ROOT, check=False).stdout.strip()
    machine_cpu = cpu.describe_cpu()
    print(f"CPU: {cpu.format_cpu(machine_cpu)}")  # every speed figure below is this CPU's
    rows = measure(args.repeats, overhead_only=args.overhead_only)
    table = Table(title=f"tfpipe benchmarks, commit {commit}, CPU: {cpu.format_cpu(machine_cpu)}")
    for column in ("figure", "goal", "value", "met"):
        table.add_column(column)
    for item in rows:
        value = "n/a" if item["value"] is None else f"{item['value']:.4g} {item['unit']}".strip()
        table.add_row(item["figure"], item["goal"], value, {True: "yes", False: "NO", None: "-"}[item["met"]])
    Console().print(table)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": platform.platform(),
        "cpu": machine_cpu,
        "rows": rows,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
