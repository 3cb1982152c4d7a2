"""Ingest throughput benchmark: reads mnist_5k and a generated folder of 30,000 28x28 PNGs;
prints images/s and peak memory, and with --command the whole `dvc repro ingest` a user runs, with its profile.

    .venv/bin/python -m benchmarks.bench_ingest            # both workloads, the stage alone
    .venv/bin/python -m benchmarks.bench_ingest --images 10000 --skip-mnist
    .venv/bin/python -m benchmarks.bench_ingest --skip-mnist --command   # make bench: the command too

Each stage workload runs `python -m components.ingest` in a fresh project folder (its own params.yaml,
its data/raw a symlink to the images) as a child process, so the figures include TensorFlow and
Great Expectations start-up and the peak RSS is the child's alone. The generated folder is kept in
.cache/bench_ingest (git-ignored) and reused.

--command: in a fresh copy of the repository, `python -m pipelines.materialize --source folder --from <generated>` and
`python -m pipelines.schema`, then `dvc repro ingest` is timed twice (the second time after ingest.seed changed, so
that DVC checks and reruns the stage as it did the first time): on a quiet machine, then with the other core busy (a
process spinning beside it, on a 2-core machine the other core). Where each command's time went: DVC before the
stage (its start-up and checks: data/raw hashed), the stage's phases (tfpipe/timing.py), DVC after it (outputs hashed
and cached, data/raw hashed again for dvc.lock).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench_ingest"


def generate_folder(directory: Path, count: int, num_classes: int = 10, seed: int = 0) -> Path:
    """count distinct 28x28 grayscale PNGs in <class>/<index>.png (a stroke on noise); reused if complete."""
    from pipelines.sources import encode_png

    marker = directory / f".complete-{count}"
    if marker.is_file():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % num_classes
        image = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
        row, column = rng.integers(2, 20, size=2)
        image[row : row + 6, column : column + 3 + label % 4] = rng.integers(180, 256)
        path = directory / f"class_{label}" / f"{index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(image))
    marker.write_text("")
    return directory


def run_ingest(raw_dir: Path, count: int, num_classes: int, mean_range: tuple[float, float]) -> dict:
    """Runs the ingest stage in a child process on raw_dir; returns seconds, images/s and peak RSS."""
    project = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"] = {"source": "folder"}
        (project / "data").mkdir()
        (project / "data/raw").symlink_to(raw_dir.resolve(), target_is_directory=True)
        params["ingest"]["expectations"].update(
            {
                "num_classes": num_classes,
                "min_per_class": 1,
                "min_class_share": 0.0,
                "max_class_share": 1.0,
                "image_mean_min": mean_range[0],
                "image_mean_max": mean_range[1],
            }
        )
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # A fresh process, whose rusage is the stage's (no warm server: tfpipe/warm.py).
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TFPIPE_WARM": "0"}
        start = time.perf_counter()
        with tempfile.TemporaryFile() as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "components.ingest"],
                cwd=project,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: ru_maxrss in KiB on Linux
            seconds = time.perf_counter() - start
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode != 0:
                log.seek(0)
                raise SystemExit(f"ingest failed on {raw_dir}:\n{log.read().decode(errors='replace')[-3000:]}")
        peak_mib = usage.ru_maxrss / 1024
        return {"images": count, "seconds": seconds, "images_per_second": count / seconds, "peak_rss_mib": peak_mib}
    finally:
        shutil.rmtree(project, ignore_errors=True)


def time_command(repo: Path, busy: bool) -> dict:
    """`dvc repro ingest` in repo (no warm server: the default), optionally with a process spinning on another core;
    the command's wall time and where it went."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFPIPE_WARM": "0"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"  # the stage's `python`
    environment.pop("MLFLOW_TRACKING_URI", None)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        start = time.time()
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "ingest"], cwd=repo, env=environment, capture_output=True, text=True
        )
        seconds = time.time() - start
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if result.returncode != 0:
        raise SystemExit(f"dvc repro ingest failed in {repo}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    stage = json.loads((repo / ".cache/timings/ingest.json").read_text())
    before = stage.get("dvc_before_s", stage["started_at"] - start)
    profile = {"DVC before the stage (start-up, checks: data/raw hashed)": before}
    profile.update({f"stage: {phase}": value for phase, value in stage["phases_s"].items()})
    profile["DVC after the stage (outputs cached, data/raw hashed again)"] = start + seconds - stage["ended_at"]
    return {"seconds": seconds, "profile": profile}


def run_command(images: Path, count: int) -> list[tuple[str, dict]]:
    """materialize and schema in a fresh copy of the repository, then `dvc repro ingest` quiet and with the other
    core busy; (workload name, figures) for each."""
    from tests.workspace import copy_repository, run, set_params

    with tempfile.TemporaryDirectory(prefix="bench-ingest-command-") as directory:
        repo = copy_repository(Path(directory), materialize=False)
        run([sys.executable, "-m", "pipelines.materialize", "--source", "folder", "--from", str(images)], repo)
        run([sys.executable, "-m", "pipelines.schema"], repo)
        rows = []
        for busy in (False, True):
            if busy:  # the same command again: a changed param makes DVC check and rerun the stage as before
                seed = yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["seed"]
                set_params(repo, {"ingest": {"seed": seed + 1}})
            figures = time_command(repo, busy)
            name = f"`dvc repro ingest`, {count:,} PNGs" + (", other core busy" if busy else "")
            rows.append((name, {"images": count, "images_per_second": count / figures["seconds"], **figures}))
    return rows


def print_profiles(rows: list[tuple[str, dict]]) -> None:
    for name, row in rows:
        print(f"where {name} went ({row['seconds']:.1f} s):")
        for phase, seconds in row["profile"].items():
            print(f"  {phase:<62} {seconds:>6.1f} s {seconds / row['seconds']:>5.0%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30_000, help="size of the generated folder")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--command", action="store_true", help="also time `dvc repro ingest` after materialize, schema")
    parser.add_argument("--json", action="store_true", help="last line: the figures as JSON rows for benchmarks/run.py")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows = []
    if not args.skip_mnist:
        from pipelines.sources import load_mnist_5k, write_image_folder

        mnist_dir = CACHE / "mnist_5k"
        images, labels = load_mnist_5k()
        write_image_folder(images, labels, [str(digit) for digit in range(10)], mnist_dir)
        rows.append(("mnist_5k", run_ingest(mnist_dir, len(images), 10, (5.0, 160.0))))
    generated = CACHE / f"generated-{args.images}"
    print(f"generating {args.images:,} PNGs in {generated} (reused when present) ...", flush=True)
    generate_folder(generated, args.images)
    rows.append((f"generated {args.images:,} x 28x28 PNG", run_ingest(generated, args.images, 10, (5.0, 160.0))))
    commands = run_command(generated, args.images) if args.command else []
    print(f"{'workload':<44} {'images':>8} {'seconds':>8} {'images/s':>9} {'peak RSS MiB':>13}")
    for name, row in [*rows, *commands]:
        print(
            f"{name:<44} {row['images']:>8,} {row['seconds']:>8.1f} {row['images_per_second']:>9,.0f} "
            f"{row.get('peak_rss_mib', float('nan')):>13,.0f}"
        )
    print("(wall clock of the whole stage in a fresh process: TensorFlow and Great Expectations start-up included)")
    print_profiles(commands)
    if args.json:
        figures = [
            {
                "figure": f"ingest throughput, {name}",
                "goal": ">= 1500 images/s",
                "value": round(row["images_per_second"], 1),
                "unit": "images/s",
                "met": row["images_per_second"] >= 1500,
            }
            for name, row in commands
        ]
        for name, row in rows:
            goal_met = row["images_per_second"] >= 1500 if name.startswith("generated") and not commands else None
            figures.append(
                {
                    "figure": f"ingest throughput, {name}",
                    "goal": ">= 1500 images/s" if goal_met is not None else "-",
                    "value": round(row["images_per_second"], 1),
                    "unit": "images/s",
                    "met": goal_met,
                }
            )
            figures.append(
                {
                    "figure": f"ingest peak memory, {name}",
                    "goal": "-",
                    "value": round(row["peak_rss_mib"], 1),
                    "unit": "MiB",
                    "met": None,
                }
            )
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
