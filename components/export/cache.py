"""Reads and writes .cache/export/<key>/: the export stage's converted variants, keyed on everything that made them.

A conversion (and for pruned_int8, qat_int8 and pqat_int8 the fine-tune before it) is most of the
export stage's time, and its inputs rarely change between runs: a new blessing, a `dvc repro -f` or
an edit of the report code reruns the stage with the same trained model. The key is the trained model's
content (its architecture and weights: model.keras itself differs on every save, by the date Keras
writes into it, also when seeded training reproduced every weight), the train images and labels the
variant was calibrated or fine-tuned on, the export params the variant reads, the source of the code
that builds it (pipelines/lineage.code_digest) and the versions of the libraries that convert and
fine-tune. The directory is ignored by git and DVC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

from tfpipe import lineage
from tfpipe.outputs import atomic_directory
from tfpipe.variants import MEASUREMENT_PARAMS, STEP_PARAMS, VARIANTS

MODEL_FILE, ENTRY_FILE = "model.tflite", "entry.json"
MAX_ENTRIES = 35  # most recently used entries kept: five sets of seven variants
LIBRARIES = ("tensorflow", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert")


@dataclasses.dataclass(frozen=True)
class CachedVariant:
    content: bytes | None  # None: the variant was built but does not run, so it is not exported (see note)
    note: str | None = None


def array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def model_digest(model) -> str:
    """sha256 of a Keras model's architecture (its JSON config) and of every weight, in order."""
    return hashlib.sha256(model.to_json().encode() + array_digest(*model.get_weights()).encode()).hexdigest()


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def variant_key(variant: str, *, params, model: str, train_digest: str, code: str, libraries: dict) -> str:
    """The content key of one variant (model: model_digest of the trained model), from the params and data its
    entry in tfpipe/variants.py reads: float variants read neither the train data nor the fine-tune params."""
    spec = VARIANTS[variant]
    unused = (STEP_PARAMS - spec.reads_params) | MEASUREMENT_PARAMS  # any other param, a new one too, is in the key
    reads_data = spec.reads_data
    return lineage.content_key(
        variant=variant,
        model=model,
        train=train_digest if reads_data else None,
        code=code,
        libraries=libraries,
        params={name: value for name, value in dataclasses.asdict(params).items() if name not in unused},
    )


def read_entry(directory: Path) -> CachedVariant | None:
    """The entry, or None when it is missing, incomplete or its file does not match the recorded sha256."""
    try:
        entry = json.loads((directory / ENTRY_FILE).read_text())
        content = (directory / MODEL_FILE).read_bytes() if entry["exported"] else None
        if content is not None and hashlib.sha256(content).hexdigest() != entry["sha256"]:  # truncated or changed
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    os.utime(directory)  # most recently used: prune_entries keeps it
    return CachedVariant(content, entry.get("note"))


def write_entry(directory: Path, variant: CachedVariant, description: dict) -> None:
    """Writes the entry whole or not at all (a killed run leaves the previous entry or none)."""
    with atomic_directory(directory) as staging:
        if variant.content is not None:
            (staging / MODEL_FILE).write_bytes(variant.content)
        (staging / ENTRY_FILE).write_text(
            json.dumps(
                {
                    **description,
                    "exported": variant.content is not None,
                    "note": variant.note,
                    "sha256": None if variant.content is None else hashlib.sha256(variant.content).hexdigest(),
                },
                indent=2,
                sort_keys=True,
            )
        )


def prune_entries(cache_dir: Path, keep: int = MAX_ENTRIES) -> None:
    """Deletes all but the `keep` most recently used entries (temporary staging directories are left to their
    writers)."""
    if not cache_dir.is_dir():
        return
    entries = sorted(
        (path for path in cache_dir.iterdir() if path.is_dir() and not path.name.startswith(".")),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for path in entries[keep:]:
        shutil.rmtree(path, ignore_errors=True)
