"""Ingest statistics (TFX StatisticsGen's job): reads the per-example table; writes the metrics dict and PNG
pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tfpipe.records import SPLITS

THUMBNAIL_SIZE = 64  # samples are kept as thumbnails, so a folder of huge images costs no memory


class ChannelMoments:
    """Running per-channel sums of one split, so mean/std need no pixels kept in memory."""

    def __init__(self, channels: int):
        self.channels, self.pixels = channels, 0
        self.total, self.total_squares = np.zeros(channels), np.zeros(channels)

    def add(self, image: np.ndarray) -> None:
        values = image.reshape(-1, image.shape[2]).astype(np.float64)
        self.add_totals(len(values), values.sum(axis=0), np.square(values).sum(axis=0))

    def add_totals(self, pixels: int, total: np.ndarray, total_squares: np.ndarray) -> None:
        """One image's pixel count and per-channel sums (a wrong channel count fails the suite: left out here)."""
        if len(total) != self.channels:
            return
        self.pixels += pixels
        self.total += total
        self.total_squares += total_squares

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
    matplotlib.rcParams["text.parse_math"] = False  # file and class names are drawn as text, never as mathtext
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
    """One row per class, its first samples (in the seeded shard order) as thumbnails, drawn as one mosaic
    image on one axes: a subplot per thumbnail took seconds at 10 classes and minutes at hundreds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    thumbnails = [image for images in samples.values() for image in images]
    columns = max([len(images) for images in samples.values()] + [1])
    height = max([image.shape[0] for image in thumbnails] + [1])
    width = max([image.shape[1] for image in thumbnails] + [1])
    color = any(image.shape[2] > 1 for image in thumbnails)
    gap = max(1, height // 14)
    mosaic = np.full(
        (len(class_names) * (height + gap) - gap, columns * (width + gap) - gap, 3 if color else 1), 255, np.uint8
    )
    for row, name in enumerate(class_names):
        for column, image in enumerate(samples.get(name, [])):
            image = np.repeat(image, 3, axis=2) if color and image.shape[2] == 1 else image[..., : 3 if color else 1]
            top = row * (height + gap) + (height - image.shape[0]) // 2
            left = column * (width + gap) + (width - image.shape[1]) // 2
            mosaic[top : top + image.shape[0], left : left + image.shape[1]] = image
    cell = min(0.9, 60 / max(len(class_names), 1))  # inches per thumbnail; hundreds of classes stay drawable
    label_width = 0.1 * max([len(name) for name in class_names] + [1])
    image_width = columns * cell
    image_height = image_width * mosaic.shape[0] / mosaic.shape[1]
    figure, axes = pyplot.subplots(figsize=(image_width + label_width + 0.4, image_height + 0.6))
    axes.imshow(mosaic if color else mosaic[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([row * (height + gap) + height / 2 for row in range(len(class_names))], class_names)
    axes.tick_params(length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    axes.set_title("Samples per class")
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
