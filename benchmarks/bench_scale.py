"""Scale benchmark: the whole pipeline on 5,000 and 50,000 (and, with --with-500k, 500,000) distinct generated colour
photos-to-be; prints per stage wall time, images/s, peak RSS and disk used, and the growth exponent between sizes.

    .venv/bin/python -m benchmarks.bench_scale                      # 5k and 50k (~25 min on 2 cores)
    .venv/bin/python -m benchmarks.bench_scale --sizes 5000         # one size
    .venv/bin/python -m benchmarks.bench_scale --with-500k          # adds 500k (hours on 2 cores)
    .venv/bin/python -m benchmarks.bench_scale --json benchmarks/scale.json

Each size runs the user's path in its own scratch copy of the repository (tests/workspace.py's copy_repository):
`pipelines.materialize --source folder --from <folder>`, `pipelines.schema`, then `dvc repro -s <stage>` for each
stage in order, every command a child of its own so that its peak RSS is the largest process of that stage alone
(RUSAGE_CHILDREN of a fresh intermediate process). Disk used is the growth of the copy (its outputs and DVC cache
entries) during the stage.

The images (benchmarks/shapes.py) are 32x32 RGB PNGs of ten shapes, each at a random position, size, rotation and
colour on a random smooth colour field with pixel noise: every image's perceptual hash is random and no
near-duplicate check can fire (ingest reports the groups it found: the table shows them, and 0 is expected). The
generated folders are kept in .cache/bench_scale (git-ignored) and reused.

Training runs a fixed number of epochs (`--epochs`, no early stop, fixed batch size) so that its cost is linear by
construction of the recipe, and what the figures measure is the pipeline around it; the other params are the
project's. A growth exponent is log(time_b / time_a) / log(N_b / N_a): 1.0 is linear, the goal is at most
log(1.2 * 10) / log(10) = 1.08 between 5k and 50k (time within 1.2x of linear); fixed costs (start-up, latency runs)
make it smaller.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.shapes import generate_folder  # noqa: E402
from components.train.search import AUGMENTATIONS  # noqa: E402
from tests.workspace import copy_repository, run, set_params  # noqa: E402

STAGES = ["ingest", "preprocess", "train", "evaluate", "export"]


def disk_usage(directory: Path) -> int:
    """Bytes allocated under `directory` (hard links counted once, symlinks not followed)."""
    seen, total = set(), 0
    for root, _, files in os.walk(directory):
        for name in files:
            status = os.lstat(os.path.join(root, name))
            if (status.st_dev, status.st_ino) in seen:
                continue
            seen.add((status.st_dev, status.st_ino))
            total += status.st_blocks * 512
    return total


MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
print(json.dumps({"seconds": time.perf_counter() - start, "returncode": code,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measured(command: list[str], repo: Path, log: Path) -> dict:
    """Runs `command` in `repo` under a fresh intermediate process; wall seconds, peak RSS of its largest process."""
    with log.open("a") as output:
        output.write(f"\n$ {' '.join(command)}\n")
        output.flush()
        # Each stage in a process of its own (no warm server: tfpipe/warm.py), so that its peak RSS is its own.
        result = run([sys.executable, "-c", MEASURE, *command], repo, check=False, env={"TFPIPE_WARM": "0"})
        output.write(result.stdout + result.stderr)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if figures["returncode"] != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo} (log: {log}):\n{result.stdout[-3000:]}")
    return {"seconds": figures["seconds"], "peak_rss_mib": figures["peak_rss_kib"] / 1024}


def run_size(count: int, epochs: int, work: Path, keep: bool) -> dict:
    folder = generate_folder(count)
    repo = copy_repository(work / f"repo-{count}", materialize=False)
    log = work / f"log-{count}.txt"
    python = sys.executable
    rows = {}
    setup = [
        ("materialize", [python, "-m", "pipelines.materialize", "--source", "folder", "--from", str(folder)]),
        ("schema", [python, "-m", "pipelines.schema"]),
    ]
    for name, command in setup:
        before = disk_usage(repo)
        rows[name] = measured(command, repo, log) | {"disk_mib": (disk_usage(repo) - before) / 2**20}
        print(f"  {count:>9,} {name:<11} {rows[name]['seconds']:8.1f} s", flush=True)
    # Fixed work per image: a fixed number of epochs and batch size, no early stop, the cheap CPU model.
    set_params(
        repo,
        {
            "train": {
                "model": "lenet5_s2d",
                "augmentation": dataclasses.asdict(AUGMENTATIONS["shift_flip"]),  # the search's preset, set: no search
                "epochs": epochs,
                "batch_size": 128,
                "early_stopping_patience": 1000,
            },
            "evaluate": {"min_accuracy": "auto"},
        },
    )
    for stage in STAGES:
        before = disk_usage(repo)
        rows[stage] = measured([python, "-m", "dvc", "repro", "-s", stage], repo, log)
        rows[stage]["disk_mib"] = (disk_usage(repo) - before) / 2**20
        print(
            f"  {count:>9,} {stage:<11} {rows[stage]['seconds']:8.1f} s {rows[stage]['peak_rss_mib']:8.0f} MiB",
            flush=True,
        )
    summary = json.loads((repo / "reports/ingest/summary.json").read_text())
    evaluation = json.loads((repo / "artifacts/evaluate/evaluation.json").read_text())
    result = {
        "images": count,
        "stages": rows,
        "near_duplicate_groups": summary.get("near_duplicate_groups", {}).get("groups"),
        "copies_dropped": summary.get("duplicates", {}).get("copies_dropped"),
        "test_accuracy": evaluation.get("accuracy"),
        "log": str(log),
    }
    if not keep:
        shutil.rmtree(repo, ignore_errors=True)
    return result


def growth(results: list[dict]) -> dict:
    """Per stage, the growth exponents of time and the peak RSS ratio between consecutive sizes."""
    out = {}
    for small, large in zip(results, results[1:], strict=False):
        factor = large["images"] / small["images"]
        key = f"{small['images']}->{large['images']}"
        out[key] = {
            stage: {
                "time_exponent": math.log(large["stages"][stage]["seconds"] / small["stages"][stage]["seconds"])
                / math.log(factor),
                "time_vs_linear": large["stages"][stage]["seconds"] / (factor * small["stages"][stage]["seconds"]),
                "peak_rss_ratio": large["stages"][stage]["peak_rss_mib"] / small["stages"][stage]["peak_rss_mib"],
            }
            for stage in small["stages"]
        }
    return out


def print_tables(results: list[dict], growths: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    table = Table(title="the pipeline at scale (wall time, throughput, peak RSS of the stage's largest process, disk)")
    for column in ("images", "step", "seconds", "images/s", "peak RSS MiB", "disk MiB"):
        table.add_column(column, justify="right")
    for result in results:
        for stage, row in result["stages"].items():
            table.add_row(
                f"{result['images']:,}",
                stage,
                f"{row['seconds']:.1f}",
                f"{result['images'] / row['seconds']:,.0f}",
                f"{row['peak_rss_mib']:,.0f}",
                f"{row['disk_mib']:,.1f}",
            )
        total = sum(row["seconds"] for row in result["stages"].values())
        table.add_row(f"{result['images']:,}", "[b]all[/b]", f"{total:.1f}", f"{result['images'] / total:,.0f}", "", "")
    console.print(table)
    for key, stages in growths.items():
        table = Table(title=f"growth {key} images (exponent 1.0: linear; goal: time within 1.2x of linear, RSS 1.5x)")
        for column in ("step", "time exponent", "time / linear", "peak RSS ratio", "met"):
            table.add_column(column, justify="right")
        for stage, figures in stages.items():
            met = figures["time_vs_linear"] <= 1.2 and figures["peak_rss_ratio"] <= 1.5
            table.add_row(
                stage,
                f"{figures['time_exponent']:.2f}",
                f"{figures['time_vs_linear']:.2f}",
                f"{figures['peak_rss_ratio']:.2f}",
                "yes" if met else "NO",
            )
        console.print(table)
    for result in results:
        console.print(
            f"{result['images']:,} images: near-duplicate groups {result['near_duplicate_groups']} (0 expected), "
            f"copies dropped {result['copies_dropped']}, test accuracy {result['test_accuracy']:.4f}"
        )


def main(argv: list[str] | None = None) -> None:
    from components.export.cpu import describe_cpu, format_cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000], help="dataset sizes, ascending")
    parser.add_argument("--with-500k", action="store_true", help="add 500,000 images (hours on 2 cores)")
    parser.add_argument("--epochs", type=int, default=3, help="fixed training epochs at every size")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (their paths are printed)")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes + ([500_000] if args.with_500k else [])))
    machine = describe_cpu()
    print(f"CPU: {format_cpu(machine)}; sizes {sizes}; {args.epochs} epochs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="tfpipe-scale-"))
    results = [run_size(count, args.epochs, work, args.keep) for count in sizes]
    growths = growth(results)
    print_tables(results, growths)
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": machine, "epochs": args.epochs, "results": results, "growth": growths}, indent=2) + "\n"
        )
        print(f"written: {args.json}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
