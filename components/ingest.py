"""Reads data/raw (any layout of components/ingest_layout.py); writes data/prepared, reports/ingest,
metrics/ingest.json.

Two passes, no pixels kept in memory. The first reads every file in a seeded order and decodes it with the one
decoder every reader of user images shares (pipelines/images.py: EXIF orientation applied, converted to
`expectations.channels`, transparency composited on `ingest.alpha_background`, 16-bit scaled to 8 bits, and with
`ingest.resize` centre-cropped and resized to the expected size), describes it (a row of the per-example table)
and appends its record to a pool file. Then the rows decide, without pixels, what is kept and where
(components/ingest_split.py: exact duplicates kept once, near duplicates grouped in one split, a group-aware
stratified split), and the second pass copies each kept record from the pool to its split's shards. The Great
Expectations suites run on the tables, Data Docs and pictures are written either way, and only a passing run
moves the staging folder to data/prepared.

Files that are not images (`notes.txt`: Pillow cannot identify them and the extension is not an image one) are
skipped and counted. A file named like an image that is not one, a truncated or corrupt image, an empty file, an
image above `ingest.max_image_pixels` and a symlink leading outside data/raw are each a `problem` that fails the
suite, named.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components import ingest_report, ingest_split, ingest_validation
from components.ingest_layout import LayoutError, RawExample, RawLayout, read_layout
from pipelines import paths
from pipelines.config import IngestParams, Params, load_params
from pipelines.images import DecodeRules, NotAnImage, decode_image, describe_image, is_image_name
from pipelines.outputs import atomic_directory, run_stage, write_csv, write_json

SPLITS = ("train", "val", "test")  # pipelines.records.SPLITS, without importing TensorFlow
POOL_FILE = ".pool.tfrecord"  # the first pass's records, in the staging folder until the second pass routes them
LISTED = 20  # files listed per kind in metrics/ingest.json (every one is in the reports' CSV files)


class IngestError(ValueError):
    """The raw data cannot be ingested; the message names every offending file or folder."""


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

    from pipelines.records import serialize_example

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

    from pipelines.records import shard_paths

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


def describe_data_changes(rows: list[dict], plan: ingest_split.ExamplePlan) -> dict:
    """What ingest did to the folder that a user should know: skipped files, conversions, duplicates, groups."""
    skipped = [row for row in rows if row.get("skipped")]
    kept = plan.examples[plan.examples["problem"].isna()] if "problem" in plan.examples else plan.examples
    conversions = Counter(
        name for value in kept.get("conversions", pd.Series(dtype=object)).dropna() for name in value.split(";") if name
    )
    copies = plan.duplicates[plan.duplicates["same_label"]]
    return {
        "skipped_files": {
            "count": len(skipped),
            "by_reason": dict(Counter(row["skipped"] for row in skipped)),
            "files": [row["file"] for row in skipped[:LISTED]],
        },
        "converted": dict(sorted(conversions.items())),
        "duplicates": {
            "copies_dropped": len(copies),  # identical after decoding, same label: kept once
            "files": [f"{row.file} = {row.duplicate_of}" for row in copies.head(LISTED).itertuples()],
        },
        "near_duplicate_groups": {
            "groups": len(plan.group_sizes),
            "images": int(plan.group_sizes.sum()),
            "largest": int(plan.group_sizes.max()) if len(plan.group_sizes) else 0,
        },
    }


def build_manifest(
    tables: dict[str, pd.DataFrame],
    class_names: list[str],
    params: IngestParams,
    source: str,
    layout: str,
) -> dict:
    from pipelines.records import shard_paths

    classes, expectations = tables["classes"], params.expectations
    splits = {
        split: {
            "count": int(classes[split].sum()),
            "shards": [path.name for path in shard_paths(".", split, params.num_shards)],
            "class_counts": dict(zip(class_names, classes[split].astype(int).tolist(), strict=True)),
        }
        for split in SPLITS
    }
    return {
        "class_names": class_names,
        "num_examples": len(tables["examples"]),
        "splits": splits,
        "image_shape": [expectations.image_height, expectations.image_width, expectations.channels],
        # How a file becomes the pixels above: export ships these with the model and pipelines.predict applies them.
        "decoding": {**decode_rules(params).to_dict(), "resize": params.resize},
        "source": source,
        "layout": layout,
        "examples_file": "examples.csv",
    }


def plan(first: FirstPass, params: IngestParams) -> ingest_split.ExamplePlan:
    return ingest_split.plan_examples(
        first.rows,
        max_distance=params.expectations.near_duplicate_max_distance,
        val_fraction=params.val_fraction,
        test_fraction=params.test_fraction,
        seed=params.seed,
    )


def write_reports(
    reports: Path,
    first: FirstPass,
    tables: dict[str, pd.DataFrame],
    layout: RawLayout,
    params: Params,
    changes: dict,
) -> tuple[dict, dict]:
    """Pictures, the duplicate and skipped-file lists, Data Docs and statistics; returns (results, statistics)."""
    examples, expectations = tables["examples"], params.ingest.expectations
    statistics = ingest_report.build_statistics(
        examples, layout.class_names, split_moments(first, examples, expectations.channels)
    )
    dropped = set(tables["duplicates"].loc[tables["duplicates"]["same_label"], "file"])
    samples = {
        name: [image for file, image in thumbnails if file not in dropped][: params.ingest.samples_per_class]
        for name, thumbnails in first.thumbnails.items()
    }
    ingest_report.write_class_distribution(reports / "class_distribution.png", statistics, layout.class_names)
    ingest_report.write_sample_grid(reports / "samples.png", samples, layout.class_names)
    write_csv(reports / "duplicates.csv", tables["duplicates"])
    grouped = examples[examples["near_duplicate_group"] >= 0]
    write_csv(
        reports / "near_duplicates.csv",
        grouped.sort_values(["near_duplicate_group", "file"])[["near_duplicate_group", "file", "class_name", "split"]],
    )
    skipped = [{"file": row["file"], "reason": row["skipped"]} for row in first.rows if row.get("skipped")]
    write_csv(reports / "skipped_files.csv", pd.DataFrame(skipped, columns=["file", "reason"]))
    suites = ingest_validation.build_suites(
        expectations,
        len(layout.class_names),
        has_val=bool((examples["split"] == "val").any()),
        changes=changes,
    )
    results = ingest_validation.run_validation(tables, suites, docs_dir=reports / "data_docs")
    if "source_mode" in examples:  # every stated conversion, counted: nothing changes silently
        statistics["source_modes"] = {
            str(mode): int(count)
            for mode, count in examples["source_mode"].dropna().value_counts().sort_index().items()
        }
        statistics["converted_images"] = int((examples["conversions"].fillna("") != "").sum())
    statistics.update(changes)
    write_json(reports / "statistics.json", statistics)
    return results, statistics


def ingest(params: Params) -> dict:
    """The whole stage; returns the metrics, raises IngestError on bad data (after writing the reports)."""
    from pipelines.records import MANIFEST

    raw_dir = paths.RAW
    try:
        layout = read_layout(raw_dir)
    except LayoutError as error:
        raise IngestError(str(error)) from None
    # Both outputs appear whole or not at all. The reports (Data Docs, pictures, statistics) are complete
    # for a failed validation too, and that is when the user needs them; the prepared data is not.
    with (
        atomic_directory(paths.PREPARED) as staging,
        atomic_directory(paths.INGEST_REPORTS, replace_on=(IngestError,)) as reports,
    ):
        start = time.perf_counter()
        pool = staging / POOL_FILE
        first = decode_to_pool(layout, params, pool)
        seconds = time.perf_counter() - start
        print(
            f"ingest: read {len(first.rows):,} files in {seconds:.1f} s "
            f"({len(first.rows) / max(seconds, 1e-9):,.0f} images/s)"
        )
        example_plan = plan(first, params.ingest)
        tables = ingest_validation.build_tables(first.rows, example_plan, layout.class_names)
        changes = describe_data_changes(first.rows, example_plan)
        results, statistics = write_reports(reports, first, tables, layout, params, changes)
        outcomes = [item.success for result in results.values() for item in result.results]
        validation = {"evaluated": len(outcomes), "passed": sum(outcomes)}
        write_json(
            reports / "validation.json",
            {"success": all(outcomes), **validation, "tables": {k: v.describe_dict() for k, v in results.items()}},
        )
        if not all(outcomes):
            failures = ingest_validation.describe_failures(results, tables, params.ingest)
            raise IngestError(
                f"{len(failures)} problem(s) with the data in {raw_dir} "
                f"(details: {paths.INGEST_REPORTS / 'data_docs/index.html'}):\n" + "\n".join(failures)
            )
        write_shards(pool, tables["examples"], staging, params.ingest.num_shards)
        pool.unlink()
        manifest = build_manifest(tables, layout.class_names, params.ingest, params.data.source, layout.kind)
        write_json(staging / MANIFEST, manifest)
        write_csv(
            staging / manifest["examples_file"],
            tables["examples"].drop(columns=["record", "problem", "skipped", "given_split"], errors="ignore"),
        )
    metrics = {
        "num_examples": manifest["num_examples"],
        "num_classes": len(layout.class_names),
        "layout": layout.kind,
        "hidden_files_skipped": layout.hidden_files,
        "splits": {split: manifest["splits"][split]["count"] for split in SPLITS},
        "validation": validation,
        **statistics,
    }
    write_json(paths.INGEST_METRICS, metrics)
    return metrics


def main() -> None:
    params = load_params()
    try:
        metrics = ingest(params)
    except IngestError as error:
        print(f"ingest failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    notes = ingest_validation.describe_changes(metrics)
    print(
        f"ingest: {metrics['num_examples']} examples {metrics['splits']} -> {paths.PREPARED}, "
        f"data docs: {paths.INGEST_REPORTS / 'data_docs/index.html'}" + "".join(f"\n  {note}" for note in notes)
    )


if __name__ == "__main__":
    run_stage("ingest", main)
