"""The table kind's ingest: reads the one table file in data/raw (tfpipe/tables.py), checks it against
ingest.table.columns and data.target with Great Expectations (components/ingest/kinds/table_checks.py), drops rows
without a target and identical copies, keeps rows with the same features in one split, splits (stratified, seeded)
and writes data/prepared/{train,val,test}.parquet with manifest.json, and reports/ingest (Data Docs, statistics,
the rows dropped or named, summary.json). Any failed check: the reports are written, data/prepared is not.

In data/prepared, numbers are float64 (NaN empty), dates ISO text and every other column text ("" empty): what the
serving model takes. The manifest names each feature's input (its column name made a valid TensorFlow name).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import threading
import time
from pathlib import Path

import pandas as pd

from components.ingest import validation
from components.ingest.failures import IngestError
from components.ingest.kinds import table_checks
from components.ingest.kinds.table_rows import RowPlan, TableRows, plan_rows, read_rows
from tfpipe import paths, timing
from tfpipe.config import Params
from tfpipe.kinds import find_table
from tfpipe.outputs import atomic_directory, write_csv, write_json
from tfpipe.records import MANIFEST, SPLITS
from tfpipe.tables import ROW, TableFile, iso_dates

LISTED = 20  # rows listed in summary.json per kind of change (every one is in the reports' CSV files)
SCHEMA_COMMAND = "python -m pipelines.schema"


def input_names(columns: list[str]) -> dict[str, str]:
    """Each column's name as a TensorFlow input: letters, digits, `_.-` (others become `_`), starting with a letter
    or digit, unique ("body mass (g)" -> "body_mass_g")."""
    names, used = {}, set()
    for column in columns:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", column).strip("_.-") or "column"
        base = base if base[0].isalnum() else f"c{base}"
        name, number = base, 2
        while name.lower() in used:
            name, number = f"{base}_{number}", number + 1
        used.add(name.lower())
        names[column] = name
    return names


def resolve_task(params: Params) -> str:
    """data.task, with auto settled by the target's column type (categorical or boolean: a classification)."""
    if params.data.task != "auto":
        return params.data.task
    spec = params.ingest.table.columns[params.data.target]
    return "classification" if spec.type in ("categorical", "boolean") else "regression"


def check_params(params: Params, table: Path) -> Params:
    """The params a table needs, before anything is read: its schema and its target (each error says the command
    that writes them); returns params with data.task settled."""
    columns, target = params.ingest.table.columns, params.data.target
    if not columns:
        raise IngestError(
            f"{table} is a table, but params.yaml has no schema for it (ingest.table.columns is empty): run "
            f"`{SCHEMA_COMMAND}` to propose one, review it, then `dvc repro`"
        )
    if target is None or target not in columns:
        raise IngestError(
            f"data.target is {target!r}, which is not a column of ingest.table.columns ({', '.join(columns)}): set "
            f"data.target to the column to predict (or `{SCHEMA_COMMAND}` proposes it)"
        )
    task = resolve_task(params)
    if task == "classification" and not columns[target].categories:
        raise IngestError(f"a classification needs the target's classes: set ingest.table.columns.{target}.categories")
    if task == "regression" and columns[target].type != "numeric":
        raise IngestError(f"a regression needs a numeric target; {target!r} is {columns[target].type}")
    if not any(spec.role == "feature" and name != target for name, spec in columns.items()):
        raise IngestError("no column of ingest.table.columns is a feature (role: feature): the model has no input")
    return dataclasses.replace(params, data=dataclasses.replace(params.data, task=task))


def prepared_split(kept: pd.DataFrame, params: Params, split: str) -> pd.DataFrame:
    """One split as data/prepared holds it: ROW, the features and the target, in the file's order."""
    columns = params.ingest.table.columns
    wanted = [name for name, spec in columns.items() if spec.role == "feature" or name == params.data.target]
    frame = kept.loc[kept["split"] == split, [ROW, *wanted]].reset_index(drop=True)
    for name in wanted:
        spec = columns[name]
        if spec.type == "date":
            frame[name] = iso_dates(frame[name])
        elif spec.type != "numeric":
            frame[name] = frame[name].fillna("").astype("str")
    return frame


def build_manifest(plan: RowPlan, params: Params, table: TableFile, class_names: list[str]) -> dict:
    columns, target = params.ingest.table.columns, params.data.target
    features = [name for name, spec in columns.items() if spec.role == "feature" and name != target]
    names = input_names(features)
    counts = plan.kept.groupby("split").size().reindex(list(SPLITS), fill_value=0)
    splits = {split: {"count": int(counts[split]), "file": f"{split}.parquet"} for split in SPLITS}
    if class_names:
        by_class = plan.kept.groupby(["split", "label"]).size()
        for split in SPLITS:
            splits[split]["class_counts"] = {
                name: int(by_class.get((split, label), 0)) for label, name in enumerate(class_names)
            }
    return {
        "kind": "table",
        "task": params.data.task,
        "target": target,
        "class_names": class_names,
        "features": [{"column": name, "input": names[name], "type": columns[name].type} for name in features],
        # How predict and the served model read a user's file: the same parsing as here.
        "columns": {name: dataclasses.asdict(spec) for name, spec in columns.items()},
        "reader": {"file": table.path.name, "format": table.format, "encoding": table.encoding},
        "num_examples": int(len(plan.kept)),
        "splits": splits,
        "source": params.data.source,
        "layout": "table",
    }


def describe_changes_of(plan: RowPlan, rows: TableRows, table: TableFile) -> dict:
    return {
        "read_as": table.describe(),
        "rows_read": int(len(rows.typed)),
        "missing_target": {"count": len(plan.missing_target), "rows": plan.missing_target[:LISTED]},
        "duplicates": {
            "copies_dropped": int(len(plan.copies)),
            "rows": [f"row {row} = row {first}" for row, first in plan.copies.head(LISTED).itertuples(index=False)],
        },
        "same_features": {
            "groups": plan.groups,
            "conflicting_rows": int(len(plan.conflicts)),
            "rows": plan.conflicts.head(LISTED).astype(str).to_dict(orient="records"),
        },
    }


def column_statistics(kept: pd.DataFrame, params: Params) -> dict:
    """Per column of the kept rows: empty share, and range (numbers, dates) or distinct values and the commonest."""
    statistics = {}
    for name, spec in params.ingest.table.columns.items():
        if name not in kept:
            continue
        values = kept[name]
        entry = {"type": spec.type, "role": spec.role, "missing_share": round(float(values.isna().mean()), 4)}
        present = values.dropna()
        if spec.type in ("numeric", "date") and len(present):
            entry.update(min=str(present.min()), max=str(present.max()))
            if spec.type == "numeric":
                entry.update(mean=float(present.mean()), std=float(present.std(ddof=0)))
        elif len(present):
            top = present.value_counts().head(5)
            entry.update(distinct=int(present.nunique()), most_common={str(k): int(v) for k, v in top.items()})
        statistics[name] = entry
    return statistics


def write_reports(reports: Path, plan: RowPlan, rows: TableRows, changes: dict, params: Params) -> dict:
    write_csv(reports / "duplicates.csv", plan.copies)
    write_csv(reports / "same_features.csv", plan.conflicts)
    write_csv(reports / "missing_target.csv", pd.DataFrame({ROW: plan.missing_target}))
    statistics = {"columns": column_statistics(plan.kept, params), **changes}
    write_json(reports / "statistics.json", statistics)
    return statistics


def ingest(params: Params) -> dict:
    """The whole stage for a table; returns its summary, raises IngestError (after writing the reports)."""
    path = find_table(paths.RAW)
    params = check_params(params, path)
    # Great Expectations takes seconds to import: it does so on the other core while this one reads the table.
    threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True).start()
    try:
        table = TableFile.open(path)
    except ValueError as error:
        raise IngestError(str(error)) from None
    target, task, columns = params.data.target, params.data.task, params.ingest.table.columns
    class_names = list(columns[target].categories) if task == "classification" else None
    with (
        atomic_directory(paths.PREPARED) as staging,
        atomic_directory(paths.INGEST_REPORTS, replace_on=(IngestError,)) as reports,
    ):
        start = time.perf_counter()
        rows = read_rows(table, columns)
        seconds = time.perf_counter() - start
        timing.lap("read and parse the table")
        print(f"ingest: read {table.describe()}: {len(rows.typed):,} rows in {seconds:.1f} s")
        if all(name in rows.typed for name in columns):
            plan = plan_rows(
                rows.typed,
                columns,
                target,
                task,
                class_names or [],
                val_fraction=params.ingest.val_fraction,
                test_fraction=params.ingest.test_fraction,
                seed=params.ingest.seed,
            )
        else:  # a column is missing: nothing to plan; the suite names what changed
            plan = RowPlan.empty(rows.typed)
        timing.lap("missing targets, duplicates, split")
        name, counts = table_checks.split_table(plan.kept, class_names)
        ranged = [
            column for column, spec in columns.items() if spec.type in ("numeric", "date") and column in plan.kept
        ]
        tables = {"rows": rows.text, "values": plan.kept[[ROW, *ranged]], name: counts}
        suites = table_checks.build_suites(params, rows, has_val=params.ingest.val_fraction > 0)
        index_columns = {key: table_checks.INDEX_COLUMNS[key] for key in tables}
        results = validation.run_validation(
            tables, suites, reports / "data_docs", index_columns, rows_of_failures_only=True
        )
        changes = describe_changes_of(plan, rows, table)
        statistics = write_reports(reports, plan, rows, changes, params)
        timing.lap("validation (Great Expectations), Data Docs, reports")
        outcomes = [item.success for result in results.values() for item in result.results]
        failures = table_checks.describe_failures(results, tables, params)
        failures += table_checks.describe_unparsed_dates(rows.bad, rows.typed, rows.text, params)
        validation_summary = {"evaluated": len(outcomes), "passed": sum(outcomes)}
        write_json(
            reports / "validation.json",
            {
                "success": not failures,
                **validation_summary,
                "tables": {k: v.describe_dict() for k, v in results.items()},
            },
        )
        if failures:
            raise IngestError(
                f"{len(failures)} problem(s) with the table {path} (details: "
                f"{paths.INGEST_REPORTS / 'data_docs/index.html'}):\n" + "\n".join(f"- {line}" for line in failures)
            )
        for split in SPLITS:
            prepared_split(plan.kept, params, split).to_parquet(staging / f"{split}.parquet", index=False)
        manifest = build_manifest(plan, params, table, class_names or [])
        write_json(staging / MANIFEST, manifest)
        timing.lap("write the splits")
        summary = {
            "kind": "table",
            "task": task,
            "target": target,
            "num_examples": manifest["num_examples"],
            "num_classes": len(class_names or []),
            "features": [feature["column"] for feature in manifest["features"]],
            "splits": {split: manifest["splits"][split]["count"] for split in SPLITS},
            "validation": validation_summary,
            **{key: value for key, value in statistics.items() if key != "columns"},
        }
        write_json(reports / "summary.json", summary)
    return summary


def headline(summary: dict) -> dict:
    """metrics/ingest.json: the rows per split, the classes (a classification), and what ingest dropped."""
    return {
        "rows": dict(summary["splits"]),
        **({"classes": summary["num_classes"]} if summary["num_classes"] else {}),
        "copies_dropped": summary["duplicates"]["copies_dropped"],
        "missing_target": summary["missing_target"]["count"],
    }


def describe(summary: dict) -> str:
    return f"{summary['num_examples']} rows {summary['splits']} ({summary['task']} of {summary['target']!r})"


def describe_changes(summary: dict) -> list[str]:
    notes = [f"read as {summary['read_as']}"]
    if summary["missing_target"]["count"]:
        notes.append(
            f"{summary['missing_target']['count']} row(s) without a target dropped "
            f"(reports/ingest/missing_target.csv): rows {summary['missing_target']['rows'][:10]}"
        )
    if summary["duplicates"]["copies_dropped"]:
        notes.append(
            f"{summary['duplicates']['copies_dropped']} identical row(s) kept once (reports/ingest/duplicates.csv): "
            + ", ".join(summary["duplicates"]["rows"][:5])
        )
    same = summary["same_features"]
    if same["conflicting_rows"]:
        notes.append(
            f"{same['conflicting_rows']} row(s) share their features with a row of another target, each group in one "
            "split (reports/ingest/same_features.csv): " + "; ".join(json.dumps(row) for row in same["rows"][:4])
        )
    return notes
