"""The user's-own-images path on real image sets that ship inside Python packages (no download at run time).

For each dataset: write its images as a class-folder tree, then in a fresh copy of the repository run
exactly what a new user runs, with no hand edit:

    python -m pipelines.materialize --source folder --from DIR
    python -m pipelines.schema
    dvc repro

and report the network's test accuracy beside the classical baseline's (same split), whether ingest
passed first time, what the `auto` settings resolved to, and the wall time of each command.

    python -m benchmarks.bench_datasets [--json benchmarks/datasets_results.json] [--only sklearn_digits]

Datasets (neither is MNIST-derived):
- sklearn_digits: scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes (UCI optdigits).
- skimage_lfw_subset: scikit-image's 200 25x25 grayscale crops, 100 faces (LFW) and 100 non-faces.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.workspace import copy_repository, run  # noqa: E402

PYTHON = sys.executable


def sklearn_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8), digits.target, [str(digit) for digit in range(10)]


def skimage_lfw_subset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from skimage import data

    images = data.lfw_subset()  # float 0..1; the first 100 are faces, the next 100 are not
    return np.round(images * 255).astype(np.uint8), np.repeat([0, 1], 100), ["face", "not_face"]


DATASETS = {"sklearn_digits": sklearn_digits, "skimage_lfw_subset": skimage_lfw_subset}


def write_folder(images: np.ndarray, labels: np.ndarray, class_names: list[str], folder: Path) -> None:
    for index, (image, label) in enumerate(zip(images, labels, strict=False)):
        path = folder / class_names[int(label)] / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def timed(command: list[str], cwd: Path, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = run(command, cwd, check=check)
    return time.perf_counter() - start, result


def measure(name: str, scratch: Path) -> dict:
    images, labels, class_names = DATASETS[name]()
    source = scratch / name
    write_folder(images, labels, class_names, source)
    repo = copy_repository(scratch / f"{name}-repo", materialize=False)
    times = {}
    times["materialize"], _ = timed(
        [PYTHON, "-m", "pipelines.materialize", "--source", "folder", "--from", str(source)], repo
    )
    times["schema"], _ = timed([PYTHON, "-m", "pipelines.schema"], repo)
    times["dvc repro"], repro = timed([PYTHON, "-m", "dvc", "repro"], repo, check=False)
    output = repro.stdout + repro.stderr
    row = {
        "dataset": name,
        "images": int(len(images)),
        "classes": len(class_names),
        "size": list(images.shape[1:3]),
        "ingest_passed_first_time": "ingest failed" not in output,
        "repro_exit": repro.returncode,
        "seconds": {key: round(value, 1) for key, value in times.items()},
    }
    if repro.returncode == 0:
        evaluated = json.loads((repo / "metrics/evaluate.json").read_text())
        resolved = [line for line in output.splitlines() if line.startswith("resolved: ")]
        row.update(
            test_images=evaluated["num_examples"],
            accuracy=evaluated["accuracy"],
            baseline_accuracy=evaluated["baseline_accuracy"],
            margin=evaluated["accuracy"] - evaluated["baseline_accuracy"],
            blessed=evaluated["blessed"],
            resolved=resolved[-1].removeprefix("resolved: ") if resolved else "",
            registered_model=json.loads((repo / "metrics/export.json").read_text())["registered_model"],
        )
    else:
        row["error"] = output[-2000:]
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--only", choices=sorted(DATASETS), action="append")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory(prefix="tfpipe-datasets-") as directory:
        for name in args.only or list(DATASETS):
            rows.append(measure(name, Path(directory)))
    table = Table(title=f"Own-images path on shipped datasets ({platform.processor() or platform.machine()})")
    for column in (
        "dataset",
        "images",
        "ingest 1st time",
        "network",
        "baseline",
        "margin",
        "blessed",
        "resolved",
        "materialize s",
        "schema s",
        "dvc repro s",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["dataset"],
            f"{row['images']} ({row['size'][0]}x{row['size'][1]}, {row['classes']} classes)",
            str(row["ingest_passed_first_time"]),
            f"{row.get('accuracy', float('nan')):.4f}",
            f"{row.get('baseline_accuracy', float('nan')):.4f}",
            f"{row.get('margin', float('nan')):+.4f}",
            str(row.get("blessed")),
            row.get("resolved", row.get("error", "")[-200:]),
            *(str(row["seconds"][key]) for key in ("materialize", "schema", "dvc repro")),
        )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
