"""What the schema command writes for a table and for documents: the proposal of pipelines/table_schema.py or
pipelines/text_schema.py, with the sections another kind's params hold replaced where they still hold the image
demo's values, written into params.yaml with its fingerprint (pipelines/schema_params.py). Reads data/raw and
params.yaml, writes params.yaml (or, with --dry-run, a copy).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import pydantic

from pipelines.schema_params import MARKER, current_expectations, fingerprint, flow_list, flow_style
from pipelines.table_schema import propose_table
from pipelines.text_schema import propose_text, text_column
from tfpipe.config import Params, TableParams
from tfpipe.kinds import find_table
from tfpipe.params_file import update_params_file

TEXT_SEARCH_MINUTES = 3.0  # documents: the recurrent candidates are minutes an epoch on a CPU: the search stops there
DEMO_MIN_ACCURACY = 0.97  # the image demo's evaluate.min_accuracy: a dataset of one's own gets `auto`
# A table's training where params.yaml holds the image demo's value (benchmarks/RESULTS.md, "Tables": on Auto MPG
# over four splits, dropout 0.1 and weight decay 0.001 took the MLP's test MAE from 1.96 to 1.85).
TABLE_TRAINING = {"dropout_rate": (0.25, 0.1), "weight_decay": (0.0, 0.001)}


def write(args, overrides: dict, section: str, source: Path, replace: tuple[str, ...] = ()) -> str:
    """The overrides into params.yaml (a copy with --dry-run), ingest.<section> marked with its fingerprint."""
    from tfpipe.config import IngestParams

    values = pydantic.TypeAdapter(IngestParams).validate_python({section: overrides["ingest"][section]})
    normalized = json.loads(json.dumps(asdict(getattr(values, section))))
    comment = f"# {MARKER} from {source} (fingerprint {fingerprint(normalized)}); review, commit, edit freely"
    target_file = args.params
    if args.dry_run:
        target_file = Path(tempfile.mkdtemp()) / args.params.name
        shutil.copy(args.params, target_file)
    diff = update_params_file(overrides, target_file, {f"ingest.{section}": comment}, replace=replace)
    return diff.replace(str(target_file), str(args.params))


def refuse_hand_edits(args, section: str, empty) -> None:
    current, recorded = current_expectations(args.params, section)
    if current != empty and recorded != fingerprint(current) and not args.force:
        raise ValueError(
            f"{args.params}: ingest.{section} was edited by hand since it was inferred (it no longer matches the "
            "fingerprint in its comment); nothing was written. Rerun with --force to replace it, or edit it yourself"
        )


def kind_defaults(params: Params, kind: str, classification: bool) -> tuple[dict, list[str]]:
    """What a table or documents need beyond their schema, where params.yaml holds what another kind needs:
    train.model: auto with the kind's models as its search candidates, and for a classification the gate's floor
    from the baseline (tables also their training settings: TABLE_TRAINING)."""
    from models import registry

    overrides, notes = {}, []
    listed = [params.train.model, *params.train.search.models]
    if any(kind not in registry.get_builder(name).kinds for name in listed if name != "auto"):
        candidates = registry.search_candidates(kind)
        overrides["train"] = {"model": "auto", "search": {"models": flow_list(candidates)}}
        notes.append(f"train.model: auto, train.search.models: {candidates} (models that take {kind} data)")
    if classification and params.evaluate.min_accuracy == DEMO_MIN_ACCURACY:
        overrides["evaluate"] = {"min_accuracy": "auto"}
        notes.append("evaluate.min_accuracy: auto (the floor is the classical baseline's accuracy)")
    if kind == "text" and params.train.search.budget_minutes is None:
        overrides.setdefault("train", {}).setdefault("search", {})["budget_minutes"] = TEXT_SEARCH_MINUTES
        notes.append(f"train.search.budget_minutes: {TEXT_SEARCH_MINUTES} (the sequence models are slow on a CPU)")
    if kind == "table":
        for key, (demo, value) in TABLE_TRAINING.items():
            if getattr(params.train, key) == demo:
                overrides.setdefault("train", {})[key] = value
                notes.append(f"train.{key}: {value} for a table (the image demo's is {demo})")
    return overrides, notes


def infer_table(
    args, params: Params, target: str | None = None, use_params_target: bool = True
) -> tuple[str, list[str], list[str]]:
    """The table's proposal (pipelines/table_schema.py), written: (the diff, notes, failures). The target: `target`,
    else data.target (unless use_params_target is False: a new table), else the last column. A table with a
    free-text column holds documents: its proposal is the text kind's (infer_text)."""
    from tfpipe.tables import TableFile

    path = find_table(args.raw_dir)
    table = TableFile.open(path)
    frame = table.read()
    proposal, notes = propose_table(frame, target or (params.data.target if use_params_target else None))
    print(f"{path}: read as {table.describe()}")
    column = text_column(frame, proposal["ingest"]["table"]["columns"], proposal["data"]["target"])
    if column is not None:
        notes = [note for note in notes if "free text" not in note]
        notes.append(f"{column!r} holds free text: a table of documents (data.kind: text), labelled by the target")
        diff, text_notes, failures = infer_text(args, params, table_column=(column, proposal["data"]["target"]))
        return diff, notes + text_notes, failures
    refuse_hand_edits(args, "table", json.loads(json.dumps(asdict(TableParams()))))
    defaults, default_notes = kind_defaults(params, "table", proposal["data"]["task"] == "classification")
    overrides = {**defaults, **proposal}
    table_section = proposal["ingest"]["table"]
    overrides["ingest"] = {
        **proposal["ingest"],
        "table": {**table_section, "columns": flow_style(table_section["columns"])},
    }
    diff = write(args, overrides, "table", path, replace=("ingest.table.columns",))
    return diff, notes + default_notes, []


def infer_text(args, params: Params, table_column: tuple[str, str] | None = None, **_) -> tuple[str, list[str], list]:
    """The documents' proposal (pipelines/text_schema.py), written. table_column: (the table's text column, its
    label column) when data/raw is a table of documents; else class folders."""
    import dataclasses

    from components.ingest.kinds.text_rows import read_folder, read_table
    from tfpipe.config import TextParams

    refuse_hand_edits(args, "text", json.loads(json.dumps(asdict(TextParams()))))
    data = {"kind": "auto"}
    if table_column is not None:
        column, target = table_column
        reading = dataclasses.replace(
            params,
            data=dataclasses.replace(params.data, target=target),
            ingest=dataclasses.replace(params.ingest, text=TextParams(column=column)),
        )
        documents = read_table(find_table(args.raw_dir), reading)
        data = {"kind": "text", "target": target, "task": "classification"}
    else:
        documents = read_folder(args.raw_dir, params)
    proposal, notes = propose_text(documents.rows, documents.class_names, params.ingest.seed)
    if table_column is not None:
        proposal["column"] = table_column[0]
    defaults, default_notes = kind_defaults(params, "text", classification=True)
    overrides = {**defaults, "data": data, "ingest": {"text": proposal}}
    return write(args, overrides, "text", args.raw_dir), notes + default_notes, []
