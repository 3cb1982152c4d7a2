"""Tests for components/ingest/stage.py on tiny generated image folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.ingest import stage as ingest
from tfpipe import records

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
    num_classes: null
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
    headline = json.loads((project / "metrics/ingest.json").read_text())
    assert headline == {
        "images": {split: manifest["splits"][split]["count"] for split in ("train", "val", "test")},
        "classes": 3,
        "copies_dropped": 0,
        "converted": 0,
        "skipped": 0,
    }
    metrics = json.loads((project / "reports/ingest/summary.json").read_text())
    assert metrics["num_examples"] == manifest["num_examples"] and metrics["num_classes"] == 3
    assert metrics["layout"] == "class_folders"
    assert metrics["class_counts"]["train"] == manifest["splits"]["train"]["class_counts"]
    assert metrics["image_sizes"] == {f"{SIZE}x{SIZE}x1": manifest["num_examples"]}
    pixels = np.stack([image for image in images]).astype(np.float64)
    assert metrics["pixels"]["train"]["mean"] == pytest.approx([pixels.mean()], abs=1e-3)
    assert metrics["pixels"]["train"]["std"] == pytest.approx([pixels.std()], abs=1e-3)
    assert not list((project / "data").glob(".prepared.tmp-*"))


def test_a_readme_or_license_beside_the_class_folders_is_skipped_counted_and_listed(project):
    """Downloaded photo datasets often ship one: onboarding goes on, as README.md and docs/data.md promise."""
    for name in ("LICENSE.txt", "README", "notes.txt"):
        (project / "data/raw" / name).write_text("not an image")
    ingest.main()
    assert json.loads((project / "metrics/ingest.json").read_text())["skipped"] == 3
    skipped = json.loads((project / "reports/ingest/statistics.json").read_text())["skipped_files"]
    assert skipped == {
        "count": 3,
        "by_reason": {"not an image, beside the class folders": 3},
        "files": ["LICENSE.txt", "README", "notes.txt"],
    }
    assert "LICENSE.txt" in (project / "reports/ingest/skipped_files.csv").read_text()
    assert records.read_manifest(project / "data/prepared")["num_examples"] == len(CLASS_NAMES) * NUM_PER_CLASS


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
    (project / "data/raw/emu/notes.txt").write_text("not an image: skipped and counted")
    (project / "data/raw/emu/fake.png").write_text("named like an image, but text: an error")
    save_png(project / "data/raw/cat/huge.png", np.full((30, 30), 99, np.uint8))  # 900 > max_image_pixels 400
    outside = project / "outside.png"  # in the project, but not below data/raw
    save_png(outside, random_pixels(np.random.default_rng(5)))
    (project / "data/raw/cat/link.png").symlink_to(outside)

    error = run_failing(capsys)

    # One sentence: what is wrong, every file with its reason, and what to do; never an expectation's name.
    assert "5 file(s) could not be read as images: " in error and "expect_" not in error
    assert "Fix: replace them with readable copies or remove them" in error
    for name, reason in (
        ("dog/truncated.png", "cannot decode"),
        ("emu/empty.png", "empty file (0 bytes)"),
        ("emu/fake.png", "named like an image, but not an image"),
        ("cat/huge.png", "decompression-bomb"),
        ("cat/link.png", "symlink leading outside"),
    ):
        assert reason in error.split(f"{name}: ", 1)[1].split(";")[0], (name, reason)
    assert "notes.txt" not in error
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
    skipped = json.loads((project / "reports/ingest/statistics.json").read_text())["skipped_files"]
    assert skipped == {"count": 1, "by_reason": {"not an image (.txt)": 1}, "files": ["emu/notes.txt"]}


def test_wrong_image_size_fails_the_suite_but_writes_data_docs(project, capsys):
    ingest.main()
    rng = np.random.default_rng(1)
    save_png(project / "data/raw/cat/03.png", random_pixels(rng, shape=(SIZE + 1, SIZE)))

    error = run_failing(capsys)

    assert "1 image(s) are not 8 px high: cat/03.png (9x8)" in error
    assert "set ingest.resize: true to centre-crop and resize every image to 8x8" in error
    assert "px wide" not in error
    assert (
        records.read_manifest(project / "data/prepared")["num_examples"] == len(CLASS_NAMES) * NUM_PER_CLASS
    )  # the previous run's
    assert (project / "reports/ingest/data_docs/index.html").is_file()
    assert json.loads((project / "reports/ingest/validation.json").read_text())["success"] is False


def test_blank_image_fails_the_mean_expectation(project, capsys):
    save_png(project / "data/raw/emu/05.png", np.zeros((SIZE, SIZE), np.uint8))

    error = run_failing(capsys)

    assert "1 image(s) have a mean pixel value outside 20.0..200.0: emu/05.png (0.0)" in error
    assert "widen ingest.expectations.image_mean_min/image_mean_max" in error
    assert not (project / "data/prepared").exists()


def test_identical_images_with_different_labels_fail_naming_both_files_and_labels(project, capsys):
    shutil.copy(project / "data/raw/cat/00.png", project / "data/raw/dog/copy_of_cat.png")

    error = run_failing(capsys)

    assert "1 file(s) are identical, after decoding, to a file with another label: " in error
    assert "dog/copy_of_cat.png (dog) = cat/00.png (cat)" in error and "move it to its class folder" in error


def test_identical_images_with_the_same_label_are_kept_once_and_listed(project):
    raw = project / "data/raw"
    shutil.copy(raw / "cat/00.png", raw / "cat/zz_copy.png")  # a byte copy
    Image.open(raw / "dog/03.png").save(raw / "dog/03_again.bmp")  # other bytes, the same pixels

    ingest.main()

    kept = split_of(project)
    assert "cat/00.png" in kept and "cat/zz_copy.png" not in kept and "dog/03_again.bmp" not in kept
    assert records.read_manifest(project / "data/prepared")["num_examples"] == len(CLASS_NAMES) * NUM_PER_CLASS
    assert json.loads((project / "metrics/ingest.json").read_text())["copies_dropped"] == 2
    metrics = json.loads((project / "reports/ingest/summary.json").read_text())
    assert metrics["duplicates"] == {
        "copies_dropped": 2,
        "files": ["cat/zz_copy.png = cat/00.png", "dog/03_again.bmp = dog/03.png"],
    }
    listed = (project / "reports/ingest/duplicates.csv").read_text()
    assert "cat/zz_copy.png,cat,train" in listed or "cat/zz_copy.png,cat," in listed


def test_too_few_examples_in_a_class_fails_the_class_suite(project, capsys):
    for path in sorted((project / "data/raw/emu").iterdir())[2:]:
        path.unlink()

    error = run_failing(capsys)

    assert "1 class(es) have fewer than ingest.expectations.min_per_class = 5 images" in error and "emu (2)" in error


def test_empty_class_folder_fails_the_class_count_naming_it(project, capsys):
    (project / "data/raw/fox").mkdir()

    error = run_failing(capsys)

    assert "fox (0)" in error and "Fix: add images to these classes, or lower min_per_class" in error
    assert not (project / "data/prepared").exists()


def test_a_single_class_fails_the_class_suite(project, capsys):
    for name in CLASS_NAMES[1:]:
        shutil.rmtree(project / "data/raw" / name)

    error = run_failing(capsys)

    assert "only 1 class(es) found (cat): a classifier needs at least two" in error


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
        for split in records.SPLITS
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
        for split in records.SPLITS
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

    assert "2 image(s) in one of your split folders have a near-identical image in another" in error
    assert "test/cat/same.png ~ train/cat/00.png (train)" in error
    assert "test/dog/brighter.png ~ train/dog/01.png (train)" in error
    assert "move or remove one image of each pair" in error


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
    assert statistics["converted_images"] == 2 and statistics["converted"] == {"rgb_to_grayscale": 2}
    assert json.loads((project / "metrics/ingest.json").read_text())["converted"] == 2


def test_the_sample_grid_draws_any_mix_of_sizes_channels_and_classes(tmp_path):
    """One mosaic: thumbnails of different sizes, grey beside colour, a class without samples, many classes."""
    from components.ingest import report as ingest_report

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
