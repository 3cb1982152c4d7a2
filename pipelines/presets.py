"""Parameter presets for the textbook workloads (pipelines/presets/*.yaml): list, show, apply to params.yaml.

A preset holds only the keys that differ from the defaults. `apply` merges it into params.yaml
keeping its comments; `show` prints the equivalent `dvc exp run -S ...` command instead.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from pipelines.config import PARAMS_FILE, parse_params

PRESETS_DIR = Path(__file__).with_name("presets")


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    with path.open() as stream:
        return yaml.safe_load(stream) or {}


def merge(base: dict, overrides: dict) -> dict:
    """Nested dict merge: overrides win, sections not mentioned stay as they are."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(base.get(key, {}), value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def set_arguments(overrides: dict, prefix: str = "") -> list[str]:
    """{'train': {'model': 'vgg13'}} -> ['train.model=vgg13'] for `dvc exp run -S`."""
    arguments = []
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            arguments += set_arguments(value, f"{name}.")
        else:
            arguments.append(f"{name}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return arguments


def apply_preset(name: str, params_file: Path = PARAMS_FILE) -> None:
    """Merges the preset into params_file, validated first, keeping the file's comments."""
    from ruamel.yaml import YAML  # round-trip YAML (a DVC dependency) keeps the comments

    overrides = load_preset(name)
    with params_file.open() as stream:
        plain = yaml.safe_load(stream) or {}
    parse_params(merge(plain, overrides), params_file)  # refuse a preset that would not validate

    round_trip = YAML()
    with params_file.open() as stream:
        document = round_trip.load(stream)

    def update(node, values):
        for key, value in values.items():
            if isinstance(value, dict) and key in node and isinstance(node[key], dict):
                update(node[key], value)
            else:
                node[key] = value

    update(document, overrides)
    with params_file.open("w") as stream:
        round_trip.dump(document, stream)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the known presets")
    for command in ("show", "apply"):
        commands.add_parser(command).add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in preset_names():
            description = (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            print(f"{name:24s} {description}")
    elif args.command == "show":
        print("dvc exp run " + " ".join(f"-S '{argument}'" for argument in set_arguments(load_preset(args.name))))
    else:
        apply_preset(args.name)
        print(f"{PARAMS_FILE}: applied preset {args.name}; run `dvc repro` (tfds sources: `python -m pipelines.materialize` first)")


if __name__ == "__main__":
    main()
