"""The embedded default dataset is written byte-for-byte the same, once."""
import hashlib

import numpy as np
from PIL import Image

from pipelines import materialize


def test_mnist_5k_is_shipped_in_the_wheel():
    images, labels = materialize.load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10


def test_png_encoding_is_deterministic_and_lossless(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(28, 28)).astype(np.uint8)
    first, second = materialize.encode_png(image), materialize.encode_png(image.copy())
    assert first == second
    path = tmp_path / "x.png"
    path.write_bytes(first)
    assert np.array_equal(np.asarray(Image.open(path)), image)


def test_folder_is_idempotent_and_exact(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(6, 4, 4)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    raw = tmp_path / "raw"
    assert materialize.write_image_folder(images, labels, ["zero", "one"], raw) == 6
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.rglob("*.png")}
    (raw / "one" / "stray.png").write_bytes(b"not part of the dataset")
    (raw / "zero" / "00000.png").write_bytes(b"damaged")
    assert materialize.write_image_folder(images, labels, ["zero", "one"], raw) == 1
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.rglob("*.png")} == digest


def test_tfds_dataset_is_written_in_split_folders_with_its_class_order(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from components.ingest_layout import read_layout

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data/raw"
    with tfds.testing.mock_data(num_examples=12):  # no network: tfds.load returns random examples
        materialize.main(["--source", "tfds:fashion_mnist", "--no-dvc"])
    classes = (raw / "classes.txt").read_text().splitlines()
    assert classes[:2] == ["T-shirt_top", "Trouser"] and len(classes) == 10  # tfds label order, "/" replaced
    files = sorted(path.relative_to(raw).as_posix() for path in raw.rglob("*.png"))
    assert len(files) == 24 and {file.split("/")[0] for file in files} == {"train", "test"}
    assert np.asarray(Image.open(raw / files[0])).shape == (28, 28)
    layout = read_layout(raw)
    assert layout.kind == "split_folders" and layout.class_names == classes


def test_rgb_tfds_dataset_keeps_three_channels(tmp_path):
    import tensorflow_datasets as tfds

    raw = tmp_path / "raw"
    with tfds.testing.mock_data(num_examples=3):
        materialize.write_files(materialize.iter_tfds("cifar10", tmp_path / "tfds"), raw)
    image = next(raw.glob("train/*/*.png"))
    assert np.asarray(Image.open(image)).shape == (32, 32, 3)


def test_a_users_folder_is_copied_exactly_and_tracked_by_dvc(tmp_path, monkeypatch):
    import subprocess
    import sys

    source = tmp_path / "mine"
    for name in ("train/cat/a b.png", "test/dog/é.jpg", "train/cat/.DS_Store"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode())
    project = tmp_path / "project"
    (project / "data/raw/old").mkdir(parents=True)
    (project / "data/raw/old/stray.png").write_bytes(b"from the previous dataset")
    monkeypatch.chdir(project)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True)

    materialize.main(["--source", "folder", "--from", str(source)])

    raw = project / "data/raw"
    assert sorted(path.relative_to(raw).as_posix() for path in raw.rglob("*") if path.is_file()) == [
        "test/dog/é.jpg", "train/cat/a b.png"]
    assert "nfiles: 2" in (project / "data.dvc").read_text()
