"""What the schema command proposes for a table (TFX SchemaGen's idea), read off the file with the reader every stage
uses (tfpipe/tables.py): each column's type and role, its range, categories and missing share, the target and the
task. Reads the table, writes nothing (pipelines/schema.py writes the proposal into params.yaml).

Rules, in the order they are tried on a column's non-empty cells (each leaves room for more data of the same kind):
- numeric: at least 95% of the cells are numbers; the other tokens (at most 20 distinct, such as `unknown`) become
  the column's `missing_values`. An integer column whose values are all distinct and either named like an id
  (`id`, `customer_id`, `uuid`, `key`) or numbering the rows is an id;
- boolean: two distinct values among true/false, yes/no, y/n, t/f (any case);
- date: at least 95% parse as ISO 8601 or as one of DATE_FORMATS (the best one wins), the rest become missing_values;
- text that repeats: categorical (at most MAX_CATEGORIES distinct values, each seen about twice or more);
- text that does not: an id when it is short (at most 4 words on average, e.g. a car's name), else free text.
An id or free-text column is never a feature; a column with one value in every row is proposed `role: ignored`.
Ranges are the observed ones widened by their span on each side (never below 0 for a column that never is); the
missing share allowed is twice the observed one plus 5%. The target: data.target (or the last column, said so);
classification when it is not numeric, or holds at most CLASSIFICATION_MAX_VALUES distinct integers.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from tfpipe.tables import NUMBER_PATTERN, ROW, as_text, normalize_text

NUMERIC_SHARE = 0.95  # of the non-empty cells, for a numeric or date column
MAX_ODD_TOKENS = 20  # distinct non-numbers a numeric column may hold as its own missing markers
MAX_CATEGORIES = 1000
CLASSIFICATION_MAX_VALUES = 10
BOOLEAN_TOKENS = {"true", "false", "yes", "no", "y", "n", "t", "f"}
DATE_FORMATS = (
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%b %d %Y",
    "%d %b %Y",
)
ID_NAME = re.compile(r"(^|[_\s-])(id|uuid|guid|key)$|^(id|uuid|guid|index|row|rowid)$", re.IGNORECASE)
ID_WORDS = 4  # mean words of an id-like text column (names, codes); longer unique text is free text


def _rounded(value: float) -> float:
    """Six significant digits: a range that reads well in params.yaml."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.6g}")


def numeric_range(numbers: np.ndarray) -> tuple[float, float]:
    low, high = float(numbers.min()), float(numbers.max())
    span = (high - low) or abs(high) or 1.0
    minimum = low - span
    if low >= 0:
        minimum = max(0.0, minimum)
    return _rounded(minimum), _rounded(high + span)


def date_range(dates: pd.Series) -> tuple[str, str]:
    low, high = dates.min(), dates.max()
    span = max(high - low, pd.Timedelta(days=365))
    return (low - span).strftime("%Y-%m-%d"), (high + span).strftime("%Y-%m-%d")


def allowed_missing(share: float) -> float:
    return round(min(1.0, 2 * share + 0.05), 3)


def sort_categories(values) -> list[str]:
    """Numbers in numeric order (2 before 10), then text in alphabetical order."""

    def key(value: str):
        try:
            return (0, float(value), value)
        except ValueError:
            return (1, 0.0, value)

    return sorted(values, key=key)


def best_date_format(text: pd.Series) -> tuple[str | None, pd.Series]:
    """(the format most cells parse with, their parsed dates) when NUMERIC_SHARE of them do; else (None, ...)."""
    best, best_dates, best_share = None, None, 0.0
    for fmt in ("ISO8601", *DATE_FORMATS):
        try:
            dates = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        except (ValueError, TypeError):
            continue
        share = float(dates.notna().mean())
        if share > best_share:
            best, best_dates, best_share = fmt, dates, share
        if share == 1.0:
            break
    if best is None or best_share < NUMERIC_SHARE:
        return None, pd.Series(dtype="datetime64[ns, UTC]")
    return best, best_dates


def looks_like_row_numbers(numbers: pd.Series) -> bool:
    values = np.sort(numbers.to_numpy())
    return bool(len(values) > 1 and np.all(np.diff(values) == 1))


KEY_ORDER = ("type", "role", "min", "max", "categories", "format", "max_missing", "missing_values")


def ordered(spec: dict) -> dict:
    """A column's entry with its keys in the schema's order (params.yaml reads as the schema does)."""
    return {key: spec[key] for key in KEY_ORDER if key in spec}


def infer_column(name: str, values: pd.Series, is_target: bool = False) -> tuple[dict, list[str]]:
    """({type, role, min, max, categories, format, max_missing, missing_values}: only what differs from the
    defaults), and notes for the user about this column."""
    text = as_text(values)
    present = text.dropna()
    rows, notes = len(values), []
    share_missing = 1 - len(present) / rows if rows else 0.0
    spec: dict = {}
    if share_missing:
        spec["max_missing"] = allowed_missing(share_missing)
    if present.empty:
        return ordered({**spec, "type": "text", "role": "ignored"}), [f"{name}: every cell is empty; ignored"]
    numbers = pd.to_numeric(present.where(present.str.fullmatch(NUMBER_PATTERN).astype(bool)), errors="coerce")
    odd = present[numbers.isna()]
    is_numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if is_numeric or (numbers.notna().mean() >= NUMERIC_SHARE and odd.nunique() <= MAX_ODD_TOKENS):
        spec["type"] = "numeric"
        finite = numbers.dropna().to_numpy(dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if len(odd):
            spec["missing_values"] = sorted(odd.unique().tolist())
            notes.append(f"{name}: numbers, but {len(odd)} cell(s) hold {spec['missing_values'][:5]}: counted as empty")
        integers = bool(len(finite)) and bool(np.all(np.mod(finite, 1) == 0))
        distinct = len(np.unique(finite))
        if is_target and integers and distinct <= CLASSIFICATION_MAX_VALUES:
            categories = sort_categories(pd.unique(present[numbers.notna()]).tolist())
            return ordered({**spec, "type": "categorical", "categories": categories}), notes
        if not is_target and integers and distinct == len(finite) > 20:
            if ID_NAME.search(name) or looks_like_row_numbers(pd.Series(finite)):
                return ordered({**spec, "type": "id", "role": "ignored"}), [
                    f"{name}: a distinct integer per row: an id, never a feature"
                ]
        if len(finite):
            spec["min"], spec["max"] = numeric_range(finite)
        if distinct == 1 and not is_target:
            spec["role"] = "ignored"
            notes.append(f"{name}: one value ({finite[0]:g}) in every row: nothing to learn from, ignored")
        return ordered(spec), notes
    distinct = present.nunique()
    lowered = set(present.str.lower().unique())
    if distinct == 2 and lowered <= BOOLEAN_TOKENS:
        return ordered({**spec, "type": "boolean", "categories": sort_categories(present.unique().tolist())}), notes
    date_format, dates = best_date_format(present)
    if date_format is not None and not is_target:
        bad = present[dates.isna().to_numpy()]
        if bad.nunique() <= MAX_ODD_TOKENS:
            spec.update(type="date", format=date_format)
            valid = dates.dropna().dt.tz_convert(None)
            spec["min"], spec["max"] = date_range(valid)
            if len(bad):
                spec["missing_values"] = sorted(bad.unique().tolist())
                notes.append(
                    f"{name}: dates, but {len(bad)} cell(s) hold {spec['missing_values'][:5]}: counted as empty"
                )
            if valid.nunique() == 1:
                spec["role"] = "ignored"
                notes.append(f"{name}: one date in every row: nothing to learn from, ignored")
            return ordered(spec), notes
    if is_target:
        categories = sort_categories(present.unique().tolist())
        if distinct > 100:
            notes.append(f"{name}: the target has {distinct} distinct values: a classifier with as many classes")
        return ordered({**spec, "type": "categorical", "categories": categories}), notes
    words = float(present.str.split().str.len().mean())
    if distinct <= MAX_CATEGORIES and (distinct <= 20 or distinct <= 0.5 * len(present)):
        spec.update(type="categorical", categories=sort_categories(present.unique().tolist()))
        if distinct == 1:
            spec["role"] = "ignored"
            notes.append(f"{name}: one value ({present.iloc[0]!r}) in every row: nothing to learn from, ignored")
        return ordered(spec), notes
    if words <= ID_WORDS:
        return ordered({**spec, "type": "id", "role": "ignored"}), [
            f"{name}: {distinct} distinct values in {len(present)} rows (an identifier or a name): never a feature"
        ]
    return ordered({**spec, "type": "text", "role": "ignored"}), [
        f"{name}: free text ({words:.0f} words a cell on average): not a feature of a table (ignored)"
    ]


def choose_target(frame: pd.DataFrame, target: str | None) -> tuple[str, list[str]]:
    columns = [column for column in frame.columns if column != ROW]
    if target is not None:
        normalized = normalize_text(target)
        if normalized not in columns:
            raise ValueError(f"data.target {target!r} is not a column of the table; its columns: {columns}")
        return normalized, []
    return columns[-1], [f"target: the last column, {columns[-1]!r} (set another with --target or data.target)"]


def propose_table(frame: pd.DataFrame, target: str | None) -> tuple[dict, list[str]]:
    """The params overrides for this table ({"data": ..., "ingest": ..., "train": ..., "evaluate": ...}) and notes."""
    if ROW in frame.columns:
        frame = frame.drop(columns=ROW)
    if frame.empty and not len(frame.columns):
        raise ValueError("the table has no columns")
    target, notes = choose_target(frame, target)
    columns = {}
    for name in frame.columns:
        spec, column_notes = infer_column(name, frame[name], is_target=name == target)
        if name == target:
            spec.pop("role", None)
        columns[name] = spec
        notes += column_notes
    task = "classification" if columns[target]["type"] in ("categorical", "boolean") else "regression"
    kept = int(as_text(frame[target]).notna().sum()) if len(frame) else 0
    if kept < len(frame):
        notes.append(f"{target}: {len(frame) - kept} row(s) without a target: ingest drops and counts them")
    features = [name for name, spec in columns.items() if name != target and spec.get("role") != "ignored"]
    if not features:
        notes.append("no column is a feature: ingest will fail until one is (set its role: feature)")
    small = kept < 2000  # small tables: a larger test split, so that one row is not 2.5% of the test accuracy
    proposal = {
        "data": {"target": target, "task": task, "kind": "auto"},
        "ingest": {
            "table": {"columns": columns, "min_rows": max(1, kept // 2)},
            "val_fraction": 0.15 if small else 0.1,
            "test_fraction": 0.2 if small else 0.1,
        },
    }
    notes.insert(
        0,
        f"{len(frame)} rows, {len(columns)} columns; task: {task} of {target!r}; features: "
        + (", ".join(features) if features else "none"),
    )
    return proposal, notes
