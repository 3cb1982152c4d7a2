"""A table's (or documents') served model, outside TensorFlow's signature: the raw columns of a user's file (a
`mlflow models serve` receives a JSON DataFrame and `pipelines.predict` reads a CSV) parsed by the reader every stage
uses (tfpipe/tables.py, with the schema the model was trained on: formats, missing values, dates), fed to the
exported SavedModel by input name, and the predictions returned one row each (components/export/table_pyfunc.py wraps
this for MLflow). Reads and writes nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from tfpipe.tables import ROW, as_text, iso_dates, parse_column


class MissingColumns(ValueError):
    """The rows lack a column the model reads."""


class UnparsedCells(ValueError):
    """Cells that do not parse as their column's type (a number, a date in the column's format)."""


SHOWN = 5  # rows named per column in an error


def model_inputs(frame: pd.DataFrame, encoding: dict) -> dict[str, np.ndarray]:
    """{input name: [N]} for the SavedModel's serving signature, from the raw columns (by their names in the file):
    numbers float32 (NaN empty), dates ISO text, every other type text ("" empty). Other columns are ignored. A cell
    that is not a number (date) where the column holds numbers (dates) is an UnparsedCells error naming the rows."""
    if encoding.get("kind") == "text":  # documents: one column of text (named `text`, else the frame's only one)
        column = "text" if "text" in frame.columns else (frame.columns[-1] if len(frame.columns) == 1 else None)
        if column is None:
            raise MissingColumns(f"the rows need a `text` column of documents (they have {list(frame.columns)})")
        return {"text": frame[column].fillna("").astype(str).to_numpy(dtype=object)}
    missing = [item["column"] for item in encoding["inputs"] if item["column"] not in frame.columns]
    if missing:
        raise MissingColumns(
            f"the rows lack the column(s) {missing} that the model reads "
            f"(it reads {[item['column'] for item in encoding['inputs']]})"
        )
    inputs, problems = {}, []
    rows = frame[ROW].to_numpy() if ROW in frame.columns else np.arange(1, len(frame) + 1)
    for item in encoding["inputs"]:
        spec = SimpleNamespace(**{"format": None, "missing_values": (), **encoding["columns"][item["column"]]})
        values, bad = parse_column(frame[item["column"]], spec)
        if bad.any():
            cells = frame[item["column"]][bad.to_numpy()].head(SHOWN)
            named = ", ".join(f"row {row} ({value!r})" for row, value in zip(rows[bad.to_numpy()], cells, strict=False))
            kind = "numbers" if item["type"] == "numeric" else f"dates ({spec.format or 'ISO 8601'})"
            problems.append(f"column {item['column']!r}: {int(bad.sum())} cell(s) are not {kind}: {named}")
        if item["type"] == "numeric":
            inputs[item["input"]] = values.to_numpy(dtype=np.float32, na_value=np.nan)
        elif item["type"] == "date":
            inputs[item["input"]] = iso_dates(values).to_numpy(dtype=object)
        else:
            inputs[item["input"]] = as_text(values).fillna("").astype(str).to_numpy(dtype=object)
    if problems:
        raise UnparsedCells("; ".join(problems) + " (an empty cell is allowed; fix the others)")
    return inputs


def predictions_frame(outputs: dict, encoding: dict) -> pd.DataFrame:
    """One row per input row: a classification's class, its probability and each class's; a regression's value."""
    if encoding["task"] == "regression":
        return pd.DataFrame({"prediction": np.asarray(outputs["prediction"]).reshape(-1)})
    probabilities = np.asarray(outputs["probabilities"])
    names = encoding["class_names"]
    frame = pd.DataFrame(
        {
            "prediction": [names[index] for index in probabilities.argmax(axis=1)],
            "probability": probabilities.max(axis=1),
        }
    )
    for index, name in enumerate(names):
        frame[f"probability_{name}"] = probabilities[:, index]
    return frame


def predict_frame(serve, frame: pd.DataFrame, encoding: dict, batch_size: int = 4096) -> pd.DataFrame:
    """The SavedModel's serving function over the rows of `frame`, in batches."""
    import tensorflow as tf

    inputs = model_inputs(frame, encoding)
    parts = []
    for start in range(0, len(frame), batch_size):
        batch = {name: tf.constant(values[start : start + batch_size]) for name, values in inputs.items()}
        outputs = {key: value.numpy() for key, value in serve(**batch).items()}
        parts.append(predictions_frame(outputs, encoding))
    return pd.concat(parts, ignore_index=True) if parts else predictions_frame(empty_outputs(encoding), encoding)


def empty_outputs(encoding: dict) -> dict:
    if encoding["task"] == "regression":
        return {"prediction": np.zeros(0, np.float32)}
    return {"probabilities": np.zeros((0, len(encoding["class_names"])), np.float32)}
