"""Messy folders of documents of our own making, as users' folders are: class folders with a nested folder, files in
UTF-8 (with and without a byte-order mark), UTF-16 and Windows-1252, an empty file, a copy of a file, a near copy,
HTML line breaks, a picture among the documents. The class is learnable from the words."""

from __future__ import annotations

import codecs
import io
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = {
    "good": "great wonderful superb moving brilliant charming delightful fine lovely excellent".split(),
    "bad": "awful boring dull terrible weak clumsy tedious poor bland dreadful".split(),
}
FILLER = "the film story actor scene plot movie cast ending music camera script director one was and it a of".split()


def review(rng: np.random.Generator, label: str, length: int) -> str:
    words = rng.choice(FILLER, length).tolist()
    for position in rng.choice(length, max(2, length // 8), replace=False):
        words[position] = str(rng.choice(WORDS[label]))
    return " ".join(words).capitalize() + "."


def write_text_folder(root: Path, per_class: int = 60, seed: int = 0) -> Path:
    """root/good/*.txt and root/bad/*.txt with the quirks of the module docstring; returns root."""
    rng = np.random.default_rng(seed)
    for label in WORDS:
        folder = root / label
        (folder / "more").mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            text = review(rng, label, int(rng.integers(12, 60)))
            if index % 10 == 3:
                text = text.replace(". ", ".<br /><br />", 1) + "<br />The end."
            target = folder / ("more" if index % 4 == 0 else "") / f"{index:03d}.txt"
            encoding = ("utf-8", "utf-8-sig", "utf-16", "cp1252")[index % 4]
            target.write_bytes(text.replace("film", "café film", 1).encode(encoding))
    (root / "good" / "empty.txt").write_bytes(b"")
    (root / "good" / "copy.txt").write_bytes((root / "good" / "001.txt").read_bytes())
    near = (root / "bad" / "001.txt").read_bytes().decode("utf-8-sig")  # index 1: UTF-8 with a byte-order mark
    (root / "bad" / "near.txt").write_text(near + " Really.")
    picture = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(picture, format="PNG")
    (root / "good" / "poster.png").write_bytes(picture.getvalue())
    return root


def utf16(text: str) -> bytes:
    return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
