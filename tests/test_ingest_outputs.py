"""What makes `dvc repro ingest` fast, kept true: the second pass copies each kept record's framed bytes from the pool
to its split's shards (byte for byte what TensorFlow's TFRecordWriter writes); DVC leaves ingest's outputs in place
while it runs (persist: no run-cache entry, so data/raw is hashed fewer times) and a failed ingest says they are as
they were; the stage's profile says how long DVC ran before it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.ingest.passes import write_shards
from tfpipe import outputs, paths, records

ROOT = Path(__file__).resolve().parents[1]


def test_shards_copied_from_the_pool_are_what_tfrecordwriter_writes(tmp_path):
    rng = np.random.default_rng(0)
    examples = [
        records.serialize_example(rng.integers(0, 256, (5, 4, c), dtype=np.uint8), label, f"c{label}/{index}.png")
        for index, (label, c) in enumerate([(0, 1), (1, 1), (0, 3), (1, 3), (0, 1), (1, 1), (0, 1)])
    ]
    pool = tmp_path / "pool.tfrecord"
    with tf.io.TFRecordWriter(str(pool)) as writer:
        for example in examples:
            writer.write(example)
    assert [len(record) for record in records.framed_records(pool)] == [len(example) + 16 for example in examples]
    # record 3 is a dropped copy; the others go to their split, round robin over two shards
    plan = pd.DataFrame({"record": [0, 1, 2, 4, 5, 6], "split": ["train", "test", "train", "train", "val", "train"]})
    written = write_shards(pool, plan, tmp_path, num_shards=2)
    assert written == {"train": 4, "val": 1, "test": 1}
    expected = {"train": [[0, 4], [2, 6]], "val": [[5], []], "test": [[1], []]}
    for split, shards in expected.items():
        for path, indices in zip(records.shard_paths(tmp_path, split, 2), shards, strict=True):
            reference = tmp_path / "reference.tfrecord"
            with tf.io.TFRecordWriter(str(reference)) as writer:
                for index in indices:
                    writer.write(examples[index])
            assert path.read_bytes() == reference.read_bytes()
            assert list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()) == [examples[i] for i in indices]


def test_a_truncated_pool_is_an_error_not_a_shorter_split(tmp_path):
    pool = tmp_path / "pool.tfrecord"
    with tf.io.TFRecordWriter(str(pool)) as writer:
        writer.write(b"x" * 100)
    pool.write_bytes(pool.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated TFRecord"):
        list(records.framed_records(pool))


def test_dvc_keeps_ingests_outputs_while_it_runs_and_a_failure_says_so(capsys):
    assert paths.KEEP_OUTPUTS == {"ingest"}

    def failing():
        raise SystemExit(1)

    for stage, said in (("ingest", "its previous outputs are as they were"), ("train", "`dvc checkout train`")):
        with pytest.raises(SystemExit):
            outputs.run_stage(stage, failing)
        assert said in capsys.readouterr().err


def test_the_profile_says_how_long_dvc_ran_before_the_stage(tmp_path):
    """A parent process named `dvc` (as DVC runs a stage, through a shell) starts the stage a second late."""
    fake = tmp_path / "dvc"
    fake.write_text(
        "import os, subprocess, sys, time\n"
        "time.sleep(1.0)\n"
        "code = 'from tfpipe import timing; timing.start(); import json; print(json.dumps(timing.summary()))'\n"
        "subprocess.run([sys.executable, '-c', code], env={**os.environ, 'DVC_STAGE': 'ingest'}, check=True)\n"
    )
    environment = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(fake)], capture_output=True, text=True, env=environment, check=True)
    figures = json.loads(result.stdout)
    assert figures["dvc_before_s"] >= 1.0 and figures["ended_at"] >= figures["started_at"]
    alone = subprocess.run(
        [sys.executable, "-c", "from tfpipe import timing; timing.start(); print(timing.summary())"],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    assert "dvc_before_s" not in alone.stdout
