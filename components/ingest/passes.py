"""Ingest's two passes over data/raw: the first decodes every file once with the shared decoder (tfpipe/images.py),
describes it and appends its record to a pool file; the second copies each kept record to its split's shards. Reads
data/raw, writes into the staging folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.ingest import report as ingest_report
from components.ingest.layout import RawExample, RawLayout
from tfpipe.config import IngestParams, Params
from tfpipe.images import DecodeRules, NotAnImage, decode_image, describe_image, is_image_name
from tfpipe.records import SPLITS

POOL_FILE = ".pool.tfrecord"  # the first pass's records, in the staging folder until the second pass routes them


def decode_rules(params: IngestParams) -> DecodeRules:
    """The decoding every reader of this dataset's images applies (recorded in the manifest, exported with the
    model, applied by pipelines.predict)."""
    return DecodeRules(
        channels=params.expectations.channels,
        alpha_background=params.alpha_background,
        max_pixels=params.max_image_pixels,
    )


def target_size(params: IngestParams) -> tuple[int, int] | None:
    """The size images are fitted to (ingest.resize), or None: sizes are checked, not changed."""
    expectations = params.expectations
    return (expectations.image_height, expectations.image_width) if params.resize else None


def read_example(
    example: RawExample, rules: DecodeRules, size: tuple[int, int] | None
) -> tuple[dict, np.ndarray | None]:
    """One raw file's row (its `problem` or `skipped` reason set when it has no pixels) and its decoded pixels."""
    row = {
        "file": example.file,
        "class_name": example.class_name,
        "given_split": example.split,
        "problem": example.problem,
        "skipped": None,
    }
    if example.problem:
        return row, None
    try:
        decoded = decode_image(example.path.read_bytes(), rules, size)
    except NotAnImage as error:
        if is_image_name(example.file):
            row["problem"] = f"named like an image, but {error}"
        else:
            row["skipped"] = f"not an image ({Path(example.file).suffix or 'no extension'})"
        return row, None
    except (OSError, ValueError) as error:
        row["problem"] = str(error)
        return row, None
    pixels = decoded.pixels
    row.update(
        # Stored as grayscale, or colour whose channels agree (a grey picture saved as RGB): the schema's test.
        grayscale=decoded.source_grayscale or (pixels.shape[2] == 3 and bool((pixels == pixels[..., :1]).all())),
        source_mode=decoded.source_mode,
        source_height=decoded.source_height,
        source_width=decoded.source_width,
        source_grayscale=decoded.source_grayscale,
        orientation=decoded.orientation,
        conversions=";".join(decoded.conversions),
        **describe_image(decoded.pixels),
    )
    return row, decoded.pixels


def read_rows(layout: RawLayout, params: IngestParams) -> list[dict]:
    """Every file's row, decoded by ingest's rules, without writing anything (the schema command's pass)."""
    rules, size = decode_rules(params), target_size(params)
    label_of = {name: label for label, name in enumerate(layout.class_names)}
    rows = []
    for example in layout.examples:
        row, _ = read_example(example, rules, size)
        rows.append({**row, "label": label_of[example.class_name]})
    return rows


@dataclass
class FirstPass:
    """What the first pass keeps: a row per file (in file order), per-row channel totals and some thumbnails."""

    rows: list[dict]
    totals: dict[int, tuple[int, np.ndarray, np.ndarray]] = field(default_factory=dict)  # row -> pixels, sums
    thumbnails: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # class -> (file, image)


def decode_to_pool(layout: RawLayout, params: Params, pool: Path) -> FirstPass:
    """Decodes each file once, in the seeded shard order, and appends its record to the pool file."""
    import tensorflow as tf

    from tfpipe.records import serialize_example

    rules, size = decode_rules(params.ingest), target_size(params.ingest)
    label_of = {name: label for label, name in enumerate(layout.class_names)}
    result = FirstPass(rows=[{}] * len(layout.examples), thumbnails={name: [] for name in layout.class_names})
    # Twice the samples shown: some may be dropped copies of others.
    keep_thumbnails = 2 * params.ingest.samples_per_class
    with tf.io.TFRecordWriter(str(pool)) as writer:
        records = 0
        for index in np.random.default_rng(params.ingest.seed).permutation(len(layout.examples)):
            example = layout.examples[index]
            row, pixels = read_example(example, rules, size)
            row["label"] = label_of[example.class_name]
            result.rows[index] = row
            if pixels is None:
                continue
            row["record"] = records
            writer.write(serialize_example(pixels, row["label"], example.file))
            records += 1
            values = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
            result.totals[index] = (len(values), values.sum(axis=0), np.square(values).sum(axis=0))
            if len(result.thumbnails[example.class_name]) < keep_thumbnails:
                result.thumbnails[example.class_name].append((example.file, ingest_report.make_thumbnail(pixels)))
    return result


def write_shards(pool: Path, examples: pd.DataFrame, staging: Path, num_shards: int) -> dict[str, int]:
    """Copies each kept record from the pool to its split's shards, round robin, in the pool's (seeded) order."""
    import tensorflow as tf

    from tfpipe.records import shard_paths

    split_of = dict(zip(examples["record"].astype(int), examples["split"], strict=True))
    writers = {
        split: [tf.io.TFRecordWriter(str(path)) for path in shard_paths(staging, split, num_shards)] for split in SPLITS
    }
    written = dict.fromkeys(SPLITS, 0)
    try:
        for record_index, record in enumerate(tf.data.TFRecordDataset(str(pool)).as_numpy_iterator()):
            split = split_of.get(record_index)
            if split is None:  # a copy kept once elsewhere
                continue
            writers[split][written[split] % num_shards].write(record)
            written[split] += 1
    finally:
        for split_writers in writers.values():
            for writer in split_writers:
                writer.close()
    return written


def split_moments(first: FirstPass, examples: pd.DataFrame, channels: int) -> dict:
    """Per-split running channel moments of the kept examples, from the first pass's per-row totals."""
    moments = {split: ingest_report.ChannelMoments(channels) for split in SPLITS}
    index_of = {row["file"]: index for index, row in enumerate(first.rows)}
    for file, split in zip(examples["file"], examples["split"], strict=True):
        moments[split].add_totals(*first.totals[index_of[file]])
    return moments
