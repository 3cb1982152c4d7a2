"""What ingest checks in documents, as Great Expectations suites over tables of one row per document, and each
failure as a sentence that names the files and the fix. Reads the tables it is given, writes nothing.

Tables: "documents" (every document read: could it be, is it empty), "examples" (the documents kept: length, a near
copy across your own split folders), "heldout" (val and test: the share of tokens the train split never holds),
"duplicates" (identical documents agree on their label) and "classes" (count, share, present in every split).
"""

from __future__ import annotations

import pandas as pd

from tfpipe.config import Params
from tfpipe.records import SPLITS

INDEX_COLUMNS = {
    "documents": "file",
    "examples": "file",
    "heldout": "file",
    "duplicates": "file",
    "classes": "class_name",
}
NAMED = 5
SCHEMA_HINT = "`python -m pipelines.schema --force` proposes the checks for the documents as they are now"


def classes_table(kept: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    counts = (
        kept.groupby(["class_name", "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=class_names, columns=list(SPLITS), fill_value=0)
    )
    total = counts.sum(axis=1).to_numpy()
    return pd.DataFrame(
        {
            "class_name": class_names,
            "count": total,
            "share": total / max(1, len(kept)),
            **{split: counts[split].to_numpy() for split in SPLITS},
        }
    )


def build_suites(params: Params, has_val: bool, has_heldout: bool) -> dict[str, list]:
    import great_expectations as gx

    x, text = gx.expectations, params.ingest.text
    suites = {
        "documents": [
            x.ExpectColumnValuesToBeNull(column="problem", notes="Files that cannot be read as documents."),
            x.ExpectColumnValuesToBeInSet(
                column="empty", value_set=[False], mostly=1 - text.max_empty_share if text.max_empty_share < 1 else 0
            ),
        ],
        "examples": [
            x.ExpectTableRowCountToBeBetween(min_value=1),
            x.ExpectColumnValuesToBeBetween(column="chars", max_value=text.max_chars),
            x.ExpectColumnValuesToBeNull(column="near_duplicate_of"),
        ],
        "duplicates": [x.ExpectColumnPairValuesToBeEqual(column_A="class_name", column_B="copy_class")],
        "classes": [
            x.ExpectTableRowCountToBeBetween(min_value=2, notes="A classifier needs two classes."),
            x.ExpectColumnValuesToBeBetween(column="count", min_value=text.min_per_class),
            x.ExpectColumnValuesToBeBetween(
                column="share", min_value=text.min_class_share, max_value=text.max_class_share
            ),
            *(x.ExpectColumnValuesToBeBetween(column=split, min_value=1) for split in ("train", "test")),
            *([x.ExpectColumnValuesToBeBetween(column="val", min_value=1)] if has_val else []),
            *([x.ExpectTableRowCountToEqual(value=text.num_classes)] if text.num_classes else []),
        ],
    }
    if has_heldout:
        suites["heldout"] = [x.ExpectColumnMeanToBeBetween(column="oov_share", max_value=text.max_oov_share)]
    return suites


def _files(item, limit: int = NAMED) -> tuple[list[str], int]:
    listed = [str(entry.get("file")) for entry in (item.result.get("partial_unexpected_index_list") or [])[:limit]]
    return listed, int(item.result.get("unexpected_count") or len(listed))


def _listing(listed: list[str], total: int) -> str:
    return ", ".join(listed) + (f" and {total - len(listed)} more" if total > len(listed) else "")


def sentence(table: str, item, frame: pd.DataFrame, params: Params) -> str:
    """One failed expectation as what is wrong, with which files, and what to change."""
    kind, column = item.expectation_config.type, item.expectation_config.kwargs.get("column")
    text = params.ingest.text
    files, total = _files(item)
    if table == "documents" and column == "problem":
        problems = frame.loc[frame["problem"].notna()].head(NAMED)
        named = "; ".join(f"{row.file}: {row.problem}" for row in problems.itertuples())
        return f"{int(frame['problem'].notna().sum())} file(s) cannot be read: {named}"
    if table == "documents":
        empty = frame.loc[frame["empty"], "file"].tolist()
        return (
            f"{len(empty)} empty document(s) ({len(empty) / max(1, len(frame)):.1%}), more than "
            f"ingest.text.max_empty_share {text.max_empty_share} allows: {_listing(empty[:NAMED], len(empty))}. Each "
            "is skipped and counted: raise max_empty_share, or remove the files"
        )
    if column == "chars":
        return (
            f"{total} document(s) longer than ingest.text.max_chars {text.max_chars} characters (length outliers): "
            f"{_listing(files, total)}. Check them (a log file, a whole book in one class?), or raise max_chars"
        )
    if column == "near_duplicate_of":
        leaks = frame.loc[frame["near_duplicate_of"].notna()].head(NAMED)
        named = ", ".join(f"{row.file} ~ {row.near_duplicate_of}" for row in leaks.itertuples())
        return (
            f"{total} document(s) in your test/ folder nearly copy one in train/ (a leak: the test would score what "
            f"training saw): {named}. Move or remove one of each pair, or set ingest.text.near_duplicate_similarity "
            "higher (-1: exact copies only)"
        )
    if kind == "expect_table_row_count_to_be_between" and table == "examples":
        return "no document left to learn from (every one is empty or unreadable)"
    if kind == "expect_column_mean_to_be_between":
        return (
            f"val and test documents hold on average {item.result.get('observed_value', 0):.1%} tokens the train "
            f"split never has, more than ingest.text.max_oov_share {text.max_oov_share}: another language or domain "
            f"in the held-out documents? ({SCHEMA_HINT})"
        )
    if table == "duplicates":
        wrong = frame.loc[~frame["same_label"]].head(NAMED)
        named = "; ".join(
            f"{row.file} ({row.class_name}) = {row.copy_of} ({row.copy_class})" for row in wrong.itertuples()
        )
        return f"identical documents with different labels: {named}. Keep one label for each (remove the others)"
    return _class_sentence(kind, column, frame, params)


def _class_sentence(kind: str, column: str | None, frame: pd.DataFrame, params: Params) -> str:
    text = params.ingest.text
    if kind == "expect_table_row_count_to_be_between":
        return f"{len(frame)} class(es) ({', '.join(frame['class_name'].map(repr))}): a classifier needs two or more"
    if kind == "expect_table_row_count_to_equal":
        return (
            f"{len(frame)} classes where ingest.text.num_classes says {text.num_classes}: a class added or gone "
            f"({', '.join(frame['class_name'].map(repr))}); set num_classes ({SCHEMA_HINT})"
        )
    if column == "count":
        small = frame[frame["count"] < text.min_per_class]
        named = ", ".join(f"{row.class_name!r} ({row.count})" for row in small.itertuples())
        return f"class(es) with fewer than ingest.text.min_per_class {text.min_per_class} documents: {named}"
    if column == "share":
        outside = frame[(frame["share"] < text.min_class_share) | (frame["share"] > text.max_class_share)]
        named = ", ".join(f"{row.class_name!r} {row.share:.1%}" for row in outside.itertuples())
        return (
            f"class balance outside {text.min_class_share:.1%}..{text.max_class_share:.1%} "
            f"(ingest.text.min/max_class_share): {named}"
        )
    small = frame[frame[column] < 1]
    named = ", ".join(f"{row.class_name!r} ({row.count} documents)" for row in small.itertuples())
    return f"class(es) with no document in the {column} split: {named}: add documents to them"


def describe_failures(results: dict, tables: dict[str, pd.DataFrame], params: Params) -> list[str]:
    return [
        sentence(table, item, tables[table], params)
        for table, result in results.items()
        for item in result.results
        if not item.success
    ]
