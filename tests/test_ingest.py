"""Tests for components/ingest.py on tiny generated image folders."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import ingest
from pipelines import records

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["cat", "dog", "emu"]
NUM_PER_CLASS = 12
SIZE = 8
PARAMS_YAML = f"""
data:
  source: unit-test
  raw_dir: data/raw
ingest:
  seed: 0
  val_fraction: 0.2
  test_fraction: 0.2
  num_shards: 2
  expectations:
    image_height: {SIZE}
    image_width: {SIZE}
    channels: 1
    pixel_min: 0
    pixel_max: 255
    min_per_class: 5
    max_class_share: 0.5
    image_mean_min: 20.0
    image_mean_max: 200.0
"""


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def random_pixels(rng: np.random.Generator, shape=(SIZE, SIZE)) -> np.ndarray:
    return rng.integers(40, 200, size=shape, dtype=np.uint8)  # mean ~120, inside the expectations


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A repo-like folder with params.yaml and data/raw/<class>/<nn>.png; the working directory."""
    rng = np.random.default_rng(0)
    for class_name in CLASS_NAMES:
        for index in range(NUM_PER_CLASS):
            save_png(tmp_path / "data/raw" / class_name / f"{index:02d}.png", random_pixels(rng))
    (tmp_path / "params.yaml").write_text(PARAMS_YAML)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_failing(capsys) -> str:
    """Runs the stage, expects a non-zero exit and returns what it printed to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        ingest.main()
    assert exit_info.value.code != 0
    return capsys.readouterr().err


def test_success_writes_shards_manifest_examples_and_data_docs(project):
    ingest.main()

    prepared = project / "data/prepared"
    manifest = records.read_manifest(prepared)
    assert manifest["class_names"] == CLASS_NAMES
    assert manifest["image_shape"] == [SIZE, SIZE, 1]
    assert manifest["num_examples"] == len(CLASS_NAMES) * NUM_PER_CLASS
    assert manifest["source"] == "unit-test"
    assert sum(split["count"] for split in manifest["splits"].values()) == manifest["num_examples"]
    for name, split in manifest["splits"].items():
        assert len(split["shards"]) == 2 and all((prepared / shard).is_file() for shard in split["shards"])
        assert sum(split["class_counts"].values()) == split["count"]
        assert all(count >= 1 for count in split["class_counts"].values()), f"{name} is not stratified"

    images, labels, files = zip(*records.read_split(prepared, "train", with_file=True).as_numpy_iterator())
    assert len(images) == manifest["splits"]["train"]["count"]
    assert all(image.shape == (SIZE, SIZE, 1) and image.dtype == np.uint8 for image in images)
    for image, label, file in zip(images, labels, files):
        file = file.decode()
        assert CLASS_NAMES[label] == file.split("/")[0]
        stored = np.asarray(Image.open(project / "data/raw" / file))
        np.testing.assert_array_equal(image[..., 0], stored)

    examples = (prepared / "examples.csv").read_text().splitlines()
    assert examples[0].split(",")[:3] == ["file", "class_name", "label"] and "sha256" in examples[0]
    assert len(examples) == 1 + manifest["num_examples"]
    assert (project / "reports/ingest/data_docs/index.html").is_file()
    assert json.loads((project / "reports/ingest/validation.json").read_text())["success"] is True
    metrics = json.loads((project / "metrics/ingest.json").read_text())
    assert metrics["num_examples"] == manifest["num_examples"] and metrics["num_classes"] == 3
    assert not list((project / "data").glob(".prepared.tmp-*"))


def test_a_run_in_another_process_writes_byte_identical_output(project):
    ingest.main()
    first = {path.name: path.read_bytes() for path in (project / "data/prepared").iterdir()}
    # A new process, not a second call: protobuf's map order, for one, can differ between processes.
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-m", "components.ingest"], check=True, env=environment, capture_output=True)
    second = {path.name: path.read_bytes() for path in (project / "data/prepared").iterdir()}
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_undecodable_files_fail_naming_every_file_and_leave_no_output(project, capsys):
    ingest.main()  # a previous good run must not survive a failed one
    good = (project / "data/raw/dog/00.png").read_bytes()
    (project / "data/raw/dog/truncated.png").write_bytes(good[: len(good) // 2])
    (project / "data/raw/emu/empty.png").write_bytes(b"")
    (project / "data/raw/emu/notes.png").write_text("not an image")

    error = run_failing(capsys)

    for name in ("dog/truncated.png", "emu/empty.png", "emu/notes.png"):
        assert name in error
    assert not (project / "data/prepared").exists()
    assert not (project / "metrics/ingest.json").exists()


def test_wrong_image_size_fails_the_suite_but_writes_data_docs(project, capsys):
    ingest.main()
    rng = np.random.default_rng(1)
    save_png(project / "data/raw/cat/03.png", random_pixels(rng, shape=(SIZE + 1, SIZE)))

    error = run_failing(capsys)

    assert "expect_column_values_to_be_between(height)" in error and "cat/03.png" in error
    assert "(width)" not in error
    assert not (project / "data/prepared").exists()
    assert (project / "reports/ingest/data_docs/index.html").is_file()
    assert json.loads((project / "reports/ingest/validation.json").read_text())["success"] is False


def test_blank_image_fails_the_mean_expectation(project, capsys):
    save_png(project / "data/raw/emu/05.png", np.zeros((SIZE, SIZE), np.uint8))

    error = run_failing(capsys)

    assert "expect_column_values_to_be_between(mean)" in error and "emu/05.png" in error
    assert not (project / "data/prepared").exists()


def test_duplicate_image_fails_sha256_uniqueness(project, capsys):
    shutil.copy(project / "data/raw/cat/00.png", project / "data/raw/dog/copy_of_cat.png")

    error = run_failing(capsys)

    assert "expect_column_values_to_be_unique(sha256)" in error
    assert "cat/00.png" in error and "dog/copy_of_cat.png" in error


def test_too_few_examples_in_a_class_fails_the_class_suite(project, capsys):
    for path in sorted((project / "data/raw/emu").iterdir())[2:]:
        path.unlink()

    error = run_failing(capsys)

    assert "classes: expect_column_values_to_be_between(count)" in error and "emu" in error


def test_empty_class_folder_is_an_error_naming_it(project, capsys):
    (project / "data/raw/fox").mkdir()

    error = run_failing(capsys)

    assert "empty class folder" in error and "fox" in error
    assert not (project / "data/prepared").exists()


def test_a_single_class_is_an_error(tmp_path):
    save_png(tmp_path / "only/00.png", np.full((SIZE, SIZE), 99, np.uint8))
    with pytest.raises(ValueError, match="at least 2"):
        ingest.read_image_paths(tmp_path)


def test_hidden_files_are_ignored_and_paths_are_sorted(tmp_path):
    for file in ("b/2.png", "b/1.png", "a/1.png", "a/.DS_Store", ".hidden/x.png"):
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_bytes(b"")
    class_names, paths = ingest.read_image_paths(tmp_path)
    assert class_names == ["a", "b"]
    assert [path.relative_to(tmp_path).as_posix() for path in paths] == ["a/1.png", "b/1.png", "b/2.png"]


def encode(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_decode_image_channel_rule():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8))
    assert ingest.decode_image(encode(rgb), channels=1).shape == (4, 5, 1)
    assert ingest.decode_image(encode(rgb), channels=3).shape == (4, 5, 3)
    assert ingest.decode_image(encode(rgb.convert("RGBA")), channels=3).shape == (4, 5, 3)
    gray = Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5))
    # Grayscale is never widened: with channels=3 the suite's channel expectation fails instead.
    assert ingest.decode_image(encode(gray), channels=3).shape == (4, 5, 1)
    grey_palette = gray.convert("P")
    decoded = ingest.decode_image(encode(grey_palette, "GIF"), channels=3)
    assert decoded.shape == (4, 5, 1)
    np.testing.assert_array_equal(decoded[..., 0], np.asarray(gray))
    assert ingest.decode_image(encode(rgb.convert("P"), "GIF"), channels=3).shape == (4, 5, 3)
    assert ingest.decode_image(encode(gray.convert("1"), "BMP"), channels=1).shape == (4, 5, 1)
    with pytest.raises(ValueError, match="cannot decode"):
        ingest.decode_image(b"\x89PNG\r\n\x1a\n broken", channels=1)


def test_assign_splits_is_stratified_seeded_and_allows_no_val():
    labels = np.repeat(np.arange(4), 25)
    splits = ingest.assign_splits(labels, val_fraction=0.2, test_fraction=0.2, seed=3)
    counts = {split: np.bincount(labels[splits == split], minlength=4).tolist() for split in ingest.SPLITS}
    assert counts == {"train": [15] * 4, "val": [5] * 4, "test": [5] * 4}
    np.testing.assert_array_equal(splits, ingest.assign_splits(labels, val_fraction=0.2, test_fraction=0.2, seed=3))
    without_val = ingest.assign_splits(labels, val_fraction=0.0, test_fraction=0.2, seed=3)
    assert set(without_val) == {"train", "test"}


def test_zero_val_fraction_gives_an_empty_val_split(project):
    (project / "params.yaml").write_text(PARAMS_YAML.replace("val_fraction: 0.2", "val_fraction: 0.0"))
    ingest.main()
    manifest = records.read_manifest(project / "data/prepared")
    assert manifest["splits"]["val"]["count"] == 0
    assert records.read_split(project / "data/prepared", "val").reduce(0, lambda count, _: count + 1).numpy() == 0
