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
