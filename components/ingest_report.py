"""Ingest statistics (TFX StatisticsGen's job): reads the per-example table; writes the metrics dict and PNG
pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
THUMBNAIL_SIZE = 64  # samples are kept as thumbnails, so a folder of huge images costs no memory


class ChannelMoments:
    """Running per-channel sums of one split, so mean/std need no pixels kept in memory."""

    def __init__(self, channels: int):
        self.channels, self.pixels = channels, 0
        self.total, self.total_squares = np.zeros(channels), np.zeros(channels)

    def add(self, image: np.ndarray) -> None:
        if image.shape[2] != self.channels:  # a wrong channel count fails the suite; leave it out here
            return
        values = image.reshape(-1, self.channels).astype(np.float64)
        self.pixels += len(values)
        self.total += values.sum(axis=0)
        self.total_squares += np.square(values).sum(axis=0)

    def summary(self) -> dict:
        if not self.pixels:
            return {"mean": None, "std": None}
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.total_squares / self.pixels - np.square(mean), 0))
        return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std]}


def build_statistics(examples: pd.DataFrame, class_names: list[str], moments: dict[str, ChannelMoments]) -> dict:
    """Per split: per-class counts and per-channel pixel mean/std; the image size histogram (HxWxC)."""
    class_counts, pixels = {}, {}
    for split in SPLITS:
        counts = examples.loc[examples["split"] == split, "class_name"].value_counts()
        class_counts[split] = {name: int(counts.get(name, 0)) for name in class_names}
        pixels[split] = moments[split].summary()
    sizes = (
        (examples["height"].astype(str) + "x" + examples["width"].astype(str) + "x" + examples["channels"].astype(str))
        .value_counts()
        .sort_index()
    )
    return {
        "class_counts": class_counts,
        "pixels": pixels,
        "image_sizes": {size: int(count) for size, count in sizes.items()},
    }


def write_class_distribution(path: Path, statistics: dict, class_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(max(4.0, 0.5 * len(class_names) + 2), 3.2))
    bottom = np.zeros(len(class_names))
    for split in SPLITS:
        counts = np.array([statistics["class_counts"][split][name] for name in class_names])
        axes.bar(range(len(class_names)), counts, bottom=bottom, label=split)
        bottom += counts
    axes.set_xticks(range(len(class_names)), class_names, rotation=45 if len(class_names) > 10 else 0, ha="right")
    axes.set_ylabel("images")
    axes.set_title("Images per class and split")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def write_sample_grid(path: Path, samples: dict[str, list[np.ndarray]], class_names: list[str]) -> None:
    """One row per class, its first samples (in the seeded shard order) as thumbnails."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    columns = max([len(images) for images in samples.values()] + [1])
    figure, axes = pyplot.subplots(
        len(class_names), columns, squeeze=False, figsize=(1.0 * columns + 1, 1.0 * len(class_names) + 0.3)
    )
    for row, name in enumerate(class_names):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            images = samples.get(name, [])
            if column < len(images):
                image = images[column]
                axis.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
            else:
                axis.axis("off")
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center")
    figure.suptitle("Samples per class")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def make_thumbnail(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    if max(image.shape[:2]) <= THUMBNAIL_SIZE:
        return image.copy()
    picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    array = np.asarray(picture)
    return array.reshape(*array.shape[:2], -1)
