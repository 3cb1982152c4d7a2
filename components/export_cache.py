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

from pipelines import lineage
from pipelines.outputs import atomic_directory

MODEL_FILE, ENTRY_FILE = "model.tflite", "entry.json"
MAX_ENTRIES = 35  # most recently used entries kept: five sets of seven variants
LIBRARIES = ("tensorflow", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert")
# Export params that never change a converted file: naming, measurement and the gate.
MEASUREMENT_PARAMS = {
    "model_name",
    "variants",
    "num_threads",
    "latency_runs",
    "throughput_batch_size",
    "gate_variant",
    "max_int8_accuracy_drop",
    "max_int8_class_drop",
}
CALIBRATION_PARAMS = {"representative_samples", "seed"}
PRUNING_PARAMS = {
    "prune_target_sparsity",
    "prune_epochs",
    "prune_end_fraction",
    "prune_learning_rate",
    "prune_min_weights",
}
QAT_PARAMS = {"qat_epochs", "qat_learning_rate"}
# The params each variant does not read; any other param (a new one included) is part of its key.
UNUSED_PARAMS = {
    "float32": CALIBRATION_PARAMS | PRUNING_PARAMS | QAT_PARAMS,
    "float16": CALIBRATION_PARAMS | PRUNING_PARAMS | QAT_PARAMS,
    "dynamic_range": CALIBRATION_PARAMS | PRUNING_PARAMS | QAT_PARAMS,
    "int8": PRUNING_PARAMS | QAT_PARAMS,
    "pruned_int8": QAT_PARAMS,
    "qat_int8": PRUNING_PARAMS,
    "pqat_int8": set(),
}


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
    """The content key of one variant (model: model_digest of the trained model); float variants read neither the
    train data nor the fine-tune params."""
    unused = UNUSED_PARAMS.get(variant, set()) | MEASUREMENT_PARAMS
    reads_data = variant not in ("float32", "float16", "dynamic_range")
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
