"""Scale benchmark for tables: a generated CSV of 1,000,000 rows x 20 columns (numbers with empty cells, categories,
booleans, a date, an id) through materialize (with its schema proposal), ingest and preprocess, each in a process of
its own; prints wall seconds, rows/s and peak RSS per command. The goal (issue 32): ingest and preprocess together
under 60 s on 2 cores, each under 2 GB of peak RSS.

    .venv/bin/python -m benchmarks.bench_table_scale                    # 1,000,000 rows
    .venv/bin/python -m benchmarks.bench_table_scale --rows 100000      # a quicker look
    .venv/bin/python -m benchmarks.bench_table_scale --json benchmarks/table_scale.json

The commands run as a user runs them, in a scratch copy of the repository (tests/workspace.py's copy_repository):
`pipelines.materialize --source file --from <csv> --target <column>`, then `python -m components.ingest` and
`python -m components.preprocess` (what `dvc repro -s` runs, without DVC's own hashing of a 100 MB file, which the
image benchmark measures). The generated file is kept in .cache/bench_table_scale (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_scale import measured  # noqa: E402
from tests.workspace import copy_repository  # noqa: E402

CACHE = ROOT / ".cache" / "bench_table_scale"
GOAL_SECONDS, GOAL_RSS_MIB = 60.0, 2048.0


def generate_table(rows: int, seed: int = 0) -> Path:
    """20 columns: 12 numbers (2% empty cells), 4 categories (3-50 values), 2 booleans, a date and an id; the target
    is a category that depends on some of them. Written once per size, in chunks."""
    path = CACHE / f"table-{rows}.csv"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    staging = path.with_suffix(".partial")
    with staging.open("w") as stream:
        for start in range(0, rows, 250_000):
            count = min(250_000, rows - start)
            frame = pd.DataFrame({"id": np.arange(start, start + count)})
            numbers = rng.normal(size=(count, 12)).round(4)
            for column in range(12):
                values = numbers[:, column].astype(object)
                values[rng.random(count) < 0.02] = ""
                frame[f"x{column}"] = values
            for column, size in enumerate((3, 8, 20, 50)):
                frame[f"c{column}"] = rng.integers(0, size, count).astype(str)
                frame[f"c{column}"] = "v" + frame[f"c{column}"]
            frame["flag_a"] = rng.choice(["yes", "no"], count)
            frame["flag_b"] = rng.choice(["true", "false"], count)
            frame["day"] = (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1500, count), "D")).strftime(
                "%Y-%m-%d"
            )
            score = numbers[:, 0] + numbers[:, 1] * (frame["c0"] == "v1") + rng.normal(0, 0.5, count)
            frame["label"] = np.where(score > 0.5, "high", np.where(score < -0.5, "low", "mid"))
            frame.to_csv(stream, header=start == 0, index=False, lineterminator="\n")
    staging.rename(path)
    return path


def run(rows: int, work: Path) -> dict:
    table = generate_table(rows)
    repo = copy_repository(work / "repo", materialize=False)
    log = work / "log.txt"
    python = sys.executable
    figures = {
        "materialize": measured(
            [python, "-m", "pipelines.materialize", "--source", "file", "--from", str(table), "--target", "label"],
            repo,
            log,
        )
    }
    for stage in ("ingest", "preprocess"):
        figures[stage] = measured([python, "-m", f"components.{stage}"], repo, log)
    for row in figures.values():
        row["rows_per_s"] = rows / row["seconds"]
    return {"rows": rows, "columns": 20, "file_mib": table.stat().st_size / 2**20, "commands": figures}


def report(result: dict) -> None:
    print(f"{result['rows']:,} rows x {result['columns']} columns ({result['file_mib']:.0f} MiB of CSV)")
    print(f"{'command':<14}{'seconds':>10}{'rows/s':>12}{'peak RSS MiB':>15}")
    for name, row in result["commands"].items():
        print(f"{name:<14}{row['seconds']:>10.1f}{row['rows_per_s']:>12,.0f}{row['peak_rss_mib']:>15,.0f}")
    both = result["commands"]["ingest"]["seconds"] + result["commands"]["preprocess"]["seconds"]
    rss = max(result["commands"][stage]["peak_rss_mib"] for stage in ("ingest", "preprocess"))
    print(
        f"ingest + preprocess: {both:.1f} s (goal under {GOAL_SECONDS:.0f} s), peak RSS {rss:,.0f} MiB "
        f"(goal under {GOAL_RSS_MIB:,.0f}): {'met' if both < GOAL_SECONDS and rss < GOAL_RSS_MIB else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tfpipe-table-scale-"))
    try:
        result = run(args.rows, work)
    finally:
        if args.keep:
            print(f"scratch copy: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
