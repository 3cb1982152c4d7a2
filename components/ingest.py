"""Reads data/raw/<class>/<image>; writes data/prepared (shards, manifest, examples.csv), reports/ingest, metrics.

Channel rule: modes 1, L, LA and palettes whose colours are all grey are grayscale (C=1) and stay
so (with channels: 3 they fail the suite); colour images (RGB, RGBA, palettes, ...) are converted
to `expectations.channels` by Pillow's convert("L") or convert("RGB"), alpha dropped. Sizes are
never changed: the suite checks them. The manifest always lists train, val and test; with
val_fraction: 0, val has count 0 and empty shards. read_/write_/run_ functions touch the disk.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import sys
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from pipelines.config import ExpectationParams, Params, load_params
from pipelines.outputs import atomic_directory, write_json

PREPARED_DIR = Path("data/prepared")
REPORTS_DIR = Path("reports/ingest")
METRICS_FILE = Path("metrics/ingest.json")
SPLITS = ("train", "val", "test")  # pipelines.records.SPLITS, without importing TensorFlow
GRAYSCALE_MODES = ("1", "L", "LA", "La")
INDEX_COLUMNS = {"examples": "file", "classes": "class_name"}  # what a failure report names, per table
PRINTED_EXAMPLES = 5


class IngestError(ValueError):
    """The raw data cannot be ingested; the message names every offending file or folder."""


def read_image_paths(raw_dir: Path) -> tuple[list[str], list[Path]]:
    """Class names (sorted folder names) and the non-hidden files below them, sorted by path."""
    if not raw_dir.is_dir():
        raise IngestError(f"{raw_dir}: raw data folder not found (materialize the data first)")
    entries = sorted(entry for entry in raw_dir.iterdir() if not entry.name.startswith("."))
    if loose := [str(entry) for entry in entries if not entry.is_dir()]:
        raise IngestError(f"{raw_dir}: expected only <class>/<image> folders, found files: {', '.join(loose)}")
    if entries and {e.name for e in entries} <= set(SPLITS) and any(p.is_dir() for p in entries[0].iterdir()):
        raise IngestError(f"{raw_dir}: a pre-split <split>/<class>/<image> layout is not supported; use <class>/<image>")
    paths, empty = [], []
    for folder in entries:
        files = sorted(path for path in folder.rglob("*") if path.is_file()
                       and not any(part.startswith(".") for part in path.relative_to(folder).parts))
        paths.extend(files)
        if not files:
            empty.append(str(folder))
    if empty:
        raise IngestError(f"empty class folder(s), no images in: {', '.join(empty)}")
    if len(entries) < 2:
        raise IngestError(f"{raw_dir}: found {len(entries)} class folder(s); a classifier needs at least 2")
    return [entry.name for entry in entries], paths


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """Encoded image bytes to a HxWxC uint8 array, by the channel rule in the module docstring."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode == "P":  # a palette: grayscale when every colour used is grey
                rgb = np.asarray(image.convert("RGB"))
                if (rgb == rgb[..., :1]).all():
                    return np.ascontiguousarray(rgb[..., :1])
                image = Image.fromarray(rgb)
            if image.mode.startswith(("I", "F")):  # converting would clip 16-bit or float pixels
                raise ValueError(f"{image.mode} pixels: only 8-bit images are supported")
            grayscale = image.mode in GRAYSCALE_MODES or channels == 1
            array = np.asarray(image.convert("L" if grayscale else "RGB"))
    except UnidentifiedImageError:
        raise ValueError("cannot decode image: empty, or not a PNG/JPEG/BMP/GIF image") from None
    except Exception as error:  # Pillow raises OSError, SyntaxError, EOFError, ... for broken files
        raise ValueError(f"cannot decode image: {error}") from None
    return np.ascontiguousarray(array.reshape(*array.shape[:2], -1))


def read_images(paths: list[Path], channels: int) -> list[np.ndarray]:
    """Decodes every file; raises IngestError listing all that fail, so one run shows them all."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(decode_image(path.read_bytes(), channels=channels))
        except ValueError as error:
            errors.append(f"  {path}: {error}")
    if errors:
        raise IngestError(f"{len(errors)} file(s) could not be decoded:\n" + "\n".join(errors))
    return images


def build_example_table(files: list[str], class_names: list[str], images: list[np.ndarray]) -> pd.DataFrame:
    """The per-example table the suite validates; `files` are <class>/<name> paths."""
    label_of = {name: label for label, name in enumerate(class_names)}
    return pd.DataFrame([{
        "file": file, "class_name": file.split("/", 1)[0], "label": label_of[file.split("/", 1)[0]],
        "height": image.shape[0], "width": image.shape[1], "channels": image.shape[2],
        "min": int(image.min()), "max": int(image.max()), "mean": round(float(image.mean()), 4),
        "sha256": hashlib.sha256(image.tobytes()).hexdigest(),
        "phash": str(imagehash.phash(Image.fromarray(image[..., 0] if image.shape[2] == 1 else image))),
    } for file, image in zip(files, images)])


def build_suites(expectations: ExpectationParams, num_classes: int, columns: list[str]) -> dict[str, list]:
    """Expectations per table: "examples" (one row per image) and "classes" (one row per class)."""
    import great_expectations as gx

    e, x = expectations, gx.expectations
    return {
        "examples": [
            x.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
            *(x.ExpectColumnValuesToNotBeNull(column=column) for column in columns),
            x.ExpectColumnValuesToBeBetween(column="height", min_value=e.image_height, max_value=e.image_height),
            x.ExpectColumnValuesToBeBetween(column="width", min_value=e.image_width, max_value=e.image_width),
            x.ExpectColumnValuesToBeInSet(column="channels", value_set=[e.channels]),
            x.ExpectColumnValuesToBeBetween(column="min", min_value=e.pixel_min),
            x.ExpectColumnValuesToBeBetween(column="max", max_value=e.pixel_max),
            x.ExpectColumnValuesToBeBetween(column="mean", min_value=e.image_mean_min, max_value=e.image_mean_max,
                                            notes="A blank image has a mean near 0, an inverted one a high mean."),
            x.ExpectColumnValuesToBeUnique(column="sha256", notes="Identical pixels; also rules out leaks across splits."),
        ],
        "classes": [
            x.ExpectTableRowCountToBeBetween(min_value=2),
            x.ExpectColumnValuesToBeBetween(column="count", min_value=e.min_per_class),
            x.ExpectColumnValuesToBeBetween(column="share", max_value=e.max_class_share),
        ],
    }


def run_validation(tables: dict[str, pd.DataFrame], suites: dict[str, list], docs_dir: Path) -> dict:
    """Validates each table with its suite and builds Data Docs into docs_dir; returns {table: result}."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(site_name="ingest", site_config={
        "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())}})
    source = context.data_sources.add_pandas("ingest")
    results = {}
    for name, table in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=suites[name]))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        # Like a checkpoint, a validation reports failures in its result and never raises for them.
        results[name] = definition.run(batch_parameters={"dataframe": table}, result_format={
            "result_format": "SUMMARY", "unexpected_index_column_names": [INDEX_COLUMNS[name]]})
    context.build_data_docs(site_names=["ingest"])  # once for both tables: a build takes about a second
    return results


def describe_failures(results: dict) -> list[str]:
    """One line per failed expectation: table, type, column, bounds, unexpected count, a few examples."""
    lines = []
    for table, result in results.items():
        for item in (item for item in result.results if not item.success):
            kwargs = {k: v for k, v in item.expectation_config.kwargs.items() if k != "batch_id"}
            column = f"({kwargs.pop('column')})" if "column" in kwargs else ""
            rows = (item.result.get("partial_unexpected_index_list") or [])[:PRINTED_EXAMPLES]
            names = ", ".join(str(row[INDEX_COLUMNS[table]]) for row in rows)
            detail = (f"{item.result['unexpected_count']} unexpected, e.g. {names}" if "unexpected_count" in item.result
                      else f"observed {item.result.get('observed_value')!r}")
            lines.append(f"  {table}: {item.expectation_config.type}{column} {kwargs}: {detail}")
    return lines


def assign_splits(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """A split name per example, stratified by label; both fractions are of the whole data set."""
    indices, splits = np.arange(len(labels)), np.full(len(labels), "train", dtype=object)
    try:
        rest, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
        splits[test] = "test"
        if val_fraction > 0:
            _, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                      stratify=labels[rest], random_state=seed)
            splits[val] = "val"
    except ValueError as error:
        raise IngestError(f"cannot split {len(labels)} examples by class: {error}") from None
    return splits


def build_manifest(examples: pd.DataFrame, images: list[np.ndarray], class_names: list[str],
                   num_shards: int, source: str) -> dict:
    from pipelines.records import shard_paths

    splits = {split: {
        "count": int((examples["split"] == split).sum()),
        "shards": [path.name for path in shard_paths(".", split, num_shards)],
        "class_counts": {name: int(((examples["split"] == split) & (examples["class_name"] == name)).sum())
                         for name in class_names},
    } for split in SPLITS}
    return {"class_names": class_names, "image_shape": list(images[0].shape), "num_examples": len(examples),
            "splits": splits, "source": source, "examples_file": "examples.csv"}


def write_prepared(directory: Path, examples: pd.DataFrame, images: list[np.ndarray], manifest: dict, seed: int) -> None:
    """Shards (examples in a seeded order, dealt round-robin), manifest.json and examples.csv."""
    import tensorflow as tf

    from pipelines.records import MANIFEST, serialize_example

    order = np.random.default_rng(seed).permutation(len(examples))
    splits, labels, files = (examples[column].to_numpy() for column in ("split", "label", "file"))
    for split, entry in manifest["splits"].items():
        writers = [tf.io.TFRecordWriter(str(directory / name)) for name in entry["shards"]]
        for position, i in enumerate(i for i in order if splits[i] == split):
            writers[position % len(writers)].write(serialize_example(images[i], int(labels[i]), str(files[i])))
        for writer in writers:
            writer.close()
    write_json(directory / MANIFEST, manifest)
    examples.to_csv(directory / manifest["examples_file"], index=False)


def ingest(params: Params) -> dict:
    """The whole stage; returns the metrics, raises IngestError on bad data."""
    raw_dir, expectations = Path(params.data.raw_dir), params.ingest.expectations
    class_names, paths = read_image_paths(raw_dir)
    images = read_images(paths, channels=expectations.channels)
    examples = build_example_table([path.relative_to(raw_dir).as_posix() for path in paths], class_names, images)
    counts = examples["class_name"].value_counts().reindex(class_names, fill_value=0)
    classes = pd.DataFrame({"class_name": class_names, "count": counts.to_numpy(), "share": counts.to_numpy() / len(examples)})
    tables = {"examples": examples, "classes": classes}
    suites = build_suites(expectations, num_classes=len(class_names), columns=list(examples.columns))
    results = run_validation(tables, suites, docs_dir=REPORTS_DIR / "data_docs")
    outcomes = [item.success for result in results.values() for item in result.results]
    validation = {"evaluated": len(outcomes), "passed": sum(outcomes)}
    write_json(REPORTS_DIR / "validation.json", {"success": all(outcomes), **validation,
                                                 "tables": {k: v.describe_dict() for k, v in results.items()}})
    if not all(outcomes):
        raise IngestError(f"{len(outcomes) - sum(outcomes)} of {len(outcomes)} expectations failed "
                          f"(see {REPORTS_DIR / 'data_docs/index.html'}):\n" + "\n".join(describe_failures(results)))

    examples["split"] = assign_splits(examples["label"].to_numpy(), val_fraction=params.ingest.val_fraction,
                                      test_fraction=params.ingest.test_fraction, seed=params.ingest.seed)
    manifest = build_manifest(examples, images, class_names, num_shards=params.ingest.num_shards,
                              source=params.data.source)
    with atomic_directory(PREPARED_DIR) as staging:  # the next stage sees all of it or nothing
        write_prepared(staging, examples, images, manifest, seed=params.ingest.seed)
    metrics = {"num_examples": len(examples), "num_classes": len(class_names),
               "splits": {split: manifest["splits"][split]["count"] for split in SPLITS}, "validation": validation}
    write_json(METRICS_FILE, metrics)
    return metrics


def main() -> None:
    params = load_params()
    for stale in (PREPARED_DIR, REPORTS_DIR):  # a failed run must not leave a previous run's output
        shutil.rmtree(stale, ignore_errors=True)
    METRICS_FILE.unlink(missing_ok=True)
    try:
        metrics = ingest(params)
    except IngestError as error:
        print(f"ingest failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"ingest: {metrics['num_examples']} examples {metrics['splits']} -> {PREPARED_DIR}, "
          f"data docs: {REPORTS_DIR / 'data_docs/index.html'}")


if __name__ == "__main__":
    main()
