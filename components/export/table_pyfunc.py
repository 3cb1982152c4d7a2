"""The python model of a table's registered version, as MLflow loads it ("models from code": this file runs, nothing
is unpickled; no stage imports it), with the tfpipe package beside it (code_paths). Its artifacts are the exported
SavedModel (the one our export recorded the digest of: tfpipe/model_trust.py finds it there) and encoding.json; a
DataFrame of raw columns in, predictions out (tfpipe/table_serving.py). Reads its artifacts, writes nothing.
"""

from __future__ import annotations

import json

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from tfpipe.table_serving import predict_frame

SAVED_MODEL_ARTIFACT = "saved_model"
ENCODING_ARTIFACT = "encoding"


class TableModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(context.artifacts[SAVED_MODEL_ARTIFACT])
        self.serve = self.loaded.signatures["serving_default"]
        with open(context.artifacts[ENCODING_ARTIFACT]) as stream:
            self.encoding = json.load(stream)

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_frame(self.serve, frame, self.encoding)


mlflow.models.set_model(TableModel())
