"""The TFRecord format shared by every stage: ingest writes it, preprocess/train/evaluate/export read it.

TensorFlow is imported where it is used, so that SPLITS and MANIFEST cost nothing to import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")  # the one list of splits every stage uses
MANIFEST = "manifest.json"


def features() -> dict:
    """How each record's fields parse."""
    import tensorflow as tf

    return {
        "image": tf.io.FixedLenFeature([], tf.string),  # raw uint8 pixels, row-major H*W*C
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "file": tf.io.FixedLenFeature([], tf.string),
    }


def serialize_example(image: np.ndarray, label: int, file: str) -> bytes:
    """Encodes one HxWxC uint8 image and its label as a tf.train.Example."""
    import tensorflow as tf

    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"{file}: expected a HxWxC uint8 array, got {image.dtype} with shape {image.shape}")
    height, width, channels = image.shape
    # Filled in place: a third of the time of building each Feature and list as its own message (ingest writes one
    # a file), the same bytes.
    example = tf.train.Example()
    feature = example.features.feature
    feature["image"].bytes_list.value.append(image.tobytes())
    for name, value in (("height", height), ("width", width), ("channels", channels), ("label", label)):
        feature[name].int64_list.value.append(int(value))
    feature["file"].bytes_list.value.append(file.encode("utf-8"))
    # deterministic=True: map fields in a fixed order, so the same input gives byte-identical shards.
    return example.SerializeToString(deterministic=True)


def framed_records(path: Path | str) -> Iterator[bytes]:
    """Each record of an uncompressed TFRecord file as it is framed on disk (its length, the length's CRC, the data,
    the data's CRC). Written to another file unchanged, it is the same record there: a split's shards are copied
    from ingest's pool this way, ~50x faster than through tf.data and byte for byte what TFRecordWriter writes."""
    with Path(path).open("rb") as stream:
        while header := stream.read(12):
            length = int.from_bytes(header[:8], "little") if len(header) == 12 else -1
            body = stream.read(length + 4) if length >= 0 else b""
            if length < 0 or len(body) != length + 4:
                raise ValueError(f"{path}: a truncated TFRecord (a record's {len(header) + len(body)} bytes)")
            yield header + body


def shard_paths(directory: Path | str, split: str, num_shards: int) -> list[Path]:
    return [Path(directory) / f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]


def read_manifest(directory: Path | str) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; run the ingest stage first (dvc repro ingest)")
    with path.open() as stream:
        return json.load(stream)


def read_split(directory: Path | str, split: str, with_file: bool = False):
    """A tf.data.Dataset of (image uint8 [H,W,C], label int32) pairs of one split, in the order ingest wrote them."""
    import tensorflow as tf

    manifest = read_manifest(directory)
    if split not in manifest["splits"]:
        raise ValueError(
            f"split {split!r} not in {Path(directory) / MANIFEST}; available: {sorted(manifest['splits'])}"
        )
    files = [str(Path(directory) / name) for name in manifest["splits"][split]["shards"]]
    height, width, channels = manifest["image_shape"]

    parsed = features()

    def parse(record):
        example = tf.io.parse_single_example(record, parsed)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), [height, width, channels])
        label = tf.cast(example["label"], tf.int32)
        if with_file:
            return image, label, example["file"]
        return image, label

    # Shards are read in order (not interleaved) so evaluation output is reproducible.
    records = tf.data.TFRecordDataset(files, num_parallel_reads=None)
    # The manifest's count lets Keras and LR schedules know the epoch length; a shard that holds
    # more or fewer records than that fails loudly at the end of the first pass.
    records = records.apply(tf.data.experimental.assert_cardinality(manifest["splits"][split]["count"]))
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_labels(directory: Path | str, split: str) -> tuple[np.ndarray, list[str]]:
    """One split's labels int32 [N] and file names, read in one pass without keeping its images."""
    labels, files = [], []
    for _, label_batch, file_batch in read_split(directory, split, with_file=True).batch(4096).as_numpy_iterator():
        labels.append(label_batch)
        files.extend(name.decode() for name in file_batch)
    return (np.concatenate(labels) if labels else np.zeros(0, np.int32)), files


def gather_images(directory: Path | str, split: str, indices: np.ndarray) -> np.ndarray:
    """The images at `indices` (ascending positions in the split), read in one pass: memory for those alone."""
    indices = np.asarray(indices, np.int64)
    picked, start = [], 0
    for image_batch, _ in read_split(directory, split).batch(4096).as_numpy_iterator():
        inside = indices[(indices >= start) & (indices < start + len(image_batch))] - start
        picked.append(image_batch[inside])
        start += len(image_batch)
        if start > (indices[-1] if len(indices) else -1):
            break
    if not picked:
        return np.zeros((0, *read_manifest(directory)["image_shape"]), np.uint8)
    return np.concatenate(picked)


def load_split_arrays(directory: Path | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory as (images uint8 [N,H,W,C], labels int32 [N])."""
    images, labels = [], []
    for image_batch, label_batch in read_split(directory, split).batch(1024):
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    if not images:
        manifest = read_manifest(directory)
        return np.zeros((0, *manifest["image_shape"]), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels)
