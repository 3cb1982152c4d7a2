"""The table kind's export. The SavedModel takes the raw columns by name (components/export/table_serving.py) and is
registered as a python model that takes a file's columns as a DataFrame. A TFLite model holds no string lookup, so
the variants are made of the vector model (the trained model without its preprocessing: the feature vector in,
models/table_preprocessing.vector_model) and encoding.json ships beside them: the statistics, vocabularies and column
schema that turn a file's columns into that vector (tfpipe/table_encoding.py). The pair is checked against the
SavedModel on the test split: agreement of at least 99% (a classifier), MAE within 1% (a regression).
Reads data/prepared and artifacts/train, writes nothing itself.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from components.export.examples import Examples
from components.export.prepared import Prepared
from components.export.serving import ExportCheckFailed
from components.export.table_serving import TableServingModule, check_serving_parity, register_table_model
from models.loading import vector_model
from models.table_layers import head_standardization, regression_loss
from tfpipe import paths, tflite
from tfpipe.table_encoding import encode, read_prepared_split

ENCODING_FILE = "encoding.json"
MIN_AGREEMENT = 0.99  # the TFLite float32 model with encoding.json against the SavedModel, test split
MAX_MAE_DIFFERENCE = 0.01  # a regression's: its MAE within 1% of the SavedModel's


def read_split(manifest: dict, statistics: dict, split: str) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """(the rows, the model's inputs, the targets: int64 class ids or float32 values)."""
    frame, inputs, targets = read_prepared_split(paths.PREPARED, manifest, statistics, split)
    return frame, inputs, targets if manifest["task"] == "classification" else targets.astype(np.float32)


def build_encoding(description: dict, manifest: dict) -> dict:
    """encoding.json: the preprocessing statistics, each feature column's schema (how a file's cell is parsed), the
    task, target and classes."""
    statistics = description["table"]
    columns = {item["column"]: manifest["columns"][item["column"]] for item in statistics["inputs"]}
    return {**statistics, "columns": columns, "class_names": manifest["class_names"], "task": manifest["task"]}


def pair_check(model, encoding: dict, inputs: dict, task: str):
    """A check of the float32 TFLite file with encoding.json (as shipped) against the trained model on the test rows:
    {"agreement"} or {"mae_difference"}; ExportCheckFailed below MIN_AGREEMENT or beyond MAX_MAE_DIFFERENCE."""
    expected = model.predict(inputs, batch_size=1024, verbose=0)

    def check(files: dict[str, bytes]) -> dict:
        if "model_float32.tflite" not in files:
            return {}
        shipped = json.loads(files[ENCODING_FILE])
        outputs = tflite.TFLiteClassifier(files["model_float32.tflite"]).predict(encode(inputs, shipped), 256)
        if task == "classification":
            agreement = float(np.mean(outputs.argmax(axis=1) == expected.argmax(axis=1)))
            if agreement < MIN_AGREEMENT:
                raise ExportCheckFailed(
                    f"model_float32.tflite with {ENCODING_FILE} agrees with the SavedModel on {agreement:.4f} of the "
                    f"test rows, below {MIN_AGREEMENT}"
                )
            return {"agreement": agreement}
        difference = float(np.mean(np.abs(outputs.reshape(-1) - expected.reshape(-1))))
        scale = float(np.mean(np.abs(expected))) or 1.0
        if difference / scale > MAX_MAE_DIFFERENCE:
            raise ExportCheckFailed(
                f"model_float32.tflite with {ENCODING_FILE} differs from the SavedModel by {difference:.4g} on "
                f"average on the test rows, beyond {MAX_MAE_DIFFERENCE:.0%} of its predictions"
            )
        return {"mean_abs_difference": difference}

    return check


def raw_example(rows: pd.DataFrame, encoding: dict) -> pd.DataFrame:
    """Prepared rows as a user's file holds them (the registered model's input example): the feature columns, dates in
    their column's format, empty cells empty."""
    example = pd.DataFrame(index=rows.index)
    for item in encoding["inputs"]:
        values, spec = rows[item["column"]], encoding["columns"][item["column"]]
        if item["type"] == "date" and spec.get("format") not in (None, "ISO8601"):
            values = pd.to_datetime(values.replace("", None)).dt.strftime(spec["format"])
        elif item["type"] != "numeric":
            values = values.replace("", None)
        example[item["column"]] = values
    return example.reset_index(drop=True)


def card_inputs(encoding: dict) -> tuple[str, ...]:
    """The model card's lines on what the model takes and returns."""
    from components.export.markdown import text

    columns = ", ".join(f"{item['column']} ({item['type']})" for item in encoding["inputs"])
    output = (
        f"the predicted {encoding['target']}, in its units"
        if encoding["task"] == "regression"
        else "a probability for each class, in the order of `labels.txt`"
    )
    return (
        f"- Input: the columns {text(columns)}, by name, as the training file holds them (numbers, categories as "
        "text, dates in the column's format; an empty cell is allowed: numbers get a missing-value indicator, a "
        "category never seen its out-of-vocabulary slot). The registered model takes them as a DataFrame; the "
        "SavedModel's `serving_default` one tensor a column (dates as ISO text); the TFLite models the feature "
        "vector that encoding.json makes of them",
        f"- Output: {output}",
    )


def prepare(model, description: dict, manifest: dict) -> Prepared:
    statistics, task = description["table"], manifest["task"]
    encoding = build_encoding(description, manifest)
    vector = vector_model(model, description["model"])
    _, train_inputs, train_targets = read_split(manifest, statistics, "train")
    test_frame, test_inputs, test_targets = read_split(manifest, statistics, "test")
    files = {ENCODING_FILE: (json.dumps(encoding, indent=2, sort_keys=True) + "\n").encode()}
    if task == "classification":
        files[tflite.LABELS_FILE] = "".join(f"{name}\n" for name in manifest["class_names"]).encode()
    loss = None
    if task == "regression":
        params = description["params"]
        standardization = head_standardization(statistics["target_statistics"], params["target_transform"])
        loss = regression_loss(params["regression_loss"], *standardization)
    example = raw_example(test_frame.head(2), encoding)
    module = TableServingModule(model, encoding)
    return Prepared(
        task=task,
        deployable=vector,
        classifier=description["model"],
        train=Examples.from_arrays(encode(train_inputs, statistics), train_targets),
        test=(encode(test_inputs, statistics), test_targets),
        files=files,
        module=module,
        check_parity=lambda saved_model: check_serving_parity(saved_model, model, test_inputs, task),
        register=lambda saved_model, name, tags: register_table_model(
            saved_model, encoding, model_name=name, example=example, tags=tags
        ),
        check_pair=pair_check(model, encoding, test_inputs, task),
        loss=loss,
        card_inputs=card_inputs(encoding),
        unit="rows",
    )
