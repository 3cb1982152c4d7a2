"""Reading data/raw's files on every core: each file decoded once by the shared decoder (tfpipe/images.py) and
described (a row of the per-example table), in worker processes; reads files, writes nothing.

Decoding, hashing and describing are Python and Pillow work that holds the GIL, so threads would not help: the
files are read by `workers` processes (spawned, so they start without TensorFlow and never inherit its threads), in
chunks of CHUNK files with at most WINDOW chunks per worker in flight, and handed back in the order asked for.
Memory is bounded by the window, not by the number of files, and the result is the same, row for row and byte for
byte, whatever the number of workers. Below PARALLEL_MIN files the start-up of the workers (~0.5 s) costs more than
it saves and the files are read in this process.

`TFPIPE_WORKERS` sets the number of worker processes (default: the cores this process may run on; 1 reads
everything in this process). It changes how fast, never what is written, so it is not a DVC param.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from components.ingest.layout import RawExample
from tfpipe.config import IngestParams
from tfpipe.images import DecodeRules, NotAnImage, decode_image, describe_image, is_image_name

CHUNK = 256  # files per task: large enough that a task's overhead is small, small enough to spread the work
WINDOW = 8  # chunks in flight per worker: keeps every worker busy while the reader imports TensorFlow or writes
PARALLEL_MIN = 2_000  # fewer files are read in this process


def decode_rules(params: IngestParams) -> DecodeRules:
    """The decoding every reader of this dataset's images applies (recorded in the manifest, exported with the
    model, applied by pipelines.predict)."""
    return DecodeRules(
        channels=params.expectations.channels,
        alpha_background=params.alpha_background,
        max_pixels=params.max_image_pixels,
    )


def target_size(params: IngestParams) -> tuple[int, int] | None:
    """The size images are fitted to (ingest.resize), or None: sizes are checked, not changed."""
    expectations = params.expectations
    return (expectations.image_height, expectations.image_width) if params.resize else None


def read_example(
    example: RawExample, rules: DecodeRules, size: tuple[int, int] | None
) -> tuple[dict, np.ndarray | None]:
    """One raw file's row (its `problem` or `skipped` reason set when it has no pixels) and its decoded pixels."""
    row = {
        "file": example.file,
        "class_name": example.class_name,
        "given_split": example.split,
        "problem": example.problem,
        "skipped": None,
    }
    if example.problem:
        return row, None
    try:
        decoded = decode_image(example.path.read_bytes(), rules, size)
    except NotAnImage as error:
        if is_image_name(example.file):
            row["problem"] = f"named like an image, but {error}"
        else:
            row["skipped"] = f"not an image ({Path(example.file).suffix or 'no extension'})"
        return row, None
    except (OSError, ValueError) as error:
        row["problem"] = str(error)
        return row, None
    pixels = decoded.pixels
    row.update(
        # Stored as grayscale, or colour whose channels agree (a grey picture saved as RGB): the schema's test.
        grayscale=decoded.source_grayscale or (pixels.shape[2] == 3 and bool((pixels == pixels[..., :1]).all())),
        source_mode=decoded.source_mode,
        source_height=decoded.source_height,
        source_width=decoded.source_width,
        source_grayscale=decoded.source_grayscale,
        orientation=decoded.orientation,
        conversions=";".join(decoded.conversions),
        **describe_image(decoded.pixels),
    )
    return row, decoded.pixels


def _read_chunk(
    chunk: list[tuple[int, RawExample]], rules: DecodeRules, size: tuple[int, int] | None
) -> list[tuple[int, dict, np.ndarray | None]]:
    return [(index, *read_example(example, rules, size)) for index, example in chunk]


def worker_count() -> int:
    """TFPIPE_WORKERS, else the cores this process may run on."""
    value = os.environ.get("TFPIPE_WORKERS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"TFPIPE_WORKERS={value!r}: expected a whole number of worker processes, 1 or more")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_examples(
    examples: list[RawExample],
    rules: DecodeRules,
    size: tuple[int, int] | None,
    order: Iterable[int] | None = None,
    workers: int | None = None,
) -> Iterator[tuple[int, dict, np.ndarray | None]]:
    """(index, row, pixels) for examples[index], for each index of `order` (default: all, in order), in that order."""
    order = list(range(len(examples)) if order is None else order)
    workers = worker_count() if workers is None else workers
    if workers < 2 or len(order) < PARALLEL_MIN:
        for index in order:
            yield (index, *read_example(examples[index], rules, size))
        return
    chunks = (
        [(index, examples[index]) for index in order[start : start + CHUNK]] for start in range(0, len(order), CHUNK)
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: deque[Future] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_read_chunk, chunk, rules, size))
                if len(pending) >= WINDOW * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:  # a failure (or a consumer that stops early) cancels what has not started
            for future in pending:
                future.cancel()
