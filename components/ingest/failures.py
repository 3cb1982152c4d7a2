"""Each failed expectation as a sentence: what is wrong, which files, and the param or command that fixes it (the
expectation's own name stays in the Data Docs); and what ingest changed, in words. Reads the validation results and
tables, writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from components.ingest.validation import INDEX_COLUMNS, escaped
from tfpipe.config import IngestParams


class IngestError(ValueError):
    """The raw data cannot be ingested; the message names every offending file or folder (or column and rows)."""


NAMED = 5  # files named in a sentence (the Data Docs and reports/ingest/*.csv list every one)


SCHEMA_HINT = "`python -m pipelines.schema --force` proposes expectations for the folder as it is now"


@dataclass(frozen=True)
class Failed:
    """The rows a failed expectation names (up to 20 of them) and how many rows failed it in all."""

    frame: pd.DataFrame
    total: int

    def itertuples(self):
        return self.frame.itertuples()


def _rows(table: pd.DataFrame, item, column: str) -> Failed:
    names = [row[column] for row in item.result.get("partial_unexpected_index_list") or []]  # escaped
    frame = table[escaped(table[[column]])[column].isin(names)] if names else table.iloc[:0]
    return Failed(frame, int(item.result.get("unexpected_count", len(frame))))


def _size_sentence(rows: Failed, params: IngestParams, side: str) -> str:
    e = params.expectations
    expected = e.image_height if side == "height" else e.image_width
    sizes = [f"{row.file} ({row.height}x{row.width})" for row in rows.itertuples()]
    fix = (
        "set ingest.resize: true to centre-crop and resize every image to "
        f"{e.image_height}x{e.image_width}, or change ingest.expectations.image_height/image_width"
        if not params.resize
        else "this should not happen with ingest.resize: true; report it"
    )
    return (
        f"{rows.total} image(s) are not {expected} px {'high' if side == 'height' else 'wide'}: "
        f"{_listing(sizes, rows.total, 'data_docs')}. Fix: {fix} ({SCHEMA_HINT})."
    )


def _pixel_sentence(rows: Failed, params: IngestParams, column: str) -> str:
    e = params.expectations
    values = [f"{row.file} ({getattr(row, column)})" for row in rows.itertuples()]
    if column == "mean":
        return (
            f"{rows.total} image(s) have a mean pixel value outside {e.image_mean_min}..{e.image_mean_max}: "
            f"{_listing(values, rows.total, 'data_docs')}. Blank, nearly uniform or inverted images? Look at them; "
            "if they belong in the data, widen ingest.expectations.image_mean_min/image_mean_max "
            f"({SCHEMA_HINT})."
        )
    bound = f"pixel_min {e.pixel_min}" if column == "min" else f"pixel_max {e.pixel_max}"
    return (
        f"{rows.total} image(s) have pixels beyond ingest.expectations.{bound}: "
        f"{_listing(values, rows.total, 'data_docs')}. If they are right, change {bound.split()[0]} ({SCHEMA_HINT})."
    )


def _class_sentence(rows: Failed, params: IngestParams, column: str, plan_sizes: int) -> str:
    e = params.expectations
    if column == "count":
        listed = [f"{row.class_name} ({row.count})" for row in rows.itertuples()]
        return (
            f"{rows.total} class(es) have fewer than ingest.expectations.min_per_class = {e.min_per_class} images "
            f"(identical copies count once): {_listing(listed, rows.total, 'statistics.json')}. Fix: add images "
            "to these classes, or lower min_per_class."
        )
    if column == "share":
        listed = [f"{row.class_name} ({row.share:.3f})" for row in rows.itertuples()]
        return (
            f"{rows.total} class(es) hold a share of the images outside "
            f"{e.min_class_share}..{e.max_class_share}: {_listing(listed, rows.total, 'statistics.json')}. "
            "Fix: rebalance the classes, or widen ingest.expectations.min_class_share/max_class_share."
        )
    listed = [f"{row.class_name} ({row.count} images)" for row in rows.itertuples()]
    fraction = {"test": "ingest.test_fraction", "val": "ingest.val_fraction", "train": "the fractions"}[column]
    groups = (
        f"; near-duplicate groups stay whole (the largest holds {plan_sizes} images): a lower "
        "ingest.expectations.near_duplicate_max_distance splits them finer"
        if plan_sizes > 1
        else ""
    )
    return (
        f"{rows.total} class(es) have no {column} image: {_listing(listed, rows.total, 'statistics.json')}. "
        f"Fix: add images to these classes (with your own train/ and test/ folders, to {column}/<class>/), or "
        f"raise {fraction}{groups}."
    )


def _sentence(table: str, item, tables: dict[str, pd.DataFrame], params: IngestParams) -> str:
    """One failed expectation as a sentence with its fix."""
    kind = item.expectation_config.type
    kwargs = item.expectation_config.kwargs
    column = kwargs.get("column")
    frame = tables[table]
    rows = _rows(frame, item, INDEX_COLUMNS[table])
    e = params.expectations
    grouped = tables["examples"]["near_duplicate_group"]
    largest_group = int(grouped[grouped >= 0].value_counts().max()) if (grouped >= 0).any() else 0
    handlers: dict[tuple[str, str | None], Callable[[], str]] = {
        ("files", "problem"): lambda: (
            f"{rows.total} file(s) could not be read as images: "
            + "; ".join(f"{row.file}: {row.problem}" for row in rows.frame.head(NAMED).itertuples())
            + (f"; and {rows.total - NAMED} more (reports/ingest/data_docs)" if rows.total > NAMED else "")
            + ". Fix: replace them with readable copies or remove them from the folder."
        ),
        ("examples", "height"): lambda: _size_sentence(rows, params, "height"),
        ("examples", "width"): lambda: _size_sentence(rows, params, "width"),
        ("examples", "mean"): lambda: _pixel_sentence(rows, params, "mean"),
        ("examples", "min"): lambda: _pixel_sentence(rows, params, "min"),
        ("examples", "max"): lambda: _pixel_sentence(rows, params, "max"),
        ("examples", "near_duplicate_of"): lambda: (
            f"{rows.total} image(s) in one of your split folders have a near-identical image in another, a leak "
            "between the splits you gave: "
            + _listing(
                [f"{row.file} ~ {row.near_duplicate_of}" for row in rows.itertuples()],
                rows.total,
                "near_duplicates.csv",
            )
            + ". Fix: move or remove one image of each pair (or, if they differ enough, lower "
            f"ingest.expectations.near_duplicate_max_distance, now {e.near_duplicate_max_distance}; -1 turns off "
            "the near-duplicate check, identical copies are still caught)."
        ),
        ("duplicates", None): lambda: (
            f"{rows.total} file(s) are identical, after decoding, to a file with another label: "
            + _listing(
                [
                    f"{row.file} ({row.class_name}) = {row.duplicate_of} ({row.duplicate_class})"
                    for row in rows.itertuples()
                ],
                rows.total,
                "duplicates.csv",
            )
            + ". Fix: one of each pair has the wrong label: move it to its class folder, or remove it."
        ),
        ("classes", "count"): lambda: _class_sentence(rows, params, "count", largest_group),
        ("classes", "share"): lambda: _class_sentence(rows, params, "share", largest_group),
        ("classes", "train"): lambda: _class_sentence(rows, params, "train", largest_group),
        ("classes", "test"): lambda: _class_sentence(rows, params, "test", largest_group),
        ("classes", "val"): lambda: _class_sentence(rows, params, "val", largest_group),
    }
    if table == "classes" and kind == "expect_table_row_count_to_be_between":
        return (
            f"only {len(frame)} class(es) found ({', '.join(frame['class_name'])}): a classifier needs at least two. "
            "Fix: put each class's images in a folder of its own, data/raw/<class>/<image>."
        )
    if table == "classes" and kind == "expect_table_row_count_to_equal":
        return (
            f"{len(frame)} classes found, ingest.expectations.num_classes is {e.num_classes}: a class folder was "
            f"added or removed (classes now: {', '.join(frame['class_name'][:20])}). Fix: if intended, set "
            f"num_classes to {len(frame)} or null, or rerun the schema ({SCHEMA_HINT})."
        )
    if table == "examples" and kind == "expect_table_row_count_to_be_between":
        return (
            "no readable image in the folder. Fix: copy your images in with "
            "`python -m pipelines.materialize --source folder --from DIR`."
        )
    handler = handlers.get((table, column if table != "duplicates" else None))
    if handler is not None:
        return handler()
    return (
        f"{rows.total} row(s) of the {table} table fail {kind} on {column}: "
        f"{_listing(list(rows.frame[INDEX_COLUMNS[table]].astype(str)), rows.total, 'data_docs')} (an internal check; "
        "please report it with the Data Docs)."
    )


def describe_failures(results: dict, tables: dict[str, pd.DataFrame], params: IngestParams) -> list[str]:
    """One sentence per failed expectation: what is wrong, which files, and the param or command that fixes it."""
    return [
        f"  - {_sentence(table, item, tables, params)}"
        for table, result in results.items()
        for item in result.results
        if not item.success
    ]


def describe_changes(metrics: dict) -> list[str]:
    """What ingest did to the folder, in words, for the stage's summary (empty when it used every file as it was)."""
    from tfpipe.images import CONVERSIONS

    notes = []
    skipped = metrics.get("skipped_files", {})
    if skipped.get("count"):
        notes.append(
            f"{skipped['count']} file(s) that are not images skipped, e.g. {', '.join(skipped['files'][:3])} "
            "(reports/ingest/skipped_files.csv)"
        )
    for name, count in metrics.get("converted", {}).items():
        notes.append(f"{count} image(s) {CONVERSIONS.get(name, name)}")
    copies = metrics.get("duplicates", {})
    if copies.get("copies_dropped"):
        notes.append(
            f"{copies['copies_dropped']} identical cop{'y' if copies['copies_dropped'] == 1 else 'ies'} kept once, "
            f"e.g. {', '.join(copies['files'][:2])} (reports/ingest/duplicates.csv)"
        )
    groups = metrics.get("near_duplicate_groups", {})
    if groups.get("groups"):
        notes.append(
            f"{groups['groups']} near-duplicate group(s) of {groups['images']} images, each kept in one split "
            "(reports/ingest/near_duplicates.csv)"
        )
    return notes


def _listing(items: list[str], total: int, what: str) -> str:
    shown = ", ".join(items[:NAMED])
    return f"{shown}{f' and {total - NAMED} more' if total > NAMED else ''} (all in reports/ingest/{what})"
