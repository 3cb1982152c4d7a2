"""pipelines.predict for a table's model: reads table files (CSV, TSV, JSON lines, Parquet: the reader ingest uses,
tfpipe/tables.py) or CSV on stdin, parses each column as the model was trained (its schema rides in the SavedModel's
`encoding`, or in encoding.json beside a .tflite file) and writes one prediction a row as CSV: the row's number in its
file, the prediction, and for a classifier each class's probability. A cell that does not parse is an error naming
the file, the column and the rows, and nothing is written for that file.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

from tfpipe import tflite
from tfpipe.table_encoding import encode
from tfpipe.table_serving import MissingColumns, model_inputs, predictions_frame
from tfpipe.tables import ROW, TableFile, TableReadError

ENCODING_FILE = "encoding.json"


class TableSavedModel:
    """The export's SavedModel of a table: its serving signature takes each column by input name."""

    def __init__(self, loaded):
        self._loaded = loaded  # the signature needs its object kept alive
        self._serve = loaded.signatures["serving_default"]
        self.encoding = json.loads(loaded.encoding.numpy().decode())

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        from tfpipe.table_serving import predict_frame

        return predict_frame(self._serve, frame, self.encoding)


class TableTFLite:
    """A .tflite variant of a table's model with encoding.json beside it: the feature vector is made in numpy."""

    def __init__(self, path: Path):
        encoding_file = path.parent / ENCODING_FILE
        self.encoding = json.loads(encoding_file.read_text())
        self.runner = tflite.TFLiteClassifier(path)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        inputs = model_inputs(frame, self.encoding)
        features = encode({name: values.reshape(-1, 1) for name, values in inputs.items()}, self.encoding)
        outputs = self.runner.predict(features, batch_size=256)
        key = "prediction" if self.encoding["task"] == "regression" else "probabilities"
        return predictions_frame({key: outputs}, self.encoding)


def is_table_tflite(path: Path) -> bool:
    return (path.parent / ENCODING_FILE).is_file()


def read_rows(path: Path) -> pd.DataFrame:
    """A table file, or CSV on stdin for `-`, as the one reader reads it (ROW numbers the rows)."""
    if str(path) != "-":
        return TableFile.open(path).read()
    with tempfile.NamedTemporaryFile(suffix=".csv") as copy:
        copy.write(sys.stdin.buffer.read())
        copy.flush()
        return TableFile.open(copy.name).read()


def predict_file(model, path: Path) -> pd.DataFrame:
    """One prediction a row of the file: ROW, then the model's columns; ValueError naming what does not parse."""
    frame = read_rows(path)
    try:
        predictions = model.predict(frame)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    predictions.insert(0, "row", frame[ROW].to_numpy())
    return predictions


def main(model, files: list[Path], output: Path | None) -> int:
    """Predicts every file; writes CSV to `output` (whole or not at all) or stdout. Exit status 1 when a file fails."""
    parts, failed = [], 0
    for path in files:
        try:
            predictions = predict_file(model, path)
        except (TableReadError, MissingColumns, ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        if len(files) > 1:
            predictions.insert(0, "file", str(path))
        parts.append(predictions)
    if parts:
        frame = pd.concat(parts, ignore_index=True)
        text = frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")
        if output is None:
            sys.stdout.write(text)
        else:
            from tfpipe.outputs import write_text

            write_text(output, text)
            print(f"{output}: {len(frame):,} prediction(s)", file=sys.stderr)
    return 1 if failed else 0


def describe(model) -> str:
    encoding = model.encoding
    task = "a regression of " + encoding["target"] if encoding["task"] == "regression" else "a classifier"
    return f"{task} reading {', '.join(item['column'] for item in encoding['inputs'])}"
