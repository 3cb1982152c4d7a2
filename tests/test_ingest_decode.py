"""Ingest reads data/raw on every core (components/ingest/decode.py): worker processes give the rows and pixels one
process gives, in the order asked for, on a messy folder of real photos (EXIF, grey, alpha, CMYK, 16-bit, WebP,
TIFF, copies, non-images)."""

import numpy as np
import pytest

from components.ingest import decode
from components.ingest.layout import read_layout
from tests.photos import write_messy_folder
from tfpipe.images import DecodeRules


def test_worker_processes_read_what_one_process_reads_in_the_order_asked(tmp_path, monkeypatch):
    write_messy_folder(tmp_path / "raw")
    examples = read_layout(tmp_path / "raw").examples
    rules = DecodeRules(channels=3, alpha_background=255)
    order = np.random.default_rng(0).permutation(len(examples)).tolist()
    monkeypatch.setattr(decode, "PARALLEL_MIN", 1)  # the folder is small: use the workers anyway
    monkeypatch.setattr(decode, "CHUNK", 7)  # several chunks, a window that fills
    serial = list(decode.read_examples(examples, rules, (32, 32), order, workers=1))
    parallel = list(decode.read_examples(examples, rules, (32, 32), order, workers=2))
    assert [index for index, _, _ in parallel] == order == [index for index, _, _ in serial]
    for (_, row, pixels), (_, serial_row, serial_pixels) in zip(parallel, serial, strict=True):
        assert row == serial_row
        assert (pixels is None and serial_pixels is None) or np.array_equal(pixels, serial_pixels)
    assert any(row["skipped"] for _, row, _ in parallel)  # the folder's non-images are rows too


def test_the_number_of_workers_is_the_cores_or_tfpipe_workers(monkeypatch):
    monkeypatch.setenv("TFPIPE_WORKERS", "3")
    assert decode.worker_count() == 3
    monkeypatch.setenv("TFPIPE_WORKERS", "zero")
    with pytest.raises(ValueError, match="TFPIPE_WORKERS='zero': expected a whole number"):
        decode.worker_count()
    monkeypatch.delenv("TFPIPE_WORKERS")
    assert decode.worker_count() >= 1
