"""The image kind's ingest: reads data/raw (any layout of components/ingest/layout.py); writes data/prepared,
reports/ingest, metrics/ingest.json (the headline) and reports/ingest/summary.json (the rest).

Two passes, no pixels kept in memory. The first reads every file in a seeded order and decodes it with the one
decoder every reader of user images shares (tfpipe/images.py: EXIF orientation applied, converted to
`expectations.channels`, transparency composited on `ingest.alpha_background`, 16-bit scaled to 8 bits, and with
`ingest.resize` centre-cropped and resized to the expected size), describes it (a row of the per-example table)
and appends its record to a pool file. Then the rows decide, without pixels, what is kept and where
(components/ingest/split.py: exact duplicates kept once, near duplicates grouped in one split, a group-aware
stratified split), and the second pass copies each kept record from the pool to its split's shards. The Great
Expectations suites run on the tables, Data Docs and pictures are written either way, and only a passing run
moves the staging folder to data/prepared.

Files that are not images (`notes.txt`: Pillow cannot identify them and the extension is not an image one) are
skipped and counted. A file named like an image that is not one, a truncated or corrupt image, an empty file, an
image above `ingest.max_image_pixels` and a symlink leading outside data/raw are each a `problem` that fails the
suite, named.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd

from components.ingest import failures as ingest_failures
from components.ingest import report as ingest_report
from components.ingest import split as ingest_split
from components.ingest import validation as ingest_validation
from components.ingest.decode import decode_rules
from components.ingest.failures import IngestError
from components.ingest.layout import LayoutError, RawLayout, read_layout
from components.ingest.passes import POOL_FILE, FirstPass, decode_to_pool, split_moments, write_shards
from tfpipe import paths, timing
from tfpipe.config import IngestParams, Params
from tfpipe.outputs import atomic_directory, write_csv, write_json
from tfpipe.records import SPLITS

LISTED = 20  # files listed per kind in reports/ingest/summary.json (every one is in the reports' CSV files)


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
    from tfpipe.records import shard_paths

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
    """The whole stage; returns its summary (reports/ingest/summary.json), raises IngestError on bad data (after
    writing the reports)."""
    from tfpipe.records import MANIFEST

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
        timing.lap("read, decode and describe the files")
        seconds = time.perf_counter() - start
        print(
            f"ingest: read {len(first.rows):,} files in {seconds:.1f} s "
            f"({len(first.rows) / max(seconds, 1e-9):,.0f} images/s)"
        )
        example_plan = plan(first, params.ingest)
        tables = ingest_validation.build_tables(first.rows, example_plan, layout.class_names)
        changes = describe_data_changes(first.rows, example_plan)
        timing.lap("duplicates, near duplicates, split")
        results, statistics = write_reports(reports, first, tables, layout, params, changes)
        timing.lap("validation (Great Expectations), Data Docs, pictures")
        outcomes = [item.success for result in results.values() for item in result.results]
        validation = {"evaluated": len(outcomes), "passed": sum(outcomes)}
        write_json(
            reports / "validation.json",
            {"success": all(outcomes), **validation, "tables": {k: v.describe_dict() for k, v in results.items()}},
        )
        if not all(outcomes):
            failures = ingest_failures.describe_failures(results, tables, params.ingest)
            raise IngestError(
                f"{len(failures)} problem(s) with the data in {raw_dir} "
                f"(details: {paths.INGEST_REPORTS / 'data_docs/index.html'}):\n" + "\n".join(failures)
            )
        write_shards(pool, tables["examples"], staging, params.ingest.num_shards)
        timing.lap("write the shards")
        pool.unlink()
        manifest = build_manifest(tables, layout.class_names, params.ingest, params.data.source, layout.kind)
        write_json(staging / MANIFEST, manifest)
        write_csv(
            staging / manifest["examples_file"],
            tables["examples"].drop(columns=["record", "problem", "skipped", "given_split"], errors="ignore"),
        )
        summary = {
            "num_examples": manifest["num_examples"],
            "num_classes": len(layout.class_names),
            "layout": layout.kind,
            "hidden_files_skipped": layout.hidden_files,
            "splits": {split: manifest["splits"][split]["count"] for split in SPLITS},
            "validation": validation,
            **statistics,
        }
        write_json(reports / "summary.json", summary)
    return summary


def headline(summary: dict) -> dict:
    """metrics/ingest.json: what a user compares across experiments (`dvc exp show`, `dvc metrics diff`): the
    images per split, the classes and what ingest dropped, converted or skipped. The rest of the summary (sizes,
    per-class counts, pixel statistics, the files named) is in reports/ingest/summary.json."""
    return {
        "images": dict(summary["splits"]),
        "classes": summary["num_classes"],
        "copies_dropped": summary.get("duplicates", {}).get("copies_dropped", 0),
        "converted": summary.get("converted_images", 0),
        "skipped": summary.get("skipped_files", {}).get("count", 0) + summary["hidden_files_skipped"],
    }


def describe_changes(summary: dict) -> list[str]:
    """What ingest changed in the folder, in words (printed after the stage's summary line)."""
    return ingest_failures.describe_changes(summary)


def describe(summary: dict) -> str:
    return f"{summary['num_examples']} examples {summary['splits']}"
