"""Great Expectations over the ingest tables: reads the per-example rows; writes Data Docs (and nothing else).

Three tables: "files" (one row per file: could it be read?), "examples" (one row per decoded image:
label, size, channels, pixel range and mean, sha256, perceptual hash, near-duplicate partner) and
"classes" (one row per class: count, share, count per split). Their suites come from
`ingest.expectations`; a failure is reported, never raised, so Data Docs are written either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import ExpectationParams

SPLITS = ("train", "val", "test")
INDEX_COLUMNS = {"files": "file", "examples": "file", "classes": "class_name"}  # what a failure names, per table
PRINTED_EXAMPLES = 5
PRINTED_DETAILS = 20  # unreadable files and near-duplicate pairs printed with their reason


def find_near_duplicates(hashes: list[str], splits: np.ndarray, max_distance: int) -> np.ndarray:
    """Per example, the index of the first example in another split whose hash is within max_distance bits, or -1.

    Pigeonhole (multi-index hashing): two hashes within d bits agree exactly on at least one of d+1
    bit blocks, so only examples sharing a block value are compared: no all-pairs distance matrix.
    """
    partner = np.full(len(hashes), -1)
    if max_distance < 0 or len(hashes) < 2:
        return partner
    packed = np.frombuffer(bytes.fromhex("".join(hashes)), np.uint8).reshape(len(hashes), -1)
    words, bits = packed.view(">u8"), np.unpackbits(packed, axis=1)
    _, split_ids = np.unique(splits.astype(str), return_inverse=True)
    for block in np.array_split(np.arange(bits.shape[1]), max_distance + 1):
        keys = np.packbits(bits[:, block], axis=1)
        _, group, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(sizes[group] > 1)
        for members in np.split(
            shared[np.argsort(group[shared], kind="stable")], np.flatnonzero(np.diff(np.sort(group[shared]))) + 1
        ):
            if len(members) < 2 or len(np.unique(split_ids[members])) < 2:
                continue
            distance = np.bitwise_count(words[members][:, None, :] ^ words[members][None, :, :]).sum(axis=2)
            close = (distance <= max_distance) & (split_ids[members][:, None] != split_ids[members][None, :])
            for row, column in zip(*np.nonzero(close), strict=True):
                if partner[members[row]] < 0 or members[column] < partner[members[row]]:
                    partner[members[row]] = members[column]
    return partner


def build_tables(rows: list[dict], class_names: list[str], max_distance: int) -> dict[str, pd.DataFrame]:
    """ "files" (one row per file: could it be read), "examples" (one per decoded image), "classes"."""
    files = pd.DataFrame(rows, columns=["file", "split", "class_name", "label", "problem"])
    examples = pd.DataFrame([row for row in rows if not row["problem"]]).drop(columns="problem", errors="ignore")
    if examples.empty:
        examples = pd.DataFrame(
            columns=[
                "file",
                "split",
                "class_name",
                "label",
                "height",
                "width",
                "channels",
                "min",
                "max",
                "mean",
                "sha256",
                "phash",
            ]
        )
    partner = find_near_duplicates(examples["phash"].tolist(), examples["split"].to_numpy(), max_distance)
    examples["near_duplicate_of"] = [
        examples["file"].iloc[j] + f" ({examples['split'].iloc[j]})" if j >= 0 else None for j in partner
    ]
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
    return {"files": files, "examples": examples, "classes": classes}


def build_suites(
    expectations: ExpectationParams, num_classes: int, columns: list[str], has_val: bool
) -> dict[str, list]:
    """Expectations per table: "files", "examples" (one row per image) and "classes" (one row per class)."""
    import great_expectations as gx

    e, x = expectations, gx.expectations
    examples = [
        x.ExpectTableRowCountToBeBetween(min_value=1),
        x.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
        *(x.ExpectColumnValuesToNotBeNull(column=column) for column in columns if column != "near_duplicate_of"),
        x.ExpectColumnValuesToBeBetween(column="height", min_value=e.image_height, max_value=e.image_height),
        x.ExpectColumnValuesToBeBetween(column="width", min_value=e.image_width, max_value=e.image_width),
        x.ExpectColumnValuesToBeInSet(column="channels", value_set=[e.channels]),
        x.ExpectColumnValuesToBeBetween(column="min", min_value=e.pixel_min),
        x.ExpectColumnValuesToBeBetween(column="max", max_value=e.pixel_max),
        x.ExpectColumnValuesToBeBetween(
            column="mean",
            min_value=e.image_mean_min,
            max_value=e.image_mean_max,
            notes="A blank image has a mean near 0, an inverted one a high mean.",
        ),
        x.ExpectColumnValuesToBeUnique(column="sha256", notes="Identical pixels; also rules out leaks across splits."),
    ]
    if e.near_duplicate_max_distance >= 0:
        examples.append(
            x.ExpectColumnValuesToBeNull(
                column="near_duplicate_of",
                notes=f"Perceptual hashes within {e.near_duplicate_max_distance} of 256 bits "
                "of an image in another split: a likely leak between splits.",
            )
        )
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
    files = [x.ExpectColumnValuesToBeNull(column="problem", notes="Files that could not be read as images.")]
    return {"files": files, "examples": examples, "classes": classes}


def run_validation(tables: dict[str, pd.DataFrame], suites: dict[str, list], docs_dir: Path) -> dict:
    """Validates each table with its suite and builds Data Docs into docs_dir; returns {table: result}."""
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
    results = {}
    for name, table in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=suites[name]))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        # Like a checkpoint, a validation reports failures in its result and never raises for them.
        results[name] = definition.run(
            batch_parameters={"dataframe": table},
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [INDEX_COLUMNS[name]]},
        )
    context.build_data_docs(site_names=["ingest"])  # once for all tables: a build takes about a second
    return results


def describe_failures(results: dict, tables: dict[str, pd.DataFrame]) -> list[str]:
    """One line per failed expectation: table, type, column, bounds, unexpected count, a few examples."""
    lines = []
    for table, result in results.items():
        for item in (item for item in result.results if not item.success):
            kwargs = {k: v for k, v in item.expectation_config.kwargs.items() if k != "batch_id"}
            column = f"({kwargs.pop('column')})" if "column" in kwargs else ""
            rows = (item.result.get("partial_unexpected_index_list") or [])[:PRINTED_EXAMPLES]
            names = ", ".join(str(row[INDEX_COLUMNS[table]]) for row in rows)
            detail = (
                f"{item.result['unexpected_count']} unexpected, e.g. {names}"
                if "unexpected_count" in item.result
                else f"observed {item.result.get('observed_value')!r}"
            )
            lines.append(f"  {table}: {item.expectation_config.type}{column} {kwargs}: {detail}")
    problems = tables["files"].dropna(subset=["problem"])
    lines += [f"    {row.file}: {row.problem}" for row in problems.head(PRINTED_DETAILS).itertuples()]
    duplicates = tables["examples"].dropna(subset=["near_duplicate_of"])
    lines += [
        f"    {row.file} ({row.split}) ~ {row.near_duplicate_of}"
        for row in duplicates.head(PRINTED_DETAILS).itertuples()
    ]
    if hidden := max(0, len(problems) - PRINTED_DETAILS) + max(0, len(duplicates) - PRINTED_DETAILS):
        lines.append(f"    ... and {hidden} more (see the Data Docs)")
    return lines
