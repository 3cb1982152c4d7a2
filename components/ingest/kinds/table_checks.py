"""What ingest checks in a table, as Great Expectations column expectations (their native ground), and each failure
as a sentence that names the column, a few rows and the fix. Reads the tables it is given, writes nothing (the
stage runs the suites with components/ingest/validation.py, which writes Data Docs).

Four tables: "rows" (every row of the file as text, empty cells null: the columns, numbers and dates that parse,
categories, empty cells, constant columns), "values" (the kept rows parsed: ranges and the row count), and
"classes" (a classification: rows per class and split) or "splits" (a regression: rows per split).
"""

from __future__ import annotations

import html

import pandas as pd

from tfpipe.config import ColumnParams, Params
from tfpipe.tables import ISO_DATE_PATTERN, ISO_FORMAT, NUMBER_PATTERN, ROW

INDEX_COLUMNS = {"rows": ROW, "values": ROW, "classes": "class_name", "splits": "split"}
NAMED = 5  # rows named in a sentence (Data Docs list up to 20, reports/ingest/*.csv every one)
SCHEMA_HINT = "or `python -m pipelines.schema --force` to propose the schema of the table as it is now"


def build_suites(params: Params, rows, has_val: bool) -> dict[str, list]:
    """Expectations per table, from ingest.table.columns and data.target. `rows`: components/ingest/kinds/table_rows's
    TableRows (which columns the file has, which it stores as numbers already)."""
    import great_expectations as gx

    x, table, target = gx.expectations, params.ingest.table, params.data.target
    checks = [x.ExpectTableColumnsToMatchSet(column_set=[ROW, *table.columns], exact_match=True)]
    values = [
        x.ExpectTableRowCountToBeBetween(
            min_value=table.min_rows, notes="ingest.table.min_rows: rows kept (with a target, copies kept once)"
        )
    ]
    for name, spec in table.columns.items():
        if name not in rows.columns:
            continue
        if spec.type == "numeric" and name not in rows.native:
            checks.append(x.ExpectColumnValuesToMatchRegex(column=name, regex=NUMBER_PATTERN, notes="a number"))
        if spec.type == "date" and name not in rows.native:
            checks.append(
                x.ExpectColumnValuesToMatchRegex(column=name, regex=ISO_DATE_PATTERN, notes="an ISO 8601 date")
                if (spec.format or ISO_FORMAT) == ISO_FORMAT
                else x.ExpectColumnValuesToMatchStrftimeFormat(column=name, strftime_format=spec.format)
            )
        if spec.categories:
            checks.append(x.ExpectColumnValuesToBeInSet(column=name, value_set=list(spec.categories)))
        if spec.role == "feature" and name != target:
            if spec.max_missing < 1:
                checks.append(x.ExpectColumnValuesToNotBeNull(column=name, mostly=1 - spec.max_missing))
            checks.append(x.ExpectColumnUniqueValueCountToBeBetween(column=name, min_value=2))
        if name == target:  # one value: nothing to learn (a classifier needs two classes)
            checks.append(x.ExpectColumnUniqueValueCountToBeBetween(column=name, min_value=2))
        if spec.type in ("numeric", "date") and (spec.min is not None or spec.max is not None):
            bound = pd.Timestamp if spec.type == "date" else float
            values.append(
                x.ExpectColumnValuesToBeBetween(
                    column=name,
                    min_value=None if spec.min is None else bound(spec.min),
                    max_value=None if spec.max is None else bound(spec.max),
                )
            )
    suites = {"rows": checks, "values": values}
    splits = [x.ExpectColumnValuesToBeBetween(column=split, min_value=1) for split in ("train", "test")]
    if has_val:
        splits.append(x.ExpectColumnValuesToBeBetween(column="val", min_value=1))
    if params.data.task == "classification":
        suites["classes"] = [
            x.ExpectTableRowCountToBeBetween(min_value=2, notes="A classifier needs two classes."),
            *splits,
        ]
    else:
        suites["splits"] = splits
    return suites


def split_table(kept: pd.DataFrame, class_names: list[str] | None) -> tuple[str, pd.DataFrame]:
    """("classes", rows per class and split) for a classification, ("splits", rows per split) for a regression."""
    counts = kept.groupby("split").size().reindex(["train", "val", "test"], fill_value=0)
    if class_names is None:
        return "splits", pd.DataFrame({"split": ["rows"], **{split: [int(counts[split])] for split in counts.index}})
    by_class = (
        kept.groupby(["label", "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=range(len(class_names)), columns=["train", "val", "test"], fill_value=0)
    )
    frame = pd.DataFrame({"class_name": class_names, "count": by_class.sum(axis=1).to_numpy()})
    for split in ("train", "val", "test"):
        frame[split] = by_class[split].to_numpy()
    return "classes", frame


# --- Failures as sentences ---------------------------------------------------------------------------------------


def _cells(item, column: str | None) -> tuple[list[str], int]:
    """'row 12 (abc)' for the rows a failed expectation names, and how many failed in all."""
    listed = []
    for entry in (item.result.get("partial_unexpected_index_list") or [])[:NAMED]:
        value = entry.get(column) if column else None
        shown = "" if value is None or value != value else f" ({html.unescape(str(value))!r})"
        listed.append(f"row {entry.get(ROW)}{shown}")
    return listed, int(item.result.get("unexpected_count") or len(listed))


def _listing(listed: list[str], total: int) -> str:
    more = f" and {total - len(listed)} more" if total > len(listed) else ""
    return ", ".join(listed) + more


def _column_sentence(kind: str, item, spec: ColumnParams | None, column: str, target: str) -> str:
    listed, total = _cells(item, column)
    key = f"ingest.table.columns.{column}"
    what = "the target" if column == target else "column"
    if kind == "expect_column_values_to_match_regex" and spec is not None and spec.type == "numeric":
        return (
            f"{what} {column!r} holds {total} cell(s) that are not numbers: {_listing(listed, total)}. Fix the cells, "
            f"or, if such a token means an empty cell, add it to {key}.missing_values"
        )
    if kind in ("expect_column_values_to_match_regex", "expect_column_values_to_match_strftime_format"):
        expected = "ISO 8601 (YYYY-MM-DD)" if kind.endswith("regex") else f"the format {spec.format}"
        return (
            f"{what} {column!r} holds {total} cell(s) that are not dates in {expected}: {_listing(listed, total)}. "
            f"Fix the cells, set {key}.format, or list such a token in {key}.missing_values"
        )
    if kind == "expect_column_values_to_be_in_set":
        new = "a class" if column == target else "a category"
        fix = (
            f"add it to {key}.categories to train a classifier that knows it"
            if column == target
            else f"add it to {key}.categories (a served model maps a value it never saw to its out-of-vocabulary "
            "slot; ingest refuses it so that a typo is seen)"
        )
        return f"{what} {column!r} holds {new} never seen in {total} row(s): {_listing(listed, total)}. Fix: {fix}"
    if kind == "expect_column_values_to_not_be_null":
        share = item.result.get("unexpected_percent") or 0.0
        return (
            f"column {column!r} is empty in {total} row(s) ({share:.1f}%), more than {key}.max_missing "
            f"{spec.max_missing if spec else '?'} allows: {_listing(listed, total)}. Fill the cells, or raise "
            "max_missing"
        )
    if kind == "expect_column_unique_value_count_to_be_between":
        if column == target:
            return (
                f"the target {column!r} holds one value in every row ({item.result.get('observed_value')} distinct): "
                "nothing to learn (a classifier needs two classes or more). Check the file and data.target"
            )
        return f"column {column!r} holds one value in every row: nothing to learn from. Set {key}.role: ignored"
    if kind == "expect_column_values_to_be_between":
        return (
            f"{what} {column!r} has {total} value(s) outside {spec.min if spec else '?'}..{spec.max if spec else '?'}: "
            f"{_listing(listed, total)}. Fix the cells, or widen {key}.min / max"
        )
    return f"{column!r}: {kind} failed"


def _table_sentence(kind: str, item, table: str, frame: pd.DataFrame, params: Params) -> str:
    if kind == "expect_table_columns_to_match_set":
        expected, found = set(params.ingest.table.columns), set(frame.columns) - {ROW}
        missing, added = sorted(expected - found), sorted(found - expected)
        return (
            "the table's columns are not the schema's: "
            + "; ".join(
                part
                for part in (
                    f"missing {missing} (in ingest.table.columns)" if missing else "",
                    f"added {added} (not in ingest.table.columns)" if added else "",
                )
                if part
            )
            + f". Restore the file's columns, {SCHEMA_HINT}"
        )
    if kind == "expect_table_row_count_to_be_between" and table == "values":
        return (
            f"{len(frame)} row(s) left with a target (copies kept once), fewer than ingest.table.min_rows "
            f"{params.ingest.table.min_rows}: add rows, or lower min_rows"
        )
    split = item.expectation_config.kwargs.get("column")
    if table == "classes" and split == "count":
        absent = ", ".join(repr(name) for name in frame.loc[frame["count"] < 1, "class_name"])
        return (
            f"the target {params.data.target!r} has no row of the class(es) {absent} that "
            f"ingest.table.columns.{params.data.target}.categories lists: remove them there, or add rows"
        )
    if table == "classes":
        small = frame[(frame[split] < 1) & (frame["count"] > 0)]
        if small.empty:  # only classes without any row: the sentence above says so
            return None
        named = ", ".join(f"{row.class_name!r} ({row.count} rows)" for row in small.head(NAMED).itertuples())
        return (
            f"{len(small)} class(es) have no row in the {split} split: {named}. A class needs enough rows to reach "
            "every split: add rows, or remove the class (its rows, and its name from the target's categories)"
        )
    return (
        f"the {split} split is empty: the table has too few rows with a target to split "
        "(ingest.val_fraction, ingest.test_fraction); add rows"
    )


def describe_failures(results: dict, tables: dict[str, pd.DataFrame], params: Params) -> list[str]:
    """One sentence per failed expectation, columns in the file's order."""
    sentences = []
    columns = params.ingest.table.columns
    for table, result in results.items():
        for item in result.results:
            if item.success:
                continue
            kind = item.expectation_config.type
            column = item.expectation_config.kwargs.get("column")
            if table in ("rows", "values") and column is not None:
                sentences.append(_column_sentence(kind, item, columns.get(column), column, params.data.target))
            else:
                sentences.append(_table_sentence(kind, item, table, tables[table], params))
    return [sentence for sentence in sentences if sentence]


def describe_unparsed_dates(bad: dict[str, pd.Series], typed: pd.DataFrame, text: pd.DataFrame, params: Params):
    """Cells that look like ISO dates but are none (2021-02-30): the pattern admits them, the calendar does not."""
    sentences = []
    for name, spec in params.ingest.table.columns.items():
        if spec.type != "date" or name not in bad:
            continue
        looks = text[name].str.fullmatch(ISO_DATE_PATTERN).fillna(False).astype(bool)
        wrong = bad[name] & looks
        if wrong.any():
            cells = zip(text.loc[wrong, ROW], text.loc[wrong, name], strict=True)
            rows, count = [f"row {row} ({value!r})" for row, value in cells][:NAMED], int(wrong.sum())
            sentences.append(
                f"column {name!r} holds {count} date(s) that do not exist: {_listing(rows, count)}. Fix them"
            )
    return sentences
