"""The train examples export reads (the fine-tunes' data and the int8 calibration images), streamed from the
prepared split: a split of any size costs the memory of one shuffle buffer, not of the split. Reads data/prepared
(or arrays, in a test); writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

SHUFFLE_BYTES = 256 * 2**20  # the fine-tunes' shuffle buffer holds at most this many bytes of images


@dataclass(frozen=True)
class Examples:
    """The (uint8 image [H,W,C], int label) pairs the fine-tunes and the int8 calibration read, streamed: a split of
    any size costs the memory of one shuffle buffer (SHUFFLE_BYTES), not of the split."""

    count: int
    shape: tuple[int, ...]
    dataset: Callable[[], tf.data.Dataset]  # a fresh pass, in a fixed order
    dtype: type = np.uint8  # what the model takes as stored: uint8 pixels, or a table's float32 feature vectors

    @classmethod
    def from_split(cls, directory: Path, split: str) -> Examples:
        from tfpipe import records

        manifest = records.read_manifest(directory)
        return cls(
            manifest["splits"][split]["count"],
            tuple(manifest["image_shape"]),
            lambda: records.read_split(directory, split),
        )

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> Examples:
        return cls(
            len(images),
            tuple(images.shape[1:]),
            lambda: tf.data.Dataset.from_tensor_slices((images, labels)),
            images.dtype.type,
        )

    def batches(self, size: int = 1024):
        """(images, labels) numpy batches in order."""
        return self.dataset().batch(size).as_numpy_iterator()

    def shuffle_buffer(self) -> int:
        """The whole split while it fits SHUFFLE_BYTES (the same order as shuffling it in memory), else what fits."""
        return max(1, min(self.count, SHUFFLE_BYTES // max(1, int(np.prod(self.shape)))))

    def digest(self) -> str:
        """sha256 of the images then the labels as arrays (export_cache.array_digest's bytes), read in one pass."""
        digest, labels = hashlib.sha256(), []
        digest.update(f"{np.dtype(self.dtype).str}{(self.count, *self.shape)}".encode())
        for images, batch_labels in self.batches():
            digest.update(np.ascontiguousarray(images).tobytes())
            labels.append(batch_labels)
        labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        digest.update(f"{labels.dtype.str}{labels.shape}".encode())
        digest.update(np.ascontiguousarray(labels).tobytes())
        return digest.hexdigest()

    def sample(self, count: int, seed: int) -> np.ndarray:
        """`count` examples drawn without replacement, in order, as the model takes them (the int8 calibration): float32
        raw pixel values or features, int32 token ids."""
        chosen = np.sort(np.random.default_rng(seed).choice(self.count, size=min(count, self.count), replace=False))
        picked, start = [], 0
        for images, _ in self.batches():
            inside = chosen[(chosen >= start) & (chosen < start + len(images))] - start
            picked.append(images[inside])
            start += len(images)
        # What the model takes: float32 pixel values or features; integer ids (a text's tokens) as they are.
        dtype = self.dtype if np.issubdtype(self.dtype, np.integer) and self.dtype != np.uint8 else np.float32
        if not picked:
            return np.zeros((0, *self.shape), dtype)
        return np.concatenate(picked).astype(dtype)
