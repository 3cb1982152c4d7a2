"""A table's served model: the SavedModel's serving signature (each raw column by its input name, numbers float32,
every other type text; out: a classifier's probabilities, class ids and names, or a regression's prediction), its
registration in MLflow as a python model that takes the file's columns as a DataFrame (table_pyfunc.py, beside this
module), and
the checks that both read back as exported. Writes the SavedModel and the registered version.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components.export.serving import ExportCheckFailed
from tfpipe import model_trust
from tfpipe.table_serving import predict_frame

DTYPES = {"numeric": tf.float32}  # every other type is text
PYFUNC_FILE = Path(__file__).resolve().with_name("table_pyfunc.py")  # MLflow runs it: "models from code"
TFPIPE_PACKAGE = Path(__file__).resolve().parents[2] / "tfpipe"  # what it imports, shipped beside it


class TableServingModule(tf.Module):
    """Each column by its input name, [N] each; `serve` (serving_default) returns a classifier's probabilities,
    class ids and class names, or a regression's prediction. The encoding (inputs, statistics, the columns' schema)
    rides along as a variable, so a SavedModel says how a file's columns become its inputs."""

    def __init__(self, model: keras.Model, encoding: dict):
        super().__init__(name="serving")
        self.model_variables = list(model.variables)
        # The category lookups' hash tables are resources, not variables: tracked here so the SavedModel holds them.
        self.lookup_tables = [module.lookup_table for module in model.submodules if hasattr(module, "lookup_table")]
        self.encoding = tf.Variable(json.dumps(encoding, sort_keys=True), trainable=False, name="encoding")
        regression = encoding["task"] == "regression"
        if not regression:
            self.class_names = tf.Variable(encoding["class_names"], trainable=False, name="class_names")
        specs = {
            item["input"]: tf.TensorSpec([None], DTYPES.get(item["type"], tf.string), name=item["input"])
            for item in encoding["inputs"]
        }

        def serve(**columns):
            outputs = model({name: tf.reshape(value, [-1, 1]) for name, value in columns.items()}, training=False)
            if regression:
                return {"prediction": tf.reshape(outputs, [-1])}
            class_ids = tf.argmax(outputs, axis=-1)
            return {
                "probabilities": outputs,
                "class_ids": class_ids,
                "class_names": tf.gather(self.class_names, class_ids),
            }

        self.serve = tf.function(serve, autograph=False).get_concrete_function(**specs)


def check_serving_parity(saved_model_dir: Path, model: keras.Model, inputs: dict, task: str, tolerance=1e-4) -> float:
    """The SavedModel from disk against the trained model on the test rows; ExportCheckFailed beyond tolerance."""
    serving = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    key = "prediction" if task == "regression" else "probabilities"
    rows = len(next(iter(inputs.values())))
    served = [
        serving(**{name: tf.constant(values[start : start + 1024].reshape(-1)) for name, values in inputs.items()})[key]
        for start in range(0, rows, 1024)
    ]
    served = np.concatenate([part.numpy() for part in served]) if served else np.zeros(0)
    expected = model.predict(inputs, batch_size=1024, verbose=0)
    difference = float(np.max(np.abs(served.reshape(expected.shape) - expected))) if rows else 0.0
    if difference > tolerance * max(1.0, float(np.max(np.abs(expected))) if rows else 1.0):
        raise ExportCheckFailed(
            f"{saved_model_dir}: serving_default differs from the trained model by {difference:.2e} on the test rows"
        )
    return difference


def register_table_model(
    saved_model_dir: Path, encoding: dict, *, model_name: str, example: pd.DataFrame, tags: dict
) -> int:
    """Logs the python model (the SavedModel and encoding.json its artifacts) into the active run and registers it
    (tags, no alias); returns the version. Its signature is the file's columns by name (documents: `text`)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    with tempfile.TemporaryDirectory(prefix="tfpipe-encoding-") as scratch:
        encoding_file = Path(scratch) / "encoding.json"
        encoding_file.write_text(json.dumps(encoding, indent=2, sort_keys=True))
        serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
        output = predict_frame(serve, example, encoding)
        info = mlflow.pyfunc.log_model(
            name="serving_model",
            python_model=str(PYFUNC_FILE),
            artifacts={"saved_model": str(saved_model_dir), "encoding": str(encoding_file)},
            code_paths=[str(TFPIPE_PACKAGE)],
            # Each column the model reads, of any type: a JSON number arrives as an integer or a float, a date in the
            # column's format; the model parses them as ingest did (tfpipe/table_serving.py), not MLflow.
            signature=ModelSignature(
                inputs=Schema([ColSpec(AnyType(), column) for column in example.columns]),
                outputs=infer_signature(example, output).outputs,
            ),
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"pandas=={pd.__version__}"],
        )
    if info.registered_model_version is None:
        raise RuntimeError(f"MLflow did not return a version for registered model {model_name!r}")
    version = int(info.registered_model_version)
    with tempfile.TemporaryDirectory(prefix="tfpipe-model-") as scratch:
        stored = model_trust.download_mlflow_model(f"models:/{model_name}/{version}", Path(scratch))
        tags = {**tags, model_trust.DIGEST_TAG: model_trust.saved_model_digest(stored)}
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    return version
