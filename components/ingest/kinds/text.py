"""The text kind's ingest: reads the documents of data/raw (class folders of text files, or a table's text column:
components/ingest/kinds/text_rows.py), checks them with Great Expectations (components/ingest/kinds/text_checks.py),
skips empty documents and keeps identical ones once (both counted and listed), keeps near-identical ones in one
split, splits (stratified, seeded, your own train/test folders kept) and writes data/prepared/{train,val,test}.parquet
(file, text, label, class_name) with manifest.json, and reports/ingest (Data Docs, statistics, the lists,
summary.json). Any failed check: the reports are written, data/prepared is not.
"""

from __future__ import annotations

import pandas as pd

from components.ingest import validation
from components.ingest.failures import IngestError
from components.ingest.kinds import text_checks
from components.ingest.kinds.text_rows import oov_shares, plan_documents, read_folder, read_table
from components.ingest.layout import LayoutError
from tfpipe import paths, timing
from tfpipe.config import Params
from tfpipe.kinds import find_table
from tfpipe.outputs import atomic_directory, write_csv, write_json
from tfpipe.records import MANIFEST, SPLITS
from tfpipe.tables import TableReadError, table_format

LISTED = 20


def read_documents(params: Params):
    """Folders of files, or the one table of data/raw with its text column (the schema command names it)."""
    entries = [entry for entry in paths.RAW.iterdir() if not entry.name.startswith(".")] if paths.RAW.is_dir() else []
    try:
        if len(entries) == 1 and entries[0].is_file() and table_format(entries[0]):
            if params.ingest.text.column is None or params.data.target is None:
                raise IngestError(
                    f"{entries[0]} is a table of documents (data.kind: text), but ingest.text.column or data.target "
                    "is not set: run `python -m pipelines.schema` to propose them"
                )
            return read_table(find_table(paths.RAW), params)
        return read_folder(paths.RAW, params)
    except (LayoutError, TableReadError, ValueError) as error:
        if isinstance(error, IngestError):
            raise
        raise IngestError(str(error)) from None


def statistics_of(documents, plan, kept: pd.DataFrame) -> dict:
    rows = documents.rows
    lengths = kept["tokens"]
    return {
        "documents_read": int(rows["skipped"].isna().sum()),
        "skipped_files": {
            "count": int(rows["skipped"].notna().sum()),
            "files": rows.loc[rows["skipped"].notna(), "file"].head(LISTED).tolist(),
        },
        "empty_documents": {
            "count": int(rows["empty"].sum()),
            "files": rows.loc[rows["empty"], "file"].head(LISTED).tolist(),
        },
        "encodings": {str(key): int(value) for key, value in rows["encoding"].dropna().value_counts().items()},
        "duplicates": {
            "copies_dropped": int(plan.copies["same_label"].sum()) if len(plan.copies) else 0,
            "files": [f"{row.file} = {row.copy_of}" for row in plan.copies.head(LISTED).itertuples()],
        },
        "near_duplicate_groups": {"groups": plan.groups},
        "tokens": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "median": float(lengths.median()) if len(lengths) else 0.0,
            "p95": float(lengths.quantile(0.95)) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
    }


def ingest(params: Params) -> dict:
    documents = read_documents(params)
    timing.lap("read and decode the documents")
    with (
        atomic_directory(paths.PREPARED) as staging,
        atomic_directory(paths.INGEST_REPORTS, replace_on=(IngestError,)) as reports,
    ):
        plan = plan_documents(documents, params)
        kept = plan.kept
        kept["oov_share"] = oov_shares(kept)
        timing.lap("duplicates, near duplicates (MinHash), split")
        read = documents.rows[documents.rows["skipped"].isna()]
        heldout = kept.loc[kept["split"] != "train", ["file", "split", "oov_share"]]
        tables = {
            "documents": read[["file", "class_name", "problem", "empty", "chars", "encoding"]].reset_index(drop=True),
            "examples": kept[["file", "split", "class_name", "chars", "tokens", "near_duplicate_of"]],
            "duplicates": plan.copies
            if len(plan.copies)
            else pd.DataFrame(columns=["file", "class_name", "copy_class"]),
            "classes": text_checks.classes_table(kept, documents.class_names),
        }
        if len(heldout):
            tables["heldout"] = heldout
        suites = text_checks.build_suites(params, params.ingest.val_fraction > 0, len(heldout) > 0)
        index_columns = {name: text_checks.INDEX_COLUMNS[name] for name in tables}
        results = validation.run_validation(
            tables, suites, reports / "data_docs", index_columns, rows_of_failures_only=len(kept) > 50_000
        )
        statistics = statistics_of(documents, plan, kept)
        write_json(reports / "statistics.json", statistics)
        write_csv(reports / "duplicates.csv", plan.copies)
        grouped = kept[kept.groupby("group")["group"].transform("size") > 1]
        write_csv(reports / "near_duplicates.csv", grouped.sort_values(["group", "file"])[["group", "file", "split"]])
        write_csv(
            reports / "skipped_files.csv", documents.rows.loc[documents.rows["skipped"].notna(), ["file", "skipped"]]
        )
        timing.lap("validation (Great Expectations), Data Docs, reports")
        outcomes = [item.success for result in results.values() for item in result.results]
        validation_summary = {"evaluated": len(outcomes), "passed": sum(outcomes)}
        write_json(reports / "validation.json", {"success": all(outcomes), **validation_summary})
        if not all(outcomes):
            failures = text_checks.describe_failures(results, tables, params)
            raise IngestError(
                f"{len(failures)} problem(s) with the documents in {paths.RAW} (details: "
                f"{paths.INGEST_REPORTS / 'data_docs/index.html'}):\n" + "\n".join(f"- {line}" for line in failures)
            )
        splits = {}
        for split in SPLITS:
            part = kept.loc[kept["split"] == split, ["file", "text", "label", "class_name"]].reset_index(drop=True)
            part.to_parquet(staging / f"{split}.parquet", index=False)
            counts = part["class_name"].value_counts()
            splits[split] = {
                "count": int(len(part)),
                "file": f"{split}.parquet",
                "class_counts": {name: int(counts.get(name, 0)) for name in documents.class_names},
            }
        manifest = {
            "kind": "text",
            "task": "classification",
            "class_names": documents.class_names,
            "num_examples": int(len(kept)),
            "splits": splits,
            "strip_markup": params.ingest.text.strip_markup,
            "source": params.data.source,
            "layout": documents.layout,
        }
        write_json(staging / MANIFEST, manifest)
        timing.lap("write the splits")
        summary = {
            "kind": "text",
            "num_examples": manifest["num_examples"],
            "num_classes": len(documents.class_names),
            "layout": documents.layout,
            "splits": {split: splits[split]["count"] for split in SPLITS},
            "hidden_files_skipped": documents.hidden,
            "validation": validation_summary,
            **statistics,
        }
        write_json(reports / "summary.json", summary)
    return summary


def headline(summary: dict) -> dict:
    return {
        "documents": dict(summary["splits"]),
        "classes": summary["num_classes"],
        "copies_dropped": summary["duplicates"]["copies_dropped"],
        "empty": summary["empty_documents"]["count"],
        "skipped": summary["skipped_files"]["count"] + summary["hidden_files_skipped"],
    }


def describe(summary: dict) -> str:
    return f"{summary['num_examples']} documents {summary['splits']} in {summary['num_classes']} classes"


def describe_changes(summary: dict) -> list[str]:
    notes = []
    encodings = {name: count for name, count in summary["encodings"].items() if name != "utf-8"}
    if encodings:
        notes.append(f"read as other than UTF-8: {encodings} (cp1252: not valid UTF-8, read as Windows-1252)")
    for key, words in (
        ("empty_documents", "empty document(s) skipped"),
        ("skipped_files", "file(s) that are not documents skipped"),
    ):
        if summary[key]["count"]:
            notes.append(f"{summary[key]['count']} {words}: {', '.join(summary[key]['files'][:5])}")
    if summary["duplicates"]["copies_dropped"]:
        notes.append(
            f"{summary['duplicates']['copies_dropped']} identical document(s) kept once (reports/ingest/duplicates.csv)"
        )
    if summary["near_duplicate_groups"]["groups"]:
        notes.append(
            f"{summary['near_duplicate_groups']['groups']} group(s) of near-identical documents, each in one split "
            "(reports/ingest/near_duplicates.csv)"
        )
    return notes
