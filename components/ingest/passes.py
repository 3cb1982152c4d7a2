"""Ingest's two passes over data/raw: the first decodes every file once with the shared decoder (tfpipe/images.py,
on every core: components/ingest/decode.py), describes it and appends its record to a pool file; the second copies
each kept record to its split's shards. Reads data/raw, writes into the staging folder.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.ingest import report as ingest_report
from components.ingest.decode import decode_rules, read_examples, target_size
from components.ingest.layout import RawLayout
from tfpipe.config import IngestParams, Params
from tfpipe.records import SPLITS

BESIDE = "not an image, beside the class folders"  # the skipped reason of a README or LICENSE.txt there
POOL_FILE = ".pool.tfrecord"  # the first pass's records, in the staging folder until the second pass routes them


def beside_rows(layout: RawLayout) -> list[dict]:
    """The rows of the files beside the class folders that are not images: skipped, counted and listed with the
    other files that are not images (never read)."""
    return [
        {"file": name, "class_name": None, "given_split": None, "problem": None, "label": -1, "skipped": BESIDE}
        for name in layout.beside_folders
    ]


def read_rows(layout: RawLayout, params: IngestParams) -> list[dict]:
    """Every file's row, decoded by ingest's rules, without writing anything (the schema command's pass)."""
    label_of = {name: label for label, name in enumerate(layout.class_names)}
    rows = [{}] * len(layout.examples)
    for index, row, _ in read_examples(layout.examples, decode_rules(params), target_size(params)):
        rows[index] = {**row, "label": label_of[row["class_name"]]}
    return rows + beside_rows(layout)


@dataclass
class FirstPass:
    """What the first pass keeps: a row per file (in file order), per-row channel totals and some thumbnails."""

    rows: list[dict]
    totals: dict[int, tuple[int, np.ndarray, np.ndarray]] = field(default_factory=dict)  # row -> pixels, sums
    thumbnails: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # class -> (file, image)


def decode_to_pool(layout: RawLayout, params: Params, pool: Path) -> FirstPass:
    """Decodes each file once, in the seeded shard order, and appends its record to the pool file."""
    rules, size = decode_rules(params.ingest), target_size(params.ingest)
    order = np.random.default_rng(params.ingest.seed).permutation(len(layout.examples))
    # The workers start (and decode their first chunks) while this process imports TensorFlow (~2 s).
    decoded = read_examples(layout.examples, rules, size, order.tolist())
    first = next(decoded, None)
    import tensorflow as tf

    from tfpipe.records import serialize_example

    label_of = {name: label for label, name in enumerate(layout.class_names)}
    result = FirstPass(rows=[{}] * len(layout.examples), thumbnails={name: [] for name in layout.class_names})
    # Twice the samples shown: some may be dropped copies of others.
    keep_thumbnails = 2 * params.ingest.samples_per_class
    with tf.io.TFRecordWriter(str(pool)) as writer:
        records = 0
        for index, row, pixels in itertools.chain([first] if first else [], decoded):
            example = layout.examples[index]
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
    result.rows += beside_rows(layout)
    return result


def write_shards(pool: Path, examples: pd.DataFrame, staging: Path, num_shards: int) -> dict[str, int]:
    """Copies each kept record from the pool to its split's shards, round robin, in the pool's (seeded) order: the
    framed bytes as the first pass wrote them (tfpipe/records.framed_records), nothing decoded or encoded again."""
    from tfpipe.records import framed_records, shard_paths

    split_of = dict(zip(examples["record"].astype(int), examples["split"], strict=True))
    streams = {split: [path.open("wb") for path in shard_paths(staging, split, num_shards)] for split in SPLITS}
    written = dict.fromkeys(SPLITS, 0)
    try:
        for record_index, record in enumerate(framed_records(pool)):
            split = split_of.get(record_index)
            if split is None:  # a copy kept once elsewhere
                continue
            streams[split][written[split] % num_shards].write(record)
            written[split] += 1
    finally:
        for split_streams in streams.values():
            for stream in split_streams:
                stream.close()
    return written


def split_moments(first: FirstPass, examples: pd.DataFrame, channels: int) -> dict:
    """Per-split running channel moments of the kept examples, from the first pass's per-row totals."""
    moments = {split: ingest_report.ChannelMoments(channels) for split in SPLITS}
    index_of = {row["file"]: index for index, row in enumerate(first.rows)}
    for file, split in zip(examples["file"], examples["split"], strict=True):
        moments[split].add_totals(*first.totals[index_of[file]])
    return moments
