"""What lets a killed training resume, and only on the same inputs: the run key, the backup check, the
tf.data cache location and early stopping whose state survives the kill (trust rule 1, README "Reliability")."""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfpipe import lineage, paths
from tfpipe.config import Params, TrainParams
from tfpipe.outputs import write_bytes, write_json


def run_key(params: Params, prepared_dir: Path = paths.PREPARED, preprocess_dir: Path = paths.PREPROCESS) -> str:
    """Keys the backup, checkpoint and tf.data cache files on what the stage reads, so a change never resumes stale
    state.

    That is the content of its inputs (the prepared shards and the preprocessing statistics, as
    DVC's hashes would see them), every param the stage reads (data.source and train; tracking
    is logging only), and the source of every project module the stage imports.
    """
    return lineage.content_key(
        data={"source": params.data.source, "name": params.data.name},
        train=asdict(params.train),
        inputs={
            str(prepared_dir): lineage.tree_digest(prepared_dir),
            str(preprocess_dir): lineage.tree_digest(preprocess_dir),
        },
        code=lineage.code_digest("components.train"),
    )


MEMORY_CACHE_BYTES = 1 << 30  # train.cache auto: the decoded train and val splits in memory up to 1 GiB ...
MEMORY_CACHE_SHARE = 8  # ... and an eighth of the machine's memory


def memory_cache_budget() -> int:
    """The bytes train.cache: auto lets the decoded splits take in memory (MEMORY_CACHE_BYTES, MEMORY_CACHE_SHARE)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return MEMORY_CACHE_BYTES
    return min(MEMORY_CACHE_BYTES, physical // MEMORY_CACHE_SHARE)


def resolve_cache(cache: str, manifest: dict) -> str:
    """train.cache auto: "memory" when the decoded train and val splits (uint8, as stored) fit the memory budget,
    else "none" (each epoch reads the shards again: TFRecord parsing is cheap next to a training step). The
    other values are the user's."""
    if cache != "auto":
        return cache
    splits = manifest["splits"]
    size = sum(splits.get(split, {}).get("count", 0) for split in ("train", "val")) * int(
        np.prod(manifest["image_shape"])
    )
    budget = memory_cache_budget()
    chosen = "memory" if size <= budget else "none"
    print(
        f"train.cache auto: {chosen} (the train and val splits take {size / 2**20:,.0f} MiB, the budget "
        f"{budget / 2**20:,.0f} MiB)"
    )
    return chosen


def cache_location(cache: str, key: str, worker: str = "") -> str:
    """train.cache as tf.data takes it: a file prefix gets the run key (and worker) appended, so a cache
    file written from other data or params is never read; a killed run's partial cache files are removed."""
    if cache in ("memory", "none"):
        return cache
    prefix = Path(f"{cache}-{key}{worker}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if not Path(f"{prefix}.index").is_file():  # TF refuses to write over a killed run's lockfile
        for partial in prefix.parent.glob(f"{prefix.name}*"):
            print(f"removing a partial tf.data cache file of a killed run: {partial}")
            partial.unlink()
    return str(prefix)


class CorruptedBackup(RuntimeError):
    """A BackupAndRestore checkpoint exists but cannot be read: never silently restart from epoch 1."""


def verify_backup(backup_dir: Path) -> int | None:
    """The epoch a killed run would resume from, or None without a backup; raises CorruptedBackup."""
    checkpoints = (
        backup_dir / "chief"
    )  # BackupAndRestore's own files (early_stopping/ beside it is ResumableEarlyStopping's)
    files = [path for path in checkpoints.rglob("*") if path.is_file()] if checkpoints.exists() else []
    if not files:
        return None
    hint = f"delete {backup_dir} to start training from the first epoch"
    latest = tf.train.latest_checkpoint(str(backup_dir / "chief"))
    if latest is None:
        raise CorruptedBackup(f"{backup_dir}: training backup has files but no readable checkpoint index; {hint}")
    try:
        reader = tf.train.load_checkpoint(latest)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        epoch = next(
            (reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if "ckpt_saved_epoch" in name), None
        )
    except (tf.errors.OpError, ValueError) as error:
        raise CorruptedBackup(
            f"{latest}: training backup is corrupted ({type(error).__name__}: {str(error).splitlines()[0]}); {hint}"
        ) from None
    return None if epoch is None else int(epoch) + 1


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose state (best value, epochs waited, best weights) survives a killed run.

    BackupAndRestore restores the model, the optimizer and the epoch, not the callbacks: a resumed
    run's EarlyStopping would forget the epochs before the kill and could restore a worse epoch's
    weights at the end. This one saves its state into the run's backup directory after every epoch
    and reads it back when it belongs to the epoch the backup resumes after. Only the chief writes;
    every worker of a multi-worker run reads the chief's, as they do with BackupAndRestore.
    """

    def __init__(self, state_dir: Path, resume_epoch: int | None, write: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.state_dir, self.resume_epoch, self.write = Path(state_dir), resume_epoch, write

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state_file = self.state_dir / "state.json"
        if self.resume_epoch is None or not state_file.is_file():
            return
        state = json.loads(state_file.read_text())
        # Killed between the two saves: keep the backup, restart the patience.
        if state["epoch"] != self.resume_epoch - 1:
            print(
                f"early stopping: its saved state is of epoch {state['epoch'] + 1}, "
                f"the backup of epoch {self.resume_epoch}; "
                "it counts its patience from the resumed epoch"
            )
            return
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
        if self.restore_best_weights and (self.state_dir / "best_weights.npz").is_file():
            with np.load(self.state_dir / "best_weights.npz") as saved:
                self.best_weights = [saved[f"arr_{index}"] for index in range(len(saved.files))]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if not self.write:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch == epoch:
            buffer = io.BytesIO()
            np.savez(buffer, *self.best_weights)
            write_bytes(self.state_dir / "best_weights.npz", buffer.getvalue())
        write_json(
            self.state_dir / "state.json",
            {"epoch": epoch, "wait": self.wait, "best": float(self.best), "best_epoch": self.best_epoch},
        )


def early_stopping_options(params: TrainParams, has_val: bool) -> dict:
    """EarlyStopping's options from train's params, "auto" already resolved (once, by the stage's set-up)."""
    if params.epochs == "auto" or params.early_stopping_patience == "auto":
        raise ValueError("train.epochs/early_stopping_patience are 'auto': resolve the schedule first (set_up)")
    return {
        "monitor": "val_loss" if has_val else "loss",
        "patience": params.early_stopping_patience,
        "restore_best_weights": True,
    }
