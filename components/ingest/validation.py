"""Great Expectations over the ingest tables: reads the per-example rows; writes Data Docs (and nothing else).

Four tables: "files" (one row per file: could it be read?), "examples" (one row per kept image: label, size,
channels, pixel range and mean, sha256, perceptual hash, near-duplicate group, and the file in another of the
user's own splits it nearly duplicates), "duplicates" (one row per copy identical to another file after decoding)
and "classes" (one row per class: count, share, count per split). Their suites come from `ingest.expectations`; a
failure is reported, never raised, so Data Docs are written either way. `describe_failures` turns each failed
expectation into a sentence that says what is wrong, with which files, and what to change: the expectation's
own name stays in the Data Docs.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from components.ingest.split import DUPLICATE_COLUMNS, ExamplePlan
from tfpipe.config import ExpectationParams
from tfpipe.records import SPLITS

MARKUP = re.compile(r"[<>&\"']")  # what html.escape changes
INDEX_COLUMNS = {"files": "file", "examples": "file", "duplicates": "file", "classes": "class_name"}
REQUIRED_COLUMNS = ("split", "label", "height", "width", "channels", "min", "max", "mean", "sha256", "phash")


def build_tables(rows: list[dict], plan: ExamplePlan, class_names: list[str]) -> dict[str, pd.DataFrame]:
    """The four tables from ingest's rows and its plan (components/ingest/split.py)."""
    candidates = plan.examples
    split_of = dict(zip(candidates["file"], candidates["split"], strict=True))
    files = pd.DataFrame(
        [
            {
                "file": row["file"],
                "split": split_of.get(row["file"], "dropped"),
                "class_name": row["class_name"],
                "label": row["label"],
                "problem": row["problem"],
            }
            for row in rows
            if not row.get("skipped")
        ],
        columns=["file", "split", "class_name", "label", "problem"],
    )
    examples = candidates[candidates["problem"].isna()].drop(columns=["problem", "skipped"], errors="ignore")
    examples = examples.reset_index(drop=True)
    for column in (*REQUIRED_COLUMNS, "near_duplicate_of", "near_duplicate_group", "file", "class_name"):
        if column not in examples:
            examples[column] = pd.Series(dtype=object)
    leading = ["file", "split", "class_name", "label"]
    examples = examples[leading + [column for column in examples.columns if column not in leading]]
    counts = (
        examples.groupby(["class_name", "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=class_names, columns=list(SPLITS), fill_value=0)
    )
    total = counts.sum(axis=1)
    classes = pd.DataFrame(
        {
            "class_name": class_names,
            "count": total.to_numpy(),
            "share": total.to_numpy() / max(1, len(examples)),
            **{split: counts[split].to_numpy() for split in SPLITS},
        }
    )
    duplicates = plan.duplicates if len(plan.duplicates) else pd.DataFrame(columns=DUPLICATE_COLUMNS)
    return {"files": files, "examples": examples, "duplicates": duplicates, "classes": classes}


def build_suites(expectations: ExpectationParams, num_classes: int, has_val: bool, changes: dict) -> dict[str, list]:
    """Expectations per table. `changes` (ingest.describe_data_changes) goes into the notes, so the Data Docs say
    which files were skipped, converted or kept once."""
    import great_expectations as gx

    e, x = expectations, gx.expectations
    copies, groups = changes["duplicates"], changes["near_duplicate_groups"]
    skipped = changes["skipped_files"]
    examples = [
        x.ExpectTableRowCountToBeBetween(min_value=1),
        x.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
        *(x.ExpectColumnValuesToNotBeNull(column=column) for column in REQUIRED_COLUMNS),
        x.ExpectColumnValuesToBeBetween(column="height", min_value=e.image_height, max_value=e.image_height),
        x.ExpectColumnValuesToBeBetween(column="width", min_value=e.image_width, max_value=e.image_width),
        x.ExpectColumnValuesToBeInSet(
            column="channels",
            value_set=[e.channels],
            notes="Every image is converted to this channel count; converted: "
            + (", ".join(f"{name} {count}" for name, count in changes["converted"].items()) or "none"),
        ),
        x.ExpectColumnValuesToBeBetween(column="min", min_value=e.pixel_min),
        x.ExpectColumnValuesToBeBetween(column="max", max_value=e.pixel_max),
        x.ExpectColumnValuesToBeBetween(
            column="mean",
            min_value=e.image_mean_min,
            max_value=e.image_mean_max,
            notes="A blank image has a mean near 0, an inverted one a high mean.",
        ),
        x.ExpectColumnValuesToBeNull(
            column="near_duplicate_of",
            notes=f"Near-identical images (perceptual hashes within {e.near_duplicate_max_distance} of 256 bits, "
            "exact copies too) are grouped and each group kept in one split; this fails only where your own "
            f"train/ and test/ folders put a group on both sides. {groups['groups']} group(s) of "
            f"{groups['images']} images (reports/ingest/near_duplicates.csv).",
        ),
    ]
    duplicates = [
        x.ExpectColumnPairValuesToBeEqual(
            column_A="class_name",
            column_B="duplicate_class",
            notes=f"Files identical after decoding are kept once when their labels agree: {copies['copies_dropped']} "
            f"cop{'y' if copies['copies_dropped'] == 1 else 'ies'} dropped"
            + (f" ({', '.join(copies['files'][:10])})" if copies["files"] else "")
            + "; identical files with different labels fail (reports/ingest/duplicates.csv).",
        )
    ]
    classes = [
        x.ExpectTableRowCountToBeBetween(min_value=2, notes="A classifier needs at least two classes."),
        *(
            [
                x.ExpectTableRowCountToEqual(
                    value=e.num_classes, notes="expectations.num_classes: a class folder added or gone."
                )
            ]
            if e.num_classes is not None
            else []
        ),
        x.ExpectColumnValuesToBeBetween(column="count", min_value=e.min_per_class),
        x.ExpectColumnValuesToBeBetween(column="share", min_value=e.min_class_share, max_value=e.max_class_share),
        x.ExpectColumnValuesToBeBetween(column="train", min_value=1),
        x.ExpectColumnValuesToBeBetween(column="test", min_value=1),
    ]
    if has_val:
        classes.append(x.ExpectColumnValuesToBeBetween(column="val", min_value=1))
    files = [
        x.ExpectColumnValuesToBeNull(
            column="problem",
            notes=f"Files that could not be read as images. {skipped['count']} file(s) that are not images were "
            "skipped" + (f" ({', '.join(skipped['files'][:10])})" if skipped["files"] else "") + ".",
        )
    ]
    return {"files": files, "examples": examples, "duplicates": duplicates, "classes": classes}


def escaped(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its text HTML-escaped: Data Docs paste the values that fail an expectation into HTML as they
    are, so a class folder named `<img src=x onerror=...>` would run in the reader's browser. Escaping both sides
    of every comparison keeps the checks' outcome; `_rows` looks failures up escaped too."""
    copy = table.copy()
    for column in copy.columns:
        if pd.api.types.is_string_dtype(copy[column]) or pd.api.types.is_object_dtype(copy[column]):
            # Only a column that holds a character html.escape changes is mapped (a million rows: seconds saved).
            try:
                marked = copy[column].str.contains(MARKUP, na=False)
            except (AttributeError, TypeError):  # an object column of mixed values
                marked = copy[column].map(lambda value: isinstance(value, str) and bool(MARKUP.search(value)))
            if marked.any():
                copy[column] = copy[column].map(lambda value: html.escape(value) if isinstance(value, str) else value)
    return copy


def key_of(configuration) -> tuple[str, str]:
    """An expectation by its type and arguments (ids and the batch a result ran on differ between suites)."""
    import json

    arguments = {key: value for key, value in configuration.kwargs.items() if key != "batch_id"}
    return configuration.type, json.dumps(arguments, sort_keys=True, default=str)


def run_validation(
    tables: dict[str, pd.DataFrame],
    suites: dict[str, list],
    docs_dir: Path,
    index_columns: dict | None = None,
    rows_of_failures_only: bool = False,
) -> dict:
    """Validates each table with its suite and builds Data Docs into docs_dir; returns {table: result}. A failed
    expectation names its rows by the table's column in index_columns (default: the image tables').

    rows_of_failures_only (a table of a million rows): Great Expectations lists the rows of every expectation that
    any row misses, a passing `mostly` one too, one pandas lookup a row (minutes for a million rows with 2% empty
    cells). So the suites run first with counts only, and the expectations that failed run again, alone, to name
    their rows: Data Docs show both runs, and the results returned hold the second run's items for those."""
    index_columns = index_columns or INDEX_COLUMNS
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="ingest",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        },
    )
    source = context.data_sources.add_pandas("ingest")

    def validate(name: str, table: pd.DataFrame, expectations: list, suite_name: str, rows: bool):
        batch = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe(suite_name)
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
        )
        result_format = (
            {"result_format": "SUMMARY", "unexpected_index_column_names": [index_columns[name]]}
            if rows
            else {"result_format": "BASIC"}
        )
        # Like a checkpoint, a validation reports failures in its result and never raises for them.
        return definition.run(batch_parameters={"dataframe": table}, result_format=result_format)

    results = {}
    for name, table in tables.items():
        table = escaped(table)
        results[name] = validate(name, table, suites[name], name, rows=not rows_of_failures_only)
        failed = {key_of(item.expectation_config) for item in results[name].results if not item.success}
        if rows_of_failures_only and failed:
            retried = [
                expectation.copy(update={"id": None})
                for expectation in suites[name]
                if key_of(expectation.configuration) in failed
            ]
            named = {
                key_of(item.expectation_config): item
                for item in validate(name, table, retried, f"{name}_failures", True).results
            }
            results[name].results = [
                named.get(key_of(item.expectation_config), item) if not item.success else item
                for item in results[name].results
            ]
    context.build_data_docs(site_names=["ingest"])  # once for all tables: a build takes about a second
    return results


# --- Failures as sentences: what is wrong, which files, what to change ---------------------------------------
