"""The served model: the SavedModel's serving signature (raw uint8 images in, probabilities, class ids and names out),
its registration in MLflow with its digest, and the checks that it reads back as exported. Writes the SavedModel and
the registered version.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from tfpipe import model_trust, tflite


class ServingModule(tf.Module):
    """Raw uint8 images in; `serve` (the serving_default signature) returns probabilities, class ids
    and class names, calling the module returns the probabilities alone."""

    def __init__(self, model: keras.Model, class_names: list[str], decoding: dict | None = None):
        super().__init__(name="serving")
        # The functions close over the Keras model instead of tracking it as an attribute: the SavedModel
        # then holds these two functions and the model's variables, not a Keras SavedModel of every layer
        # (which no reader here uses, and whose tracing of every layer made each save take ~1 s instead of ~0.2 s).
        self.model_variables = list(model.variables)
        # A variable, not a constant, so the loaded SavedModel still has the names (predict lists top-k by name).
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")
        # How a file becomes the uint8 pixels this model takes (tfpipe/images.py's rules, from the manifest):
        # pipelines.predict decodes with them, so serving sees what training saw.
        self.decoding = tf.Variable(json.dumps(decoding or {}, sort_keys=True), trainable=False, name="decoding")
        height, width, channels = model.input_shape[1:]
        spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")

        def probabilities(images):
            return model(tf.cast(images, tf.float32), training=False)

        def serve(images):
            scores = probabilities(images)
            class_ids = tf.argmax(scores, axis=-1)
            return {
                "probabilities": scores,
                "class_ids": class_ids,
                "class_names": tf.gather(self.class_names, class_ids),
            }

        self.serve = tf.function(serve, input_signature=[spec])
        # An instance attribute named __call__ is what makes the *loaded* SavedModel callable, which
        # mlflow's pyfunc wrapper for tf.Module models (and so `mlflow models serve`) calls. That
        # wrapper converts a single tensor to numpy but passes a dict of tensors through, which the
        # REST server then cannot serialize: hence one tensor here.
        self.__call__ = tf.function(probabilities, input_signature=[spec])


def serving_signature(image_shape, num_classes: int) -> ModelSignature:
    """What pyfunc (and `mlflow models serve`) takes and returns: uint8 images in, probabilities out.

    The input is left unnamed: mlflow's pyfunc wrapper for tf.Module models accepts only arrays,
    and a named input makes pyfunc pass a dict. The SavedModel's serving_default signature (TF
    Serving, the predict command) still names it `images` and adds class ids and names.
    """
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register_serving_model(
    module: ServingModule, *, model_name: str, example_images, num_classes: int, tags: dict
) -> int:
    """Logs the serving module into the active run and registers it (tags, no alias); returns the version."""
    info = mlflow.tensorflow.log_model(
        module,
        name="serving_model",
        signature=serving_signature(example_images.shape[1:], num_classes),
        input_example=example_images,
        registered_model_name=model_name,
        saved_model_kwargs={"signatures": {"serving_default": module.serve}},
        # The SavedModel needs only TensorFlow to load; inferring requirements would spawn a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}"],
    )
    if info.registered_model_version is None:
        raise RuntimeError(f"MLflow did not return a version for registered model {model_name!r}")
    version = int(info.registered_model_version)
    # The digest of the SavedModel as MLflow stored it (its own save of the module), read back from the registry:
    # predict and evaluate load a registered SavedModel only when it still matches (tfpipe/model_trust.py).
    with tempfile.TemporaryDirectory(prefix="tfpipe-model-") as scratch:
        stored = model_trust.download_mlflow_model(f"models:/{model_name}/{version}", Path(scratch))
        tags = {**tags, model_trust.DIGEST_TAG: model_trust.saved_model_digest(stored)}
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    return version


class ExportCheckFailed(RuntimeError):
    """A written artifact does not read back as what was exported: nothing is promoted."""


def check_serving_parity(
    saved_model_dir: Path, model: keras.Model, images: np.ndarray, tolerance: float = 1e-4
) -> float:
    """Loads the SavedModel from disk and checks that serving_default (uint8 in) gives the trained model's
    probabilities on `images`; returns the largest difference, raises ExportCheckFailed beyond `tolerance`."""
    serving = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    served = np.concatenate(
        [
            serving(images=tf.constant(images[start : start + 256]))["probabilities"].numpy()
            for start in range(0, len(images), 256)
        ]
    )
    expected = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    difference = float(np.max(np.abs(served - expected))) if len(images) else 0.0
    if difference > tolerance:
        raise ExportCheckFailed(
            f"{saved_model_dir}: serving_default differs from the trained model by {difference:.2e} "
            f"(tolerance {tolerance}) on the test split"
        )
    return difference


def check_written_files(directory: Path, expected: dict[str, bytes]) -> None:
    """Every file reads back byte for byte, and every .tflite loads in the interpreter."""
    for name, content in expected.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            raise ExportCheckFailed(f"{path}: does not read back as written")
        if name.endswith(".tflite"):
            tflite.load_interpreter(path)
