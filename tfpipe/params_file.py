"""Reads, validates and edits params.yaml: bounded YAML (size and alias expansion) read as DVC reads it, strict
validation into the frozen dataclasses of tfpipe/config.py with an error naming every bad key, and edits that keep
the file's comments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydantic
from ruamel.yaml import YAML, YAMLError

from tfpipe.config import PARAMS_FILE, Params, ParamsError

# Keys that moved to another section: the error says where they went.
MOVED_KEYS = {
    "train.log_augmented_images": "tracking.log_augmented_images",
    "train.histogram_freq": "tracking.histogram_freq",
    "data.raw_dir": "dvc.yaml's vars (paths.raw): the raw folder is a DVC dependency, not a param",
}


MAX_PARAMS_BYTES = 1_000_000  # params.yaml is a page of settings; a megabyte is not a mistake


MAX_PARAMS_NODES = 100_000  # values after YAML aliases expand: nested aliases reach billions ("billion laughs")


def expanded_nodes(text: str) -> int:
    """How many values the document holds once every alias (*name) is expanded, counted from the parser's events
    without building anything (pure-Python parser: lazy)."""
    from ruamel.yaml import events

    sizes: dict[str, int] = {}  # anchor -> the values its node holds
    stack: list[list] = []  # open collections: [anchor, values so far]
    total = 0
    for event in YAML(typ="rt", pure=True).parse(text):
        if isinstance(event, events.CollectionStartEvent):
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, events.CollectionEndEvent):
            anchor, count = stack.pop()
        elif isinstance(event, events.ScalarEvent):
            anchor, count = event.anchor, 1
        elif isinstance(event, events.AliasEvent):
            anchor, count = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor:
            sizes[anchor] = count
        if stack:
            stack[-1][1] += count
        else:
            total += count
    return total


def yaml_load(text: str, path: Path | str = PARAMS_FILE):
    """A YAML document as plain data, read as DVC reads params.yaml (ruamel.yaml's safe loader, YAML 1.2): `1e-5`
    is a float, `on` a string (`jit_compile: on`), `010` is ten, so a stage sees what `dvc params diff` shows.

    Its size, and its size once aliases expand, are bounded before anything is built (an alias bomb exhausts
    memory in seconds): a ParamsError names the file and the limit."""
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamsError(
            f"{path}: {len(text):,} characters, more than the {MAX_PARAMS_BYTES:,} a params file may hold"
        )
    try:
        nodes = expanded_nodes(text)
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if nodes > MAX_PARAMS_NODES:
        raise ParamsError(
            f"{path}: {nodes:,} values once its YAML aliases (*name) expand, more than {MAX_PARAMS_NODES:,}: nested "
            "aliases expand exponentially (an alias bomb); write the values out"
        )
    return YAML(typ="safe").load(text)


def _describe(error: pydantic.ValidationError, path: Path) -> str:
    lines, seen = [f"{path}: {{count}} invalid parameter(s)"], {}
    for item in error.errors():
        # A union (an integer or "auto") reports one error per branch, tagged "constrained-int", "literal['auto']":
        # one line a key.
        # A union with a section (a mapping or "auto") tags the section's branch by its class name.
        key = ".".join(
            str(part) for part in item["loc"] if not re.search(r"[-\[]", str(part)) and not str(part).endswith("Params")
        )
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            moved = f"; it moved to {MOVED_KEYS[key]}" if key in MOVED_KEYS else ""
            seen[key] = f"  {key}: unknown key (check the spelling; see the schema in tfpipe/config.py){moved}"
        elif key in seen:
            seen[key] = seen[key].replace(" (got ", f", or {item['msg'][0].lower()}{item['msg'][1:]} (got ", 1)
        else:
            value = item.get("input")
            seen[key] = f"  {key}: {item['msg']} (got {value!r}, {_yaml_type(value)})"
    lines += seen.values()
    return "\n".join(lines).replace("{count}", str(len(seen)), 1)


def _yaml_type(value) -> str:
    """How YAML read a value, for error messages: '0.5' in quotes is a string, not a number."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string (quoted or not a number)",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def parse_params(raw: dict, path: Path = PARAMS_FILE) -> Params:
    """Validates a params mapping strictly (no "0.5" -> 0.5, "yes" -> True, true -> 1); raises ParamsError naming
    every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        document = json.dumps(
            raw
        )  # JSON's strict mode: a list is a valid tuple, an integer a valid float, nothing else converts
    except (TypeError, ValueError) as error:
        raise ParamsError(
            f"{path}: a value YAML read as neither text, number, boolean, list nor mapping ({error}); quote it"
        ) from None
    try:
        return pydantic.TypeAdapter(Params).validate_json(document, strict=True)
    except pydantic.ValidationError as error:
        raise ParamsError(_describe(error, path)) from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Reads and validates params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    try:
        raw = yaml_load(path.read_text(), path) or {}
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, path)


def merge(base: dict, overrides: dict) -> dict:
    """Nested dict merge: overrides win, sections not mentioned stay as they are."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            merge(base.get(key, {}), value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def _drop(document, dotted: str) -> None:
    """Removes the value at a dotted key, if it is there."""
    *parents, key = dotted.split(".")
    node = document
    for parent in parents:
        node = node.get(parent) if isinstance(node, dict) else None
    if isinstance(node, dict) and key in node:
        del node[key]


def update_params_file(
    overrides: dict,
    path: Path | str = PARAMS_FILE,
    comments: dict[str, str] | None = None,
    validate: bool = True,
    replace: tuple[str, ...] = (),
) -> str:
    """Merges `overrides` into params.yaml keeping its comments and layout (ruamel.yaml round trip); returns a
    unified diff.

    The merged params are validated first (unless validate=False): a change that would not load is
    refused and nothing is written. `comments` sets end-of-line comments by dotted key ("ingest.expectations": "# ...").
    `replace` names dotted keys whose mapping is set whole rather than merged (a table's columns: a column of the
    previous table must not stay).
    """
    import difflib
    import io

    from tfpipe.outputs import write_text

    path = Path(path)
    before = path.read_text() if path.is_file() else ""
    current = yaml_load(before, path) or {}
    for dotted in replace:
        _drop(current, dotted)
    if validate:
        parse_params(merge(current, overrides), path)
    round_trip = YAML()
    round_trip.width = 4096  # never re-wrap a long line or flow list
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = round_trip.load(before) if before.strip() else {}

    def update(node, values, prefix=""):
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict) and f"{prefix}{key}" not in replace:
                update(node[key], value, f"{prefix}{key}.")
            else:
                node[key] = value  # in place: the key keeps its position and its comment

    update(document, overrides)
    for dotted, comment in (comments or {}).items():
        *parents, key = dotted.split(".")
        node = document
        for parent in parents:
            node = node[parent]
        existing = node.ca.items.get(key, [None, None, None, None])[2]
        node.yaml_add_eol_comment(
            comment if comment.startswith("#") else f"# {comment}",
            key,
            column=existing.column if existing is not None else None,
        )
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    after = buffer.getvalue()
    if after != before:
        write_text(path, after)
    return "".join(
        difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True), str(path), str(path))
    )
