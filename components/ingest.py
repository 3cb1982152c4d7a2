"""Reads data/raw (any layout of components/ingest_layout.py); writes data/prepared, reports/ingest,
metrics/ingest.json.

One streaming pass: splits are decided from the labels first, then every image is read, decoded,
described (a row of the per-example table) and written to its TFRecord shard in a staging folder;
no pixels are kept. The Great Expectations suites then run on the tables, Data Docs and pictures
are written either way, and only a passing run moves the staging folder to data/prepared.

Rules for awkward input (README "Bad input"): only PNG, JPEG, BMP and GIF (first frame) are read;
an undecodable, truncated, empty (0-byte) or non-image file, a 16-bit image, an image above
`ingest.max_image_pixels` (decompression-bomb guard) and a symlink leading outside data/raw are
each a `problem` that fails the suite, named. Channels: modes 1, L, LA and all-grey palettes are
grayscale (C=1) and stay so (with channels: 3 they fail the suite); colour images are converted to
`expectations.channels` by Pillow's convert("L") or convert("RGB"), alpha dropped. Sizes are not
changed (the suite checks them, preprocess resizes for the model) unless `ingest.resize` is true:
then an image of another size is centre-cropped to the expected aspect ratio and resized to it
(Pillow's ImageOps.fit, Lanczos), its original size kept as source_height/source_width, which is
what a folder of photos of mixed sizes needs.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from components import ingest_report, ingest_validation
from components.ingest_layout import LayoutError, RawLayout, read_layout
from pipelines import paths
from pipelines.config import ExpectationParams, Params, load_params
from pipelines.outputs import atomic_directory, write_csv, write_json

SPLITS = ("train", "val", "test")  # pipelines.records.SPLITS, without importing TensorFlow
FORMATS = ("PNG", "JPEG", "BMP", "GIF")
GRAYSCALE_MODES = ("1", "L", "LA", "La")
# phash as imagehash.phash(hash_size=16) computes it (same bits), without its per-call overhead:
# a 64x64 grey thumbnail, the 16x16 lowest DCT-II frequencies, each bit = above their median.
_HASH_SIDE, _HASH_BITS_SIDE = 64, 16
_DCT = 2 * np.cos(np.pi * np.arange(_HASH_BITS_SIDE)[:, None] * (2 * np.arange(_HASH_SIDE) + 1) / (2 * _HASH_SIDE))


class IngestError(ValueError):
    """The raw data cannot be ingested; the message names every offending file or folder."""


def decode_image(data: bytes, channels: int, max_pixels: int = 25_000_000, info: dict | None = None) -> np.ndarray:
    """Encoded image bytes to a HxWxC uint8 array, by the rules in the module docstring.

    `info`, when given, receives the image's original Pillow mode as "source_mode", so the report
    can count every conversion (RGBA -> RGB, RGB -> L, palette -> L/RGB, 1 -> L).
    """
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        with image:
            if image.width * image.height > max_pixels:  # checked on the header, before decoding
                raise ValueError(
                    f"{image.width}x{image.height} = {image.width * image.height:,} pixels, above "
                    f"ingest.max_image_pixels = {max_pixels:,} (decompression-bomb guard)"
                )
            image.load()
            if info is not None:
                info["source_mode"] = image.mode
            if image.mode == "P":  # a palette: grayscale when every colour used is grey
                rgb = np.asarray(image.convert("RGB"))
                if (rgb == rgb[..., :1]).all():
                    return np.ascontiguousarray(rgb[..., :1])
                image = Image.fromarray(rgb)
            if image.mode.startswith(("I", "F")):  # converting would clip 16-bit or float pixels
                raise ValueError(f"{image.mode} pixels: only 8-bit images are supported")
            grayscale = image.mode in GRAYSCALE_MODES or channels == 1
            array = np.asarray(image.convert("L" if grayscale else "RGB"))
    except Image.DecompressionBombError as error:
        raise ValueError(f"decompression-bomb guard: {error}") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"cannot decode image: not a {'/'.join(FORMATS)} image") from None
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001  Pillow raises OSError, SyntaxError, EOFError, ... for broken files
        raise ValueError(f"cannot decode image: {error}") from None
    return np.ascontiguousarray(array.reshape(*array.shape[:2], -1))


def perceptual_hash(image: np.ndarray) -> str:
    """256-bit perceptual hash as 64 hex digits; near-identical images differ in a few bits."""
    picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).convert("L")
    pixels = np.asarray(picture.resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT @ pixels @ _DCT.T
    return np.packbits(low > np.median(low)).tobytes().hex()


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to the aspect ratio of height x width, then resize to it (HxWxC uint8 in and out)."""
    picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    fitted = np.asarray(ImageOps.fit(picture, (width, height), Image.Resampling.LANCZOS))
    return fitted.reshape(height, width, image.shape[2])


def describe_image(image: np.ndarray) -> dict:
    """The per-example columns computed from pixels."""
    return {
        "height": image.shape[0],
        "width": image.shape[1],
        "channels": image.shape[2],
        "min": int(image.min()),
        "max": int(image.max()),
        "mean": round(float(image.mean()), 4),
        "sha256": hashlib.sha256(image.tobytes()).hexdigest(),
        "phash": perceptual_hash(image),
    }


def assign_splits(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, given: np.ndarray | None = None
) -> np.ndarray:
    """A split name per example, stratified: per class, round(n x fraction) go to test and to val.

    With `given` splits (train/test[/val] folders) those are kept; when no example is given val,
    val_fraction of each class's train examples becomes val. Never fails: a class too small to
    split stays in train, and the per-class expectations report it.
    """
    rng = np.random.default_rng(seed)
    splits = np.full(len(labels), "train", dtype=object) if given is None else np.asarray(given, dtype=object).copy()
    carve_val = given is not None and not (splits == "val").any() and val_fraction > 0
    for label in np.unique(labels):
        if given is None:
            members = rng.permutation(np.flatnonzero(labels == label))
            test_count = round(len(members) * test_fraction)
            val_count = min(round(len(members) * val_fraction), len(members) - test_count)
            splits[members[:test_count]] = "test"
            splits[members[test_count : test_count + val_count]] = "val"
        elif carve_val:
            members = rng.permutation(np.flatnonzero((labels == label) & (splits == "train")))
            splits[members[: round(len(members) * val_fraction)]] = "val"
    return splits


def stream_examples(
    layout: RawLayout, splits: np.ndarray, staging: Path, params: Params
) -> tuple[list[dict], dict, dict]:
    """Decodes each example once, in the seeded shard order, and writes it to its split's shards.

    Returns one row per file (with `problem` set where it could not be read), per-split channel
    moments and up to samples_per_class thumbnails per class. Identical input gives identical shards.
    """
    import tensorflow as tf

    from pipelines.records import serialize_example, shard_paths

    expectations, num_shards = params.ingest.expectations, params.ingest.num_shards
    label_of = {name: label for label, name in enumerate(layout.class_names)}
    writers = {
        split: [tf.io.TFRecordWriter(str(path)) for path in shard_paths(staging, split, num_shards)] for split in SPLITS
    }
    written = dict.fromkeys(SPLITS, 0)
    moments = {split: ingest_report.ChannelMoments(expectations.channels) for split in SPLITS}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in layout.class_names}
    rows = []
    for index in np.random.default_rng(params.ingest.seed).permutation(len(layout.examples)):
        example, split = layout.examples[index], splits[index]
        row = {
            "file": example.file,
            "split": split,
            "class_name": example.class_name,
            "label": label_of[example.class_name],
            "problem": example.problem,
        }
        rows.append(row)
        if example.problem:
            continue
        try:
            image = decode_image(
                example.path.read_bytes(), expectations.channels, params.ingest.max_image_pixels, info=row
            )
        except (OSError, ValueError) as error:
            row["problem"] = str(error)
            continue
        if params.ingest.resize:
            row["source_height"], row["source_width"] = image.shape[:2]
            if image.shape[:2] != (expectations.image_height, expectations.image_width):
                image = fit_image(image, expectations.image_height, expectations.image_width)
        row.update(describe_image(image))
        moments[split].add(image)
        if len(samples[example.class_name]) < params.ingest.samples_per_class:
            samples[example.class_name].append(ingest_report.make_thumbnail(image))
        writers[split][written[split] % num_shards].write(serialize_example(image, row["label"], example.file))
        written[split] += 1
    for split_writers in writers.values():
        for writer in split_writers:
            writer.close()
    return sorted(rows, key=lambda row: row["file"]), moments, samples


def build_manifest(
    tables: dict[str, pd.DataFrame],
    class_names: list[str],
    expectations: ExpectationParams,
    num_shards: int,
    source: str,
    layout: str,
) -> dict:
    from pipelines.records import shard_paths

    classes = tables["classes"]
    splits = {
        split: {
            "count": int(classes[split].sum()),
            "shards": [path.name for path in shard_paths(".", split, num_shards)],
            "class_counts": dict(zip(class_names, classes[split].astype(int).tolist(), strict=True)),
        }
        for split in SPLITS
    }
    return {
        "class_names": class_names,
        "num_examples": len(tables["examples"]),
        "splits": splits,
        "image_shape": [expectations.image_height, expectations.image_width, expectations.channels],
        "source": source,
        "layout": layout,
        "examples_file": "examples.csv",
    }


def ingest(params: Params) -> dict:
    """The whole stage; returns the metrics, raises IngestError on bad data (after writing the reports)."""
    from pipelines.records import MANIFEST

    raw_dir, expectations = paths.RAW, params.ingest.expectations
    try:
        layout = read_layout(raw_dir)
    except LayoutError as error:
        raise IngestError(str(error)) from None
    label_of = {name: label for label, name in enumerate(layout.class_names)}
    labels = np.array([label_of[example.class_name] for example in layout.examples], dtype=np.int64)
    given = None if layout.kind != "split_folders" else np.array([example.split for example in layout.examples])
    splits = assign_splits(
        labels,
        val_fraction=params.ingest.val_fraction,
        test_fraction=params.ingest.test_fraction,
        seed=params.ingest.seed,
        given=given,
    )
    # Both outputs appear whole or not at all. The reports (Data Docs, pictures, statistics) are complete
    # for a failed validation too, and that is when the user needs them; the prepared data is not.
    with (
        atomic_directory(paths.PREPARED) as staging,
        atomic_directory(paths.INGEST_REPORTS, replace_on=(IngestError,)) as reports,
    ):
        start = time.perf_counter()
        rows, moments, samples = stream_examples(layout, splits, staging, params)
        seconds = time.perf_counter() - start
        print(f"ingest: read {len(rows):,} files in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):,.0f} images/s)")
        tables = ingest_validation.build_tables(rows, layout.class_names, expectations.near_duplicate_max_distance)
        statistics = ingest_report.build_statistics(tables["examples"], layout.class_names, moments)
        ingest_report.write_class_distribution(reports / "class_distribution.png", statistics, layout.class_names)
        ingest_report.write_sample_grid(reports / "samples.png", samples, layout.class_names)
        suites = ingest_validation.build_suites(
            expectations,
            len(layout.class_names),
            list(tables["examples"].columns),
            has_val=bool((splits == "val").any()),
        )
        results = ingest_validation.run_validation(tables, suites, docs_dir=reports / "data_docs")
        outcomes = [item.success for result in results.values() for item in result.results]
        validation = {"evaluated": len(outcomes), "passed": sum(outcomes)}
        write_json(
            reports / "validation.json",
            {"success": all(outcomes), **validation, "tables": {k: v.describe_dict() for k, v in results.items()}},
        )
        target_mode = "L" if expectations.channels == 1 else "RGB"
        modes = tables["examples"].get("source_mode")
        if modes is not None:  # every stated conversion, counted: nothing changes silently
            statistics["source_modes"] = {
                str(mode): int(count) for mode, count in modes.dropna().value_counts().sort_index().items()
            }
            statistics["converted_images"] = int((modes.dropna() != target_mode).sum())
        write_json(reports / "statistics.json", statistics)
        if not all(outcomes):
            raise IngestError(
                f"{len(outcomes) - sum(outcomes)} of {len(outcomes)} expectations failed "
                f"(see {paths.INGEST_REPORTS / 'data_docs/index.html'}):\n"
                + "\n".join(ingest_validation.describe_failures(results, tables))
            )
        manifest = build_manifest(
            tables,
            layout.class_names,
            expectations,
            params.ingest.num_shards,
            source=params.data.source,
            layout=layout.kind,
        )
        write_json(staging / MANIFEST, manifest)
        write_csv(staging / manifest["examples_file"], tables["examples"])
    metrics = {
        "num_examples": manifest["num_examples"],
        "num_classes": len(layout.class_names),
        "layout": layout.kind,
        "hidden_files_skipped": layout.hidden_files,
        "splits": {split: manifest["splits"][split]["count"] for split in SPLITS},
        "validation": validation,
        **statistics,
    }
    write_json(paths.INGEST_METRICS, metrics)
    return metrics


def main() -> None:
    params = load_params()
    try:
        metrics = ingest(params)
    except IngestError as error:
        print(f"ingest failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"ingest: {metrics['num_examples']} examples {metrics['splits']} -> {paths.PREPARED}, "
        f"data docs: {paths.INGEST_REPORTS / 'data_docs/index.html'}"
    )


if __name__ == "__main__":
    main()
