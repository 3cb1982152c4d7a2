"""Shared fixtures: a tiny prepared dataset on disk, an MLflow store inside the test's tmp dir, and one
reproduced copy of the repository that end-to-end tests copy instead of running their own `dvc repro`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python -m pytest` adds it already; the `pytest` script does not
    sys.path.insert(0, str(ROOT))

import tfpipe  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)


def pytest_configure(config):
    """The stages the tests run use warm servers of their own (tfpipe/warm.py, opt-in: on here unless TFPIPE_WARM
    says otherwise), in a folder of this session's, which the session stops at its end: none of a developer's, none
    left behind. Only the controller (xdist's workers inherit the variables)."""
    import os
    import tempfile

    os.environ.setdefault("TFPIPE_WARM", "1")
    if not hasattr(config, "workerinput") and "TFPIPE_WARM_DIR" not in os.environ:
        config.tfpipe_warm_dir = tempfile.mkdtemp(prefix="tfpipe-warm-tests-")
        os.environ["TFPIPE_WARM_DIR"] = config.tfpipe_warm_dir


def pytest_unconfigure(config):
    import shutil

    from tfpipe import warm

    if getattr(config, "tfpipe_warm_dir", None):
        warm.stop_all()
        shutil.rmtree(config.tfpipe_warm_dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (servers in tests bind only there)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process_group(process, timeout: float = 20) -> None:
    """SIGTERM to a server started with start_new_session=True (it and its workers), SIGKILL if it lingers."""
    import contextlib
    import os
    import signal
    import subprocess

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def make_images(num_classes: int, per_class: int, shape=(12, 12, 1), seed: int = 0):
    """Separable toy classes: class k is a bright square in a different place, plus noise."""
    rng = np.random.default_rng(seed)
    height, width, channels = shape
    images, labels = [], []
    for label in range(num_classes):
        for _ in range(per_class):
            image = rng.integers(0, 40, size=shape).astype(np.int32)
            top = (label * 3) % max(1, height - 4)
            image[top : top + 4, 2:6, :] += 200
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def write_prepared(
    directory: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str], seed: int = 0
) -> dict:
    """Writes shards + manifest.json in the format ingest produces (80/10/10 split)."""
    import tensorflow as tf

    from tfpipe import records

    directory.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(images))
    cut_train, cut_val = int(0.8 * len(order)), int(0.9 * len(order))
    parts = {"train": order[:cut_train], "val": order[cut_train:cut_val], "test": order[cut_val:]}
    manifest = {
        "class_names": class_names,
        "image_shape": list(images.shape[1:]),
        "num_examples": int(len(images)),
        "splits": {},
        "source": "test",
    }
    for split, indices in parts.items():
        path = records.shard_paths(directory, split, 1)[0]
        with tf.io.TFRecordWriter(str(path)) as writer:
            for index in indices:
                writer.write(
                    records.serialize_example(
                        images[index], int(labels[index]), f"{class_names[labels[index]]}/{index}.png"
                    )
                )
        counts = {name: int((labels[indices] == k).sum()) for k, name in enumerate(class_names)}
        manifest["splits"][split] = {"count": int(len(indices)), "shards": [path.name], "class_counts": counts}
    with (directory / "manifest.json").open("w") as stream:
        json.dump(manifest, stream)
    import pandas as pd

    split_of = {int(index): split for split, indices in parts.items() for index in indices}
    pd.DataFrame(
        {
            "file": [f"{class_names[label]}/{index}.png" for index, label in enumerate(labels)],
            "split": [split_of[index] for index in range(len(labels))],
            "class_name": [class_names[label] for label in labels],
            "label": labels,
        }
    ).to_csv(directory / "examples.csv", index=False)
    return manifest


@pytest.fixture
def prepared_dir(tmp_path):
    """data/prepared with 3 toy classes of 12x12x1 images, 30 each."""
    images, labels = make_images(num_classes=3, per_class=30)
    directory = tmp_path / "data" / "prepared"
    write_prepared(directory, images, labels, ["a", "b", "c"])
    return directory


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """Points MLflow at a SQLite store inside tmp_path; returns the tracking URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # set_tracking_uri wins over the variable, and an earlier test may have called it.
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


# The whole pipeline in about 90 s on 2 cores. What the tests that copy it rely on:
# - train: 3 epochs (test_pipeline_e2e counts one MLflow metric point per epoch); histogram_freq 1
#   (test_experiments checks weight histograms in every run's TensorBoard logs, the baseline's too);
# - export: the int8 and pruning paths; every variant is covered by tests/test_export.py.
REPRODUCED_PARAMS = {
    # 3 epochs: after 2, lenet5_s2d (64 stem filters) is at 0.82 and its pruned variant, still training, at 0.93:
    # they agreed on 0.854 of the test images, and test_pipeline_e2e wants a variant that serves like its model.
    "train": {"epochs": 3, "early_stopping_patience": 3},
    "tracking": {"histogram_freq": 1},
    "evaluate": {
        "min_accuracy": 0.5,
        "min_margin_over_baseline": -1.0,
    },  # three epochs do not beat an SVM: still promoted
    "export": {
        "variants": ["float32", "int8", "pruned_int8"],
        "prune_epochs": 2,  # a 1-epoch ramp and 1 to recover: 1 epoch alone left agreement at 0.898 on a CI CPU
        "representative_samples": 50,
        "latency_runs": 20,
    },
}


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory) -> Path:
    """A fresh clone-like copy (tracked files only, a new git repo), the default data materialized, then
    `dvc repro` with REPRODUCED_PARAMS: made once for the whole test run. Never change it: take a copy
    with `reproduced_copy` (or tests.workspace.copy_reproduced).

    Under pytest-xdist (`make test` runs two workers) the workers share one: the first to get here
    builds it under a file lock in their common temporary directory, the others wait and reuse it.
    """
    import os
    import tempfile

    from filelock import FileLock

    from tests.workspace import copy_repository, run, set_params

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    done = shared / "reproduced_repo.path"
    with FileLock(str(shared / "reproduced_repo.lock")):
        if done.is_file():
            return Path(done.read_text())
        repo = copy_repository(Path(tempfile.mkdtemp(prefix="reproduced-", dir=shared)), materialize=False)
        committed_data_dvc = (repo / "data.dvc").read_text()
        run([sys.executable, "-m", "pipelines.materialize"], repo)
        assert (repo / "data.dvc").read_text() == committed_data_dvc, (
            "materializing changed the committed data.dvc hash"
        )
        set_params(repo, REPRODUCED_PARAMS)
        run([sys.executable, "-m", "dvc", "repro"], repo)
        done.write_text(str(repo))  # only after success: a failed build is retried, not reused
    return repo


@pytest.fixture
def reproduced_copy(reproduced_repo, tmp_path) -> Path:
    """This test's own copy of reproduced_repo (outputs, DVC cache, MLflow store and logs), at tmp_path/repo."""
    from tests.workspace import copy_reproduced

    return copy_reproduced(reproduced_repo, tmp_path / "repo")
