"""Loads the trained model for the stages after train; holds the custom layers it may contain, registered for Keras.

Evaluate and export import this module, not the architectures: a saved .keras model carries its
architecture, and only its custom layers (here) must be known to deserialize it.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from models import table_layers, text_preprocessing  # noqa: F401  (registers the table and text layers for Keras)
from tfpipe.outputs import file_sha256


@keras.utils.register_keras_serializable(package="tfpipe")
class SpaceToDepth(keras.layers.Layer):
    """tf.nn.space_to_depth (TFLite SPACE_TO_DEPTH, which XNNPACK runs in float32 and int8). A side that is not
    a multiple of the block is zero-padded at the bottom/right first, whether its size is static or known only at
    run time. A registered layer, not a Lambda: the stages load models in Keras' safe mode, which refuses Lambda
    layers."""

    def __init__(self, block_size: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs):
        # Static sides give the same graph as always (the TFLite export has static shapes). A side only known at
        # run time (a tf.data batch whose augmentation lost the static shape) is padded by a tensor instead.
        pads = [self._padding(inputs, axis) for axis in (1, 2)]
        if any(not isinstance(pad, int) or pad for pad in pads):
            inputs = tf.pad(inputs, [[0, 0], [0, pads[0]], [0, pads[1]], [0, 0]])
        return tf.nn.space_to_depth(inputs, self.block_size)

    def _padding(self, inputs, axis: int):
        """Rows (axis 1) or columns (axis 2) to add so the side is a multiple of the block: an int when the side is
        static, else a scalar tensor."""
        side = inputs.shape[axis]
        if side is not None:
            return -side % self.block_size
        return tf.math.floormod(-tf.shape(inputs)[axis], self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tf.TensorShape(input_shape).as_list()
        block = self.block_size

        def blocks(side):  # ceil(side / block); unknown stays unknown
            return None if side is None else -(-side // block)

        return tf.TensorShape(
            [batch, blocks(height), blocks(width), None if channels is None else channels * block * block]
        )

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def vector_model(trained, core_name: str):
    """The trained model without its preprocessing: what its preprocessing outputs in (a table's feature vector, a
    text's token ids or TF-IDF vector), the same head's output out, with the trained model's own layers and weights.
    What the TFLite variants convert (a TFLite model holds no string lookup) and the label check scores."""
    core = trained.get_layer(core_name)
    inputs = keras.Input(shape=core.input_shape[1:], dtype=core.inputs[0].dtype, name="features")
    return keras.Model(inputs, trained.layers[-1](core(inputs)), name="vector_model")


def load_trained_model(train_dir: Path | str):
    """The trained Keras model (for inference), after checking it is the file the train stage wrote.

    train records the model's sha256 in model.json (inside artifacts/train, whose hash dvc.lock
    records); a model.keras replaced or edited by hand no longer matches and is refused.
    """
    train_dir = Path(train_dir)
    with (train_dir / "model.json").open() as stream:
        expected = json.load(stream).get("model_sha256")
    actual = file_sha256(train_dir / "model.keras")
    if expected != actual:
        raise ValueError(
            f"{train_dir / 'model.keras'}: sha256 {actual[:16]}… does not match {str(expected)[:16]}… recorded by "
            f"the train stage in {train_dir / 'model.json'}: the model was changed after training; "
            "run `dvc repro train`"
        )
    # safe_mode (the default) refuses Lambda layers and other arbitrary code in the archive.
    return keras.models.load_model(train_dir / "model.keras", compile=False, safe_mode=True)
