"""`python -m pipelines.params check`: reads params.yaml and the other YAML files DVC parses (dvc.yaml, the files its
`vars` and `params` name) the bounded way our stages do, before DVC does.

DVC's own YAML parser has no bound: on a params.yaml holding an alias bomb (nested `&a [*b, *b, ...]` anchors, a few
hundred bytes that expand to billions of values) `dvc repro` grows without limit inside DVC, before any stage runs.
Our reader (tfpipe/params_file.py) counts what the aliases expand to from the parser's events first and refuses
more than MAX_PARAMS_NODES values or MAX_PARAMS_BYTES characters in a second or two. `make data`, and so `make repro`
and `make test`, run this check before they run DVC; run it yourself before a bare `dvc repro` on files you did not
write. params.yaml is also validated against the schema, so a mistyped key is named before DVC starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfpipe.config import PARAMS_FILE, ParamsError
from tfpipe.params_file import MAX_PARAMS_BYTES, MAX_PARAMS_NODES, expanded_nodes, load_params, yaml_load

PIPELINE_FILE = "dvc.yaml"


def files_dvc_reads(pipeline: dict, folder: Path) -> list[Path]:
    """The YAML, JSON and TOML files dvc.yaml names in its `vars` and its stages' `params` (a name alone is a key
    of params.yaml, which is checked anyway)."""
    names = [entry for entry in pipeline.get("vars") or [] if isinstance(entry, str)]
    for stage in (pipeline.get("stages") or {}).values():
        for entry in (stage.get("params") or []) if isinstance(stage, dict) else []:
            names += list(entry) if isinstance(entry, dict) else []
    files = {folder / name.split(":")[0] for name in names if "${" not in name}
    return sorted(path for path in files if path.suffix in (".yaml", ".yml", ".json", ".toml") and path.is_file())


def check(folder: Path = Path(".")) -> list[str]:
    """What check prints: one line per file read (its values once aliases expand); raises ParamsError naming the
    file and the limit it passes, or the invalid keys of params.yaml."""
    lines = []
    pipeline_path = folder / PIPELINE_FILE
    pipeline = {}
    if pipeline_path.is_file():
        pipeline = yaml_load(pipeline_path.read_text(), pipeline_path) or {}  # bounded, before its names are read
    if not isinstance(pipeline, dict):
        raise ParamsError(f"{pipeline_path}: expected a mapping at the top level, got {type(pipeline).__name__}")
    for path in [folder / PARAMS_FILE, *(files_dvc_reads(pipeline, folder) if pipeline else []), pipeline_path]:
        if not path.is_file() or path.suffix == ".toml":
            continue
        text = path.read_text()
        if path.name == Path(PARAMS_FILE).name and path.parent == folder:
            load_params(path)  # bounded, then validated
        else:
            yaml_load(text, path)  # bounded (JSON is YAML)
        lines.append(f"{path}: {expanded_nodes(text):,} values once aliases expand (at most {MAX_PARAMS_NODES:,})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.params",
        description=(
            f"Checks params.yaml and the YAML files dvc.yaml reads before DVC parses them: at most "
            f"{MAX_PARAMS_BYTES:,} characters and {MAX_PARAMS_NODES:,} values once YAML aliases expand (DVC's parser "
            "has no bound), and params.yaml against the schema."
        ),
    )
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--dir", type=Path, default=Path("."), help="the project's root (default: here)")
    args = parser.parse_args(argv)
    try:
        lines = check(args.dir)
    except ParamsError as error:
        raise SystemExit(f"{error}\n(checked before DVC parses it: `dvc repro` would not bound it)") from None
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
