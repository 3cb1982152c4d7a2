"""Writes stage outputs so that a failed stage never leaves a half-written output behind."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(path: Path | str):
    """Yields a temporary sibling directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(staging, path)


def write_json(path: Path | str, data) -> None:
    """Writes JSON via a temporary file and a rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("w") as stream:
        json.dump(data, stream, indent=2, sort_keys=True, default=str)
        stream.write("\n")
    os.replace(staging, path)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_trained_model(train_dir: Path | str):
    """The trained Keras model (for inference), after checking it is the file the train stage wrote.

    train records the model's sha256 in model.json (inside artifacts/train, whose hash dvc.lock
    records); a model.keras replaced or edited by hand no longer matches and is refused.
    """
    import tf_keras as keras

    train_dir = Path(train_dir)
    with (train_dir / "model.json").open() as stream:
        expected = json.load(stream).get("model_sha256")
    actual = file_sha256(train_dir / "model.keras")
    if expected != actual:
        raise ValueError(f"{train_dir / 'model.keras'}: sha256 {actual[:16]}… does not match {str(expected)[:16]}… recorded by "
                         f"the train stage in {train_dir / 'model.json'}: the model was changed after training; run `dvc repro train`")
    # safe_mode (the default) refuses Lambda layers and other arbitrary code in the archive.
    return keras.models.load_model(train_dir / "model.keras", compile=False, safe_mode=True)
