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
  source: folder
ingest:
  seed: 0
  val_fraction: 0.2
  test_fraction: 0.2
  num_shards: 2
  max_image_pixels: 400
  samples_per_class: 4
  expectations:
    image_height: {SIZE}
    image_width: {SIZE}
    channels: 1
    pixel_min: 0
    pixel_max: 255
    min_per_class: 5
    min_class_share: 0.1
    max_class_share: 0.5
    image_mean_min: 20.0
    image_mean_max: 200.0
    near_duplicate_max_distance: 8
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
    assert manifest["source"] == "folder"
    assert sum(split["count"] for split in manifest["splits"].values()) == manifest["num_examples"]
    for name, split in manifest["splits"].items():
        assert len(split["shards"]) == 2 and all((prepared / shard).is_file() for shard in split["shards"])
        assert sum(split["class_counts"].values()) == split["count"]
        assert all(count >= 1 for count in split["class_counts"].values()), f"{name} is not stratified"

    images, labels, files = zip(*records.read_split(prepared, "train", with_file=True).as_numpy_iterator(), strict=True)
    assert len(images) == manifest["splits"]["train"]["count"]
    assert all(image.shape == (SIZE, SIZE, 1) and image.dtype == np.uint8 for image in images)
    for image, label, file in zip(images, labels, files, strict=True):
        file = file.decode()
        assert CLASS_NAMES[label] == file.split("/")[0]
        stored = np.asarray(Image.open(project / "data/raw" / file))
        np.testing.assert_array_equal(image[..., 0], stored)

    examples = (prepared / "examples.csv").read_text().splitlines()
    assert examples[0].split(",")[:4] == ["file", "split", "class_name", "label"] and "sha256" in examples[0]
    assert len(examples) == 1 + manifest["num_examples"]
    assert (project / "reports/ingest/data_docs/index.html").is_file()
    assert json.loads((project / "reports/ingest/validation.json").read_text())["success"] is True
    for picture in ("samples.png", "class_distribution.png"):
        assert Image.open(project / "reports/ingest" / picture).size[0] > 100
    metrics = json.loads((project / "metrics/ingest.json").read_text())
    assert metrics["num_examples"] == manifest["num_examples"] and metrics["num_classes"] == 3
    assert metrics["layout"] == "class_folders"
    assert metrics["class_counts"]["train"] == manifest["splits"]["train"]["class_counts"]
    assert metrics["image_sizes"] == {f"{SIZE}x{SIZE}x1": manifest["num_examples"]}
    pixels = np.stack([image for image in images]).astype(np.float64)
    assert metrics["pixels"]["train"]["mean"] == pytest.approx([pixels.mean()], abs=1e-3)
    assert metrics["pixels"]["train"]["std"] == pytest.approx([pixels.std()], abs=1e-3)
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


def test_unreadable_files_fail_naming_each_with_its_reason_and_keep_the_previous_output(project, capsys):
    ingest.main()  # a failed run leaves the previous complete output as it was; its reports show the failure
    previous = {
        path.relative_to(project): path.read_bytes()
        for folder in ("data/prepared", "metrics")
        for path in (project / folder).rglob("*")
        if path.is_file()
    }
    good = (project / "data/raw/dog/00.png").read_bytes()
    (project / "data/raw/dog/truncated.png").write_bytes(good[: len(good) // 2])
    (project / "data/raw/emu/empty.png").write_bytes(b"")
    (project / "data/raw/emu/notes.txt").write_text("not an image")
    save_png(project / "data/raw/cat/huge.png", np.full((30, 30), 99, np.uint8))  # 900 > max_image_pixels 400
    outside = project / "outside.png"  # in the project, but not below data/raw
    save_png(outside, random_pixels(np.random.default_rng(5)))
    (project / "data/raw/cat/link.png").symlink_to(outside)

    error = run_failing(capsys)

    assert "files: expect_column_values_to_be_null(problem)" in error and "5 unexpected" in error
    for name, reason in (
        ("dog/truncated.png", "cannot decode"),
        ("emu/empty.png", "empty file (0 bytes)"),
        ("emu/notes.txt", "not a PNG/JPEG/BMP/GIF image"),
        ("cat/huge.png", "decompression-bomb"),
        ("cat/link.png", "symlink leading outside"),
    ):
        assert any(name in line and reason in line for line in error.splitlines()), (name, reason)
    assert {
        path.relative_to(project): path.read_bytes()
        for folder in ("data/prepared", "metrics")
        for path in (project / folder).rglob("*")
        if path.is_file()
    } == previous
    assert not list((project / "data").glob(".prepared.tmp-*")) and not list(
        (project / "reports").glob(".ingest.tmp-*")
    )
    assert json.loads((project / "reports/ingest/validation.json").read_text())["success"] is False
    assert (project / "reports/ingest/data_docs/index.html").is_file()
    assert (project / "reports/ingest/samples.png").is_file()


def test_wrong_image_size_fails_the_suite_but_writes_data_docs(project, capsys):
    ingest.main()
    rng = np.random.default_rng(1)
    save_png(project / "data/raw/cat/03.png", random_pixels(rng, shape=(SIZE + 1, SIZE)))

    error = run_failing(capsys)

    assert "expect_column_values_to_be_between(height)" in error and "cat/03.png" in error
    assert "(width)" not in error
    assert (
        records.read_manifest(project / "data/prepared")["num_examples"] == len(CLASS_NAMES) * NUM_PER_CLASS
    )  # the previous run's
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


def test_empty_class_folder_fails_the_class_count_naming_it(project, capsys):
    (project / "data/raw/fox").mkdir()

    error = run_failing(capsys)

    assert "classes: expect_column_values_to_be_between(count)" in error and "fox" in error
    assert not (project / "data/prepared").exists()


def test_a_single_class_fails_the_class_suite(project, capsys):
    for name in CLASS_NAMES[1:]:
        shutil.rmtree(project / "data/raw" / name)

    error = run_failing(capsys)

    assert "classes: expect_table_row_count_to_be_between" in error and "observed 1" in error


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
    tiny = ingest.assign_splits(np.array([0, 1, 1, 1, 1, 1]), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert tiny[0] == "train"  # too small to split: stays in train, the class suite reports it


def test_assign_splits_keeps_given_splits():
    labels = np.repeat(np.arange(2), 10)
    given = np.array((["train"] * 8 + ["test"] * 2) * 2)
    splits = ingest.assign_splits(labels, val_fraction=0.25, test_fraction=0.5, seed=0, given=given)
    assert (splits[given == "test"] == "test").all()
    assert np.bincount(labels[splits == "val"]).tolist() == [2, 2]
    with_val = np.where(np.arange(20) % 10 == 0, "val", given)
    np.testing.assert_array_equal(ingest.assign_splits(labels, 0.25, 0.5, seed=0, given=with_val), with_val)


def test_zero_val_fraction_gives_an_empty_val_split(project):
    (project / "params.yaml").write_text(PARAMS_YAML.replace("val_fraction: 0.2", "val_fraction: 0.0"))
    ingest.main()
    manifest = records.read_manifest(project / "data/prepared")
    assert manifest["splits"]["val"]["count"] == 0
    assert records.read_split(project / "data/prepared", "val").reduce(0, lambda count, _: count + 1).numpy() == 0


def split_of(project: Path) -> dict[str, str]:
    """file -> split, from the examples.csv ingest wrote."""
    import pandas as pd

    examples = pd.read_csv(project / "data/prepared/examples.csv")
    return dict(zip(examples["file"], examples["split"], strict=True))


def test_mixed_grayscale_rgb_rgba_and_palette_images_are_converted_to_one_channel(project):
    rng = np.random.default_rng(3)
    colours = {
        name: rng.integers(40, 200, size=(SIZE, SIZE, 3), dtype=np.uint8)
        for name in ("cat/rgb.png", "cat/rgba.png", "dog/palette.gif", "emu/rgb.bmp")
    }
    for name, colour in colours.items():
        Image.fromarray(colour).convert("RGBA" if "rgba" in name else "P" if "palette" in name else "RGB").save(
            project / "data/raw" / name
        )

    ingest.main()

    stored = {
        file.decode(): image
        for split in ingest.SPLITS
        for image, _, file in records.read_split(project / "data/prepared", split, with_file=True).as_numpy_iterator()
    }
    assert all(image.shape == (SIZE, SIZE, 1) for image in stored.values())
    for name in ("cat/rgb.png", "cat/rgba.png", "emu/rgb.bmp"):  # RGBA: alpha dropped
        np.testing.assert_array_equal(stored[name][..., 0], np.asarray(Image.fromarray(colours[name]).convert("L")))
    assert "dog/palette.gif" in stored


def test_unicode_and_spaces_in_class_and_file_names(project):
    (project / "data/raw/emu").rename(project / "data/raw/émeu noir")
    (project / "data/raw/cat/00.png").rename(project / "data/raw/cat/chat été 1.png")

    ingest.main()

    manifest = records.read_manifest(project / "data/prepared")
    assert manifest["class_names"] == ["cat", "dog", "émeu noir"]
    assert "cat/chat été 1.png" in split_of(project)
    files = {
        file.decode()
        for split in ingest.SPLITS
        for _, _, file in records.read_split(project / "data/prepared", split, with_file=True).as_numpy_iterator()
    }
    assert "cat/chat été 1.png" in files and any(file.startswith("émeu noir/") for file in files)


def make_given_splits(project: Path) -> None:
    """Moves the fixture's class folders into train/<class> (8 each) and test/<class> (4 each)."""
    for class_name in CLASS_NAMES:
        for index in range(NUM_PER_CLASS):
            split = "train" if index < 8 else "test"
            target = project / "data/raw" / split / class_name / f"{index:02d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            (project / "data/raw" / class_name / f"{index:02d}.png").rename(target)
        (project / "data/raw" / class_name).rmdir()


def test_given_train_test_folders_are_kept_and_val_is_carved_from_train(project):
    make_given_splits(project)

    ingest.main()

    splits = split_of(project)
    assert all(split == "test" for file, split in splits.items() if file.startswith("test/"))
    assert {splits[file] for file in splits if file.startswith("train/")} == {"train", "val"}
    manifest = records.read_manifest(project / "data/prepared")
    assert manifest["layout"] == "split_folders" and manifest["class_names"] == CLASS_NAMES
    # val_fraction 0.2 of each class's 8 train images: round(1.6) = 2
    assert manifest["splits"]["val"]["class_counts"] == dict.fromkeys(CLASS_NAMES, 2)
    assert manifest["splits"]["test"]["class_counts"] == dict.fromkeys(CLASS_NAMES, 4)


def test_the_same_image_in_train_and_test_fails_and_so_does_a_slightly_changed_copy(project, capsys):
    make_given_splits(project)
    raw = project / "data/raw"
    shutil.copy(raw / "train/cat/00.png", raw / "test/cat/same.png")
    brighter = np.asarray(Image.open(raw / "train/dog/01.png")).astype(np.int16) + 3
    save_png(raw / "test/dog/brighter.png", np.clip(brighter, 0, 255).astype(np.uint8))

    error = run_failing(capsys)

    assert "expect_column_values_to_be_unique(sha256)" in error
    assert "train/cat/00.png" in error and "test/cat/same.png" in error
    assert "expect_column_values_to_be_null(near_duplicate_of)" in error
    assert "test/dog/brighter.png (test) ~ train/dog/01.png (train)" in error


@pytest.mark.parametrize("listing", ["labels.csv", "labels.txt"])
def test_a_flat_folder_with_a_labels_file(project, listing):
    raw, lines = project / "data/raw", []
    for class_name in CLASS_NAMES:
        for path in sorted((raw / class_name).iterdir()):
            flat = raw / "images" / f"{class_name} {path.name}"  # a space in the name
            flat.parent.mkdir(exist_ok=True)
            path.rename(flat)
            lines.append((flat.relative_to(raw).as_posix(), class_name))
        (raw / class_name).rmdir()
    text = (
        "file,label\n" + "".join(f"{file},{label}\n" for file, label in lines)
        if listing == "labels.csv"
        else "".join(f"{file} {label}\n" for file, label in lines)
    )
    (raw / listing).write_text(text)

    ingest.main()

    manifest = records.read_manifest(project / "data/prepared")
    assert manifest["layout"] == "labels_file" and manifest["class_names"] == CLASS_NAMES
    assert manifest["num_examples"] == len(lines)


def test_perceptual_hash_matches_imagehash_and_survives_small_changes():
    import imagehash

    image = np.random.default_rng(0).integers(0, 256, size=(28, 28, 1), dtype=np.uint8)
    expected = str(imagehash.phash(Image.fromarray(image[..., 0]), hash_size=16))
    assert ingest.perceptual_hash(image) == expected
    brighter = np.clip(image.astype(np.int16) + 4, 0, 255).astype(np.uint8)
    distance = (int(ingest.perceptual_hash(image), 16) ^ int(ingest.perceptual_hash(brighter), 16)).bit_count()
    assert distance <= 8


def test_find_near_duplicates_only_across_splits():
    from components.ingest_validation import find_near_duplicates

    rng = np.random.default_rng(1)
    base = [rng.integers(0, 2**64, dtype=np.uint64) for _ in range(4)]
    hashes = ["".join(f"{int(word):016x}" for word in base)]
    flipped = base.copy()
    flipped[2] ^= np.uint64(0b1011)  # 3 bits differ
    hashes.append("".join(f"{int(word):016x}" for word in flipped))
    hashes.append(hashes[0])  # identical, same split as the first
    hashes.append("".join(f"{int(rng.integers(0, 2**64, dtype=np.uint64)):016x}" for _ in range(4)))
    splits = np.array(["train", "test", "train", "test"], dtype=object)
    assert find_near_duplicates(hashes, splits, max_distance=3).tolist() == [1, 0, 1, -1]
    assert find_near_duplicates(hashes, splits, max_distance=2).tolist() == [-1, -1, -1, -1]
    assert find_near_duplicates(hashes, splits, max_distance=-1).tolist() == [-1, -1, -1, -1]


def test_decode_image_guards():
    with pytest.raises(ValueError, match="0 bytes"):
        ingest.decode_image(b"", channels=1)
    large = encode(Image.new("L", (300, 200)))
    with pytest.raises(ValueError, match=r"300x200 = 60,000 pixels.*decompression-bomb"):
        ingest.decode_image(large, channels=1, max_pixels=50_000)
    assert ingest.decode_image(large, channels=1, max_pixels=60_000).shape == (200, 300, 1)
    with pytest.raises(ValueError, match="only 8-bit"):
        ingest.decode_image(encode(Image.new("I;16", (4, 4))), channels=1)
    with pytest.raises(ValueError, match="not a PNG/JPEG/BMP/GIF"):
        ingest.decode_image(encode(Image.new("L", (4, 4)), "TIFF"), channels=1)


def test_every_conversion_is_counted_in_the_report(project):
    """RGB, RGBA and palette images become grayscale by the stated rule, and the report counts each kind."""
    rng = np.random.default_rng(5)
    Image.fromarray(np.stack([random_pixels(rng)] * 3, axis=-1)).save(project / "data/raw/cat/00.png")
    Image.fromarray(np.stack([random_pixels(rng)] * 3 + [np.full((SIZE, SIZE), 255, np.uint8)], axis=-1)).save(
        project / "data/raw/dog/00.png"
    )
    ingest.main()
    statistics = json.loads((project / "reports/ingest/statistics.json").read_text())
    assert statistics["source_modes"] == {"L": len(CLASS_NAMES) * NUM_PER_CLASS - 2, "RGB": 1, "RGBA": 1}
    assert statistics["converted_images"] == 2
    assert json.loads((project / "metrics/ingest.json").read_text())["converted_images"] == 2


def test_the_sample_grid_draws_any_mix_of_sizes_channels_and_classes(tmp_path):
    """One mosaic: thumbnails of different sizes, grey beside colour, a class without samples, many classes."""
    from components import ingest_report

    rng = np.random.default_rng(0)
    samples = {
        "grey": [rng.integers(0, 256, (28, 28, 1), dtype=np.uint8) for _ in range(8)],
        "colour": [rng.integers(0, 256, (20, 64, 3), dtype=np.uint8)],
    }
    ingest_report.write_sample_grid(tmp_path / "few.png", samples, ["grey", "colour", "empty"])
    many = [f"class {index}" for index in range(120)]
    ingest_report.write_sample_grid(tmp_path / "many.png", {name: samples["grey"][:2] for name in many}, many)
    few, lots = Image.open(tmp_path / "few.png"), Image.open(tmp_path / "many.png")
    assert few.mode == "RGBA" and min(few.size) > 100
    assert lots.height > few.height and lots.height < 2**16  # taller, still a picture a browser opens
    assert len(np.unique(np.asarray(few.convert("L")))) > 50  # the thumbnails are drawn, not a blank canvas
