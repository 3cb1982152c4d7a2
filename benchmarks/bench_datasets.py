"""The user's-own-images path on real image sets that ship inside Python packages (no download at run time).

For each dataset: write its images as a class-folder tree, then in a fresh copy of the repository run
exactly what a new user runs, with no hand edit:

    python -m pipelines.materialize --source folder --from DIR
    python -m pipelines.schema
    dvc repro

and report the network's test accuracy beside the classical baseline's (same split), whether ingest
passed first time, what the `auto` settings resolved to, and the wall time of each command.

    python -m benchmarks.bench_datasets [--json benchmarks/datasets_results.json] [--only photo_tiles | --all]

By default the two small sets docs/data.md reports (sklearn_digits, skimage_lfw_subset: minutes); --only names one
(repeat it for more), --all runs the four; --quick trains one epoch and exports two variants (a check, not figures).
Each dataset's line is printed as soon as it is done (and --json rewritten), the table at the end.

Datasets (none is MNIST-derived):
- sklearn_digits: scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes (UCI optdigits).
- skimage_lfw_subset: scikit-image's 200 25x25 grayscale crops, 100 faces (LFW) and 100 non-faces.
- photo_tiles: 2,300 32x32 colour tiles cut at random places and scales from 10 real photos that ship inside
  scikit-image, scikit-learn and matplotlib (tests/photos.py), the class being the photo; some are identical after
  decoding (flat black corners), as in a user's folder.
- photo_crops: 500 JPEG crops of the same photos, 32-112 px, any aspect, 4% saved grayscale, one class with a nested
  sub-folder.

For the colour-photo datasets the train stage runs alone and is timed (the `auto` search included), each search
candidate's validation accuracy is reported, and the hand-written reference recipe (benchmarks/reference_recipe.py,
the 79k-parameter ResNet at 32 px) trains on the same splits for comparison.
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
from tests.workspace import copy_repository, run, set_params  # noqa: E402

PYTHON = sys.executable


def sklearn_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8), digits.target, [str(digit) for digit in range(10)]


def skimage_lfw_subset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from skimage import data

    images = data.lfw_subset()  # float 0..1; the first 100 are faces, the next 100 are not
    return np.round(images * 255).astype(np.uint8), np.repeat([0, 1], 100), ["face", "not_face"]


def write_folder(images: np.ndarray, labels: np.ndarray, class_names: list[str], folder: Path) -> None:
    for index, (image, label) in enumerate(zip(images, labels, strict=False)):
        path = folder / class_names[int(label)] / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def from_arrays(load):
    """A writer of the folder of an in-memory dataset (images, labels, class names)."""
    return lambda folder: write_folder(*load(), folder)


def photo_tiles(folder: Path) -> None:
    from tests.photos import write_tiles

    write_tiles(folder)


def photo_crops(folder: Path) -> None:
    from tests.photos import write_crops

    write_crops(folder)


DATASETS = {
    "sklearn_digits": from_arrays(sklearn_digits),
    "skimage_lfw_subset": from_arrays(skimage_lfw_subset),
    "photo_tiles": photo_tiles,
    "photo_crops": photo_crops,
}
PHOTOS = ("photo_tiles", "photo_crops")  # the train stage timed alone, and the reference recipe beside it
DEFAULT = ("sklearn_digits", "skimage_lfw_subset")  # what docs/data.md reports; --all adds the photo sets
QUICK = {  # --quick: params.yaml after the schema command, for a check that the path runs (tests/test_benchmarks.py)
    "train": {"model": "lenet5_s2d", "epochs": 1, "augmentation": {"rotation": 0.0}},
    "export": {"variants": ["float32", "int8"], "latency_runs": 10},
}


def cpu_name() -> str:
    """lscpu's model name (timings differ by CPU), else the platform's processor."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def timed(command: list[str], cwd: Path, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = run(command, cwd, check=check)
    return time.perf_counter() - start, result


def count_images(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file())


def measure(name: str, scratch: Path, overrides: dict | None = None) -> dict:
    source = scratch / name
    DATASETS[name](source)
    repo = copy_repository(scratch / f"{name}-repo", materialize=False)
    times = {}
    times["materialize"], _ = timed(
        [PYTHON, "-m", "pipelines.materialize", "--source", "folder", "--from", str(source)], repo
    )
    times["schema"], _ = timed([PYTHON, "-m", "pipelines.schema"], repo)
    if overrides:  # --quick: a check that the path runs, not figures
        set_params(repo, overrides)
    if name in PHOTOS:  # the train stage alone: what the reference recipe is compared with
        timed([PYTHON, "-m", "dvc", "repro", "preprocess"], repo, check=False)
        times["train stage"], _ = timed([PYTHON, "-m", "dvc", "repro", "train"], repo, check=False)
    times["dvc repro"], repro = timed([PYTHON, "-m", "dvc", "repro"], repo, check=False)
    output = repro.stdout + repro.stderr
    manifest_file = repo / "data/prepared/manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    row = {
        "dataset": name,
        "images": count_images(source),
        "classes": len(manifest.get("class_names", [])),
        "size": manifest.get("image_shape", [0, 0])[:2],
        "ingest_passed_first_time": "ingest failed" not in output,
        "repro_exit": repro.returncode,
        "seconds": {key: round(value, 1) for key, value in times.items()},
    }
    if repro.returncode == 0:
        evaluated = json.loads((repo / "artifacts/evaluate/evaluation.json").read_text())
        trained = json.loads((repo / "artifacts/train/model.json").read_text())
        exported = json.loads((repo / "artifacts/export/summary.json").read_text())
        resolved = [line for line in output.splitlines() if line.startswith("resolved: ")]
        row.update(
            test_images=evaluated["num_examples"],
            accuracy=evaluated["accuracy"],
            baseline_accuracy=evaluated["baseline_accuracy"],
            margin=evaluated["accuracy"] - evaluated["baseline_accuracy"],
            likely_label_errors=evaluated["likely_label_errors"]["confirmed"],
            blessed=evaluated["blessed"],
            promoted=exported["promoted"],
            resolved=resolved[-1].removeprefix("resolved: ") if resolved else "",
            search=trained.get("search"),
            registered_model=exported["registered_model"],
        )
        if name in PHOTOS:
            reference = run(
                [PYTHON, "-m", "benchmarks.reference_recipe", "--prepared", "data/prepared", "--size", "32"], repo
            )
            row["reference"] = json.loads(reference.stdout.strip().splitlines()[-1])
    else:
        row["error"] = output[-2000:]
    return row


def describe_search(row: dict) -> str:
    search = row.get("search") or {}
    if not search:
        return row.get("resolved", row.get("error", "")[-200:])
    candidates = ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in search["val_accuracy"].items())
    return f"{search['model']} + {search['augmentation']} (val: {candidates})"


def describe_row(row: dict) -> str:
    """One dataset's outcome in a line: accuracy against the baseline, or the end of the error."""
    if "accuracy" not in row:
        return f"{row['dataset']}: dvc repro exited {row['repro_exit']}: {row.get('error', '')[-300:]}"
    return (
        f"{row['dataset']}: {row['images']} images, test accuracy {row['accuracy']:.4f} vs the classical baseline's "
        f"{row['baseline_accuracy']:.4f}, blessed {row['blessed']}, {row['seconds']['dvc repro']} s of dvc repro"
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--only", choices=sorted(DATASETS), action="append")
    chosen.add_argument("--all", action="store_true", help=f"every dataset: {', '.join(DATASETS)}")
    parser.add_argument("--quick", action="store_true", help="one epoch, two variants: a check that it runs")
    args = parser.parse_args(argv)
    overrides = QUICK if args.quick else None
    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory(prefix="tfpipe-datasets-") as directory:
        for name in args.only or (list(DATASETS) if args.all else DEFAULT):
            rows.append(measure(name, Path(directory), overrides))
            print(describe_row(rows[-1]), flush=True)  # a dataset's figures survive a later one's failure
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2) + "\n")
    table = Table(title=f"Own-images path on shipped datasets ({cpu_name()})")
    for column in (
        "dataset",
        "images",
        "ingest 1st time",
        "network",
        "baseline",
        "reference recipe",
        "blessed / promoted",
        "auto choice",
        "train stage s",
        "reference s",
        "dvc repro s",
    ):
        table.add_column(column)
    for row in rows:
        reference = row.get("reference") or {}
        table.add_row(
            row["dataset"],
            f"{row['images']} ({row['size'][0]}x{row['size'][1]}, {row['classes']} classes)",
            str(row["ingest_passed_first_time"]),
            f"{row.get('accuracy', float('nan')):.4f}",
            f"{row.get('baseline_accuracy', float('nan')):.4f}",
            f"{reference['test_accuracy']:.4f}" if reference else "-",
            f"{row.get('blessed')} / {row.get('promoted')}",
            describe_search(row),
            str(row["seconds"].get("train stage", "-")),
            f"{reference['wall_seconds']:.1f}" if reference else "-",
            str(row["seconds"]["dvc repro"]),
        )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
