"""`python -m pipelines`: the command-line tools around the stages, one line each;
`python -m pipelines <tool> ...` runs one."""

from __future__ import annotations

import importlib
import sys

TOOLS = {
    "materialize": "write a dataset (mnist_5k, tfds:<name>, your folder) into data/raw and track it with DVC",
    "schema": "propose ingest.expectations from the images in data/raw, into params.yaml (comments kept)",
    "presets": "list, show or apply the textbook workloads' params (mnist, fashion_mnist, cifar10, your folder)",
    "predict": "classify image files with an exported SavedModel, .tflite file or MLflow model",
    "store": "the MLflow store: mark-stale, trust-version (a legacy version), champion (where it is), promote",
    "params": "check params.yaml and the YAML files DVC reads with a bound on their size and aliases, before DVC does",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TOOLS:
        width = max(map(len, TOOLS))
        print("usage: python -m pipelines <tool> [--help]  (or python -m pipelines.<tool>)\n\ntools:")
        print("\n".join(f"  {name:{width}}  {description}" for name, description in TOOLS.items()))
        print("\nThe stages themselves run with `dvc repro` (dvc.yaml); `python -m components.<stage>` runs one.")
        raise SystemExit(0 if not argv or argv[0] in ("-h", "--help") else f"unknown tool {argv[0]!r}")
    raise SystemExit(importlib.import_module(f"pipelines.{argv[0]}").main(argv[1:]) or 0)


if __name__ == "__main__":
    main()
