"""Schema inference (pipelines/schema.py) on small generated image folders, and the "auto" sizes and schedules."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from components.ingest import stage as ingest
from components.preprocess.kinds.image import resolve_image_size
from components.train.schedule import resolve_train_schedule
from pipelines import schema, schema_inference
from tfpipe.params_file import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def write_folder(raw: Path, classes: dict[str, int], size=(10, 12), mode: str = "L", seed: int = 0, sizes=None) -> None:
    """<class>/<n>.png: class k is a bright bar at row 2k on a background whose brightness varies by image."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(classes.items()):
        (raw / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            height, width = sizes[number % len(sizes)] if sizes else size
            pixels = (rng.integers(20, 90, size=(height, width)) + rng.integers(0, 60)).astype(np.uint8)
            pixels[(2 * index) % height : (2 * index) % height + 2] = 240
            image = Image.fromarray(pixels)
            if mode == "RGB":
                colour = np.stack([pixels, np.roll(pixels, 1, axis=1), 255 - pixels], axis=-1)
                image = Image.fromarray(colour.astype(np.uint8))
            image.save(raw / name / f"{number:03d}.png")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the repository's params.yaml (comments and all) and data/raw with 2 unequal classes of 10x12 images."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    write_folder(tmp_path / "data/raw", {"cat": 30, "dog": 20})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_inferred_expectations_let_ingest_pass_first_time_and_keep_the_files_comments(project, capsys):
    schema.main([])
    printed = capsys.readouterr().out
    assert "data/raw: 50 images (class_folders), 2 classes (cat 30, dog 20); sizes 10x12 (50); grayscale" in printed
    assert "-    image_height: 28" in printed and "+    image_height: 10" in printed  # the diff
    text = (project / "params.yaml").read_text()
    assert "# One section per stage" in text and "# decompression-bomb guard" in text
    assert "# inferred by python -m pipelines.schema from data/raw (fingerprint " in text
    expectations = load_params().ingest.expectations
    assert (expectations.image_height, expectations.image_width, expectations.channels, expectations.num_classes) == (
        10,
        12,
        1,
        2,
    )
    assert (
        expectations.min_per_class == 10 and expectations.min_class_share == 0.2 and expectations.max_class_share == 0.9
    )
    assert 0 < expectations.image_mean_min < expectations.image_mean_max < 255
    assert load_params().ingest.resize is False

    ingest.main()  # passes first time
    assert (project / "data/prepared/manifest.json").is_file()

    schema.main([])  # nothing edited since: a re-run is allowed and changes nothing
    assert "already holds these expectations" in capsys.readouterr().out


def test_hand_edited_expectations_are_never_overwritten_without_force(project, capsys):
    schema.main([])
    text = (project / "params.yaml").read_text().replace("min_per_class: 10", "min_per_class: 12")
    (project / "params.yaml").write_text(text)
    (project / "data/raw/cat/000.png").unlink()  # the data changed a little: the proposal would differ
    with pytest.raises(SystemExit, match="edited by hand since they were inferred .* min_per_class: 12 -> 10"):
        schema.main([])
    assert (project / "params.yaml").read_text() == text
    schema.main(["--dry-run", "--force"])
    assert (project / "params.yaml").read_text() == text and "+    min_per_class: 10" in capsys.readouterr().out
    schema.main(["--force"])
    assert load_params().ingest.expectations.min_per_class == 10


def test_bad_inputs_still_fail_validation_against_inferred_expectations(project, capsys):
    schema.main([])
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(project / "data/raw/cat/blank.png")
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(project / "data/raw/dog/white.png")
    Image.fromarray(np.full((14, 12), 99, np.uint8)).save(project / "data/raw/dog/taller.png")
    write_folder(project / "data/raw", {"emu": 15}, seed=3)  # a class the data did not have
    with pytest.raises(SystemExit):
        ingest.main()
    error = capsys.readouterr().err
    assert "2 image(s) have a mean pixel value outside" in error
    assert "cat/blank.png (0.0)" in error and "dog/white.png (255.0)" in error
    assert "1 image(s) are not 10 px high: dog/taller.png (14x12)" in error
    assert "3 classes found, ingest.expectations.num_classes is 2" in error


def test_mixed_sizes_and_colour_photos(tmp_path):
    write_folder(tmp_path / "raw", {"a": 12, "b": 12}, mode="RGB", sizes=[(40, 60), (48, 64), (50, 70)])
    proposal, notes = schema_inference.propose(schema_inference.profile_images(tmp_path / "raw"))
    expectations = proposal["ingest"]["expectations"]
    assert proposal["ingest"]["resize"] is True and expectations["channels"] == 3
    assert (expectations["image_height"], expectations["image_width"]) == (48, 64)  # the median
    assert any("ingest.resize: true" in note for note in notes)


def test_images_the_perceptual_hash_cannot_tell_apart_lower_the_near_duplicate_distance(tmp_path):
    # Each class: one pattern at 40 brightness levels: distinct files whose perceptual hashes (nearly) agree.
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        (tmp_path / "raw" / name).mkdir(parents=True)
        base = rng.integers(30, 180, (16, 16))
        for number in range(40):
            Image.fromarray((base + number).astype(np.uint8)).save(tmp_path / "raw" / name / f"{number}.png")
    proposal, notes = schema_inference.propose(schema_inference.profile_images(tmp_path / "raw"))
    distance = proposal["ingest"]["expectations"]["near_duplicate_max_distance"]
    assert 0 <= distance < schema_inference.NEAR_DUPLICATE_DISTANCE  # lowered, never turned off
    assert any("in groups too large to keep whole in one split" in note for note in notes)
    # Real small images that ship with scikit-learn (8x8 digits) are told apart: the distance stays.
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(3):
        (tmp_path / "digits" / str(label)).mkdir(parents=True)
        for number, image in enumerate(digits.images[digits.target == label][:30]):
            Image.fromarray((image * 255 / 16).round().astype(np.uint8)).save(
                tmp_path / "digits" / str(label) / f"{number}.png"
            )
    proposal, _ = schema_inference.propose(schema_inference.profile_images(tmp_path / "digits"))
    expectations = proposal["ingest"]["expectations"]
    assert expectations["near_duplicate_max_distance"] == schema_inference.NEAR_DUPLICATE_DISTANCE
    assert (expectations["image_height"], expectations["num_classes"]) == (8, 3)


def test_auto_sizes_follow_the_data_and_the_model():
    params = parse_params({}).preprocess
    assert resolve_image_size(params, 8, 8, 28) == (28, 28)  # lenet5 was designed for 28-32 px
    assert resolve_image_size(params, 25, 50, 28) == (28, 56)  # aspect kept
    assert resolve_image_size(params, 64, 64, 28) == (64, 64)  # never scaled down
    assert resolve_image_size(params, 8, 8, 0) == (8, 8)  # mlp: any size
    assert resolve_image_size(
        parse_params({"preprocess": {"image_height": 20, "image_width": 20}}).preprocess, 8, 8, 28
    ) == (20, 20)


def test_auto_schedules_suit_200_images_as_well_as_60000():
    train = parse_params({}).train
    mnist_5k = resolve_train_schedule(train, 4000)
    assert (mnist_5k.batch_size, mnist_5k.epochs, mnist_5k.early_stopping_patience) == (
        64,
        40,
        6,
    )  # the demo's tuned values
    tiny = resolve_train_schedule(train, 160)
    assert (tiny.batch_size, tiny.epochs) == (16, 250) and tiny.early_stopping_patience == 38
    large = resolve_train_schedule(train, 50_000)
    assert (large.batch_size, large.epochs) == (128, 20)
    fixed = resolve_train_schedule(
        parse_params({"train": {"epochs": 3, "batch_size": 8, "early_stopping_patience": 2}}).train, 160
    )
    assert (fixed.batch_size, fixed.epochs, fixed.early_stopping_patience) == (8, 3, 2)


def test_the_preprocess_stage_resolves_auto_for_the_model(prepared_dir, monkeypatch):
    from components.preprocess import stage as preprocess

    root = prepared_dir.parents[1]
    monkeypatch.chdir(root)
    for model, expected in (("lenet5", [28, 28, 1]), ("mlp", [12, 12, 1])):
        (root / "params.yaml").write_text(yaml.safe_dump({"train": {"model": model}}))
        preprocess.main()
        statistics = yaml.safe_load((root / "artifacts/preprocess/statistics.json").read_text())
        assert statistics["output_shape"] == expected and statistics["image_size"]["requested"] == ["auto", "auto"]
