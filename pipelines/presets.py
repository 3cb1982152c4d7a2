"""Parameter presets for the textbook workloads (pipelines/presets/*.yaml): list, show, apply to params.yaml.

A preset holds only the keys that differ from the defaults. `apply` merges it into params.yaml
keeping its comments; `show` prints the equivalent `dvc exp run -S ...` command instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from tfpipe.config import PARAMS_FILE
from tfpipe.params_file import update_params_file, yaml_load

PRESETS_DIR = Path(__file__).with_name("presets")


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    with path.open() as stream:
        return yaml_load(stream.read()) or {}


def set_arguments(overrides: dict, prefix: str = "") -> list[str]:
    """{'train': {'model': 'vgg13'}} -> ['train.model=vgg13'] for `dvc exp run -S`."""
    arguments = []
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            arguments += set_arguments(value, f"{name}.")
        else:
            arguments.append(
                f"{name}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            )
    return arguments


def apply_preset(name: str, params_file: Path = PARAMS_FILE) -> str:
    """Merges the preset into params_file, validated first, keeping the file's comments; returns the diff."""
    return update_params_file(load_preset(name), params_file)


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
        print(
            f"{PARAMS_FILE}: applied preset {args.name}; run `dvc repro` "
            "(tfds sources: `python -m pipelines.materialize` first)"
        )


if __name__ == "__main__":
    main()
