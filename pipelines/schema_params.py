"""The params.yaml side of the schema command, for every kind: the marker and fingerprint an inferred section carries
(a later run replaces it only while nobody edited it), the section as params.yaml holds it, and the one-line YAML
forms a proposal is written in. Reads params.yaml, writes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tfpipe.params_file import load_params

MARKER = "inferred by python -m pipelines.schema"


def fingerprint(expectations: dict) -> str:
    """A short hash of the expectation values (types included), written beside them as a comment."""
    return hashlib.sha256(json.dumps(expectations, sort_keys=True).encode()).hexdigest()[:12]


def current_expectations(params_file: Path, key: str = "expectations") -> tuple[dict, str | None]:
    """The ingest section `key` params.yaml holds (expectations, or a table's `table`; defaults filled in) and the
    fingerprint its marker comment names."""
    from dataclasses import asdict

    from ruamel.yaml import YAML

    params = load_params(params_file)
    document = YAML().load(params_file.read_text())
    token = (
        (document.get("ingest") or {}).ca.items.get(key, [None, None, None, None])[2] if "ingest" in document else None
    )
    comment = token.value if token is not None else ""
    recorded = (
        comment.split("fingerprint ", 1)[1].split(")", 1)[0]
        if MARKER in comment and "fingerprint " in comment
        else None
    )
    return json.loads(json.dumps(asdict(getattr(params.ingest, key)))), recorded


def edited_keys(current: dict, recorded: str | None, proposal: dict) -> list[str]:
    """The expectation keys edited by hand since the last inference (none if the values still match its fingerprint)."""
    if recorded is not None and fingerprint(current) == recorded:
        return []
    return sorted(key for key in current if current[key] != proposal.get(key))


def flow_list(values: list):
    """A list written on one line of params.yaml ([a, b])."""
    from ruamel.yaml.comments import CommentedSeq

    listed = CommentedSeq(values)
    listed.fa.set_flow_style()
    return listed


def flow_style(columns: dict):
    """Each column's entry on one line of params.yaml (a flow mapping), in the file's order."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    styled = CommentedMap()
    for name, spec in columns.items():
        entry = CommentedMap()
        for key, value in spec.items():
            if isinstance(value, list):
                value = CommentedSeq(value)
                value.fa.set_flow_style()
            entry[key] = value
        entry.fa.set_flow_style()
        styled[name] = entry
    return styled
