"""pipelines.predict for a text model: each file is a document (read by the reader ingest uses, tfpipe/texts.py:
UTF-8, UTF-16 or Windows-1252), or each line of stdin (`-`) is one; prints the top-k classes of each, one line a
document, as for images. The SavedModel takes the text itself; a .tflite file takes what vocabulary.json beside it
makes of the text (tfpipe/text_encoding.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tfpipe import tflite
from tfpipe.text_encoding import ENCODERS
from tfpipe.texts import decode

VOCABULARY_FILE = "vocabulary.json"


class TextSavedModel:
    def __init__(self, loaded):
        self._loaded = loaded
        self._serve = loaded.signatures["serving_default"]
        self.encoding = json.loads(loaded.encoding.numpy().decode())
        self.class_names = self.encoding["class_names"]

    def predict_texts(self, texts: list[str]) -> np.ndarray:
        import tensorflow as tf

        return self._serve(text=tf.constant(texts, tf.string))["probabilities"].numpy()


class TextTFLite:
    def __init__(self, path: Path):
        self.encoding = json.loads((path.parent / VOCABULARY_FILE).read_text())
        self.class_names = self.encoding["class_names"]
        self.runner = tflite.TFLiteClassifier(path)

    def predict_texts(self, texts: list[str]) -> np.ndarray:
        return self.runner.predict(ENCODERS[self.encoding["text_input"]](texts, self.encoding), batch_size=64)


def is_text_tflite(path: Path) -> bool:
    return (path.parent / VOCABULARY_FILE).is_file()


def documents(paths: list[Path]) -> list[tuple[str, str]]:
    """(name, text) of each file, or of each non-empty line of stdin for `-`."""
    found = []
    for path in paths:
        if str(path) == "-":
            found += [(f"line {number}", line) for number, line in enumerate(sys.stdin, 1) if line.strip()]
        else:
            found.append((str(path), decode(path.read_bytes())[0]))
    return found


def main(model, paths: list[Path], top_k: int) -> int:
    failed = 0
    named = []
    for path in paths:
        try:
            named += documents([path])
        except OSError as error:
            print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
            failed += 1
    for start in range(0, len(named), 256):
        batch = named[start : start + 256]
        probabilities = model.predict_texts([text for _, text in batch])
        for (name, _), row in zip(batch, probabilities, strict=True):
            order = np.argsort(row)[::-1][:top_k]
            print(f"{name}: " + ", ".join(f"{model.class_names[index]} {row[index]:.4f}" for index in order))
    return 1 if failed else 0
