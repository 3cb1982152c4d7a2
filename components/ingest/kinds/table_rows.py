"""A table's rows for ingest: read in chunks with the one reader (tfpipe/tables.py), each column parsed by its
ingest.table.columns entry; then the plan: rows without a target dropped and counted, identical rows kept once,
rows with the same features kept in one split (their targets named when they differ), and a stratified, seeded split.
Reads the table file, writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.ingest.split import assign_splits
from tfpipe.config import ColumnParams
from tfpipe.tables import ROW, TableFile, as_text, parse_column

REGRESSION_STRATA = 5  # target quantile bins a regression split is stratified by


@dataclass
class TableRows:
    """Every row of the file: `text` holds each column as text with empty cells NaN (what the validation's column
    checks read), `typed` the columns of the schema parsed (numbers, dates, text), `bad` each parsed column's cells
    that do not parse. Both carry ROW."""

    text: pd.DataFrame
    typed: pd.DataFrame
    bad: dict[str, pd.Series]
    columns: list[str]  # the file's columns, in its order
    native: set[str]  # columns the file stores as numbers already (Parquet, JSON): no text to check


def read_rows(table: TableFile, columns: dict[str, ColumnParams]) -> TableRows:
    texts, typeds, bads, file_columns, native = [], [], [], None, set()
    for chunk in table.chunks():
        file_columns = [column for column in chunk.columns if column != ROW]
        text, typed, bad = {ROW: chunk[ROW]}, {ROW: chunk[ROW]}, {}
        for column in file_columns:
            spec = columns.get(column)
            missing_values = tuple(spec.missing_values) if spec else ()
            text[column] = as_text(chunk[column], missing_values)
            if pd.api.types.is_numeric_dtype(chunk[column]) and not pd.api.types.is_bool_dtype(chunk[column]):
                native.add(column)
            if spec is not None:
                typed[column], bad[column] = parse_column(chunk[column], spec)
        texts.append(pd.DataFrame(text))
        typeds.append(pd.DataFrame(typed))
        bads.append(bad)
    text = pd.concat(texts, ignore_index=True)
    typed = pd.concat(typeds, ignore_index=True)
    bad = {column: pd.concat([part[column] for part in bads], ignore_index=True) for column in bads[0]}
    return TableRows(text, typed, bad, file_columns or [], native)


@dataclass
class RowPlan:
    kept: pd.DataFrame  # the typed rows kept, with their split (and `label` for a classification)
    missing_target: list[int]  # ROW of every row dropped for an empty target
    copies: pd.DataFrame  # ROW of each identical copy dropped, and the ROW it copies
    conflicts: pd.DataFrame  # rows with the same features and different targets: ROW, group, target
    groups: int  # groups of rows with the same features (2 or more rows), kept whole in one split

    @classmethod
    def empty(cls, typed: pd.DataFrame) -> RowPlan:
        kept = typed.iloc[:0].assign(split=pd.Series(dtype=str), label=pd.Series(dtype=np.int64))
        return cls(kept, [], pd.DataFrame(columns=[ROW, "copy_of"]), pd.DataFrame(columns=[ROW, "group"]), 0)


def feature_hash(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One 64-bit hash per row of these columns (NaN equal to NaN): rows with equal values share it."""
    if not columns:
        return np.zeros(len(frame), np.uint64)
    return pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()


def strata(kept: pd.DataFrame, target: str, task: str, class_names: list[str]) -> np.ndarray:
    """What the split is stratified by: the class, or for a regression the target's quantile bin."""
    if task == "classification":
        return kept["label"].to_numpy()
    values = kept[target].to_numpy(dtype=np.float64)
    bins = min(REGRESSION_STRATA, max(1, len(values) // 20))
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])) if len(values) else []
    return np.searchsorted(edges, values, side="right")


def plan_rows(
    typed: pd.DataFrame,
    columns: dict[str, ColumnParams],
    target: str,
    task: str,
    class_names: list[str],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> RowPlan:
    """The module docstring's plan. Identical means equal in every column but ids (a row copied with a new id
    is still a copy); the same features means equal in every feature column."""
    has_target = typed[target].notna().to_numpy()
    missing_target = typed.loc[~has_target, ROW].astype(int).tolist()
    rows = typed.loc[has_target].reset_index(drop=True)
    compared = [name for name, spec in columns.items() if spec.type != "id" and name in rows.columns]
    features = [name for name, spec in columns.items() if spec.role == "feature" and name != target]
    features = [name for name in features if name in rows.columns]
    whole = feature_hash(rows, compared)
    copy = pd.Series(whole).duplicated(keep="first").to_numpy()
    first_of = pd.Series(rows[ROW].to_numpy()).groupby(whole).transform("first").to_numpy()
    copies = pd.DataFrame({ROW: rows.loc[copy, ROW].to_numpy(), "copy_of": first_of[copy]})
    kept = rows.loc[~copy].reset_index(drop=True)
    if task == "classification":
        index = {name: position for position, name in enumerate(class_names)}
        kept["label"] = kept[target].map(index).fillna(-1).astype(np.int64)
    same = feature_hash(kept, features)
    group_ids = pd.factorize(same)[0]
    sizes = np.bincount(group_ids)
    grouped = sizes[group_ids] > 1
    targets_per_group = kept.groupby(group_ids)[target].nunique(dropna=False)
    conflicted = grouped & (targets_per_group.reindex(group_ids).to_numpy() > 1)
    conflicts = pd.DataFrame(
        {
            ROW: kept.loc[conflicted, ROW].to_numpy(),
            "group": group_ids[conflicted],
            target: kept.loc[conflicted, target],
        }
    ).sort_values(["group", ROW])
    kept["split"] = assign_splits(
        strata(kept, target, task, class_names), val_fraction, test_fraction, seed, groups=group_ids
    )
    return RowPlan(kept, missing_target, copies, conflicts.reset_index(drop=True), int((sizes > 1).sum()))
