"""Loads the trained model for the stages after train; holds the custom layers it may contain, registered for Keras.

Evaluate and export import this module, not the architectures: a saved .keras model carries its
architecture, and only its custom layers (here) must be known to deserialize it.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from pipelines.outputs import file_sha256


@keras.utils.register_keras_serializable(package="tfpipe")
class SpaceToDepth(keras.layers.Layer):
    """tf.nn.space_to_depth (TFLite SPACE_TO_DEPTH, which XNNPACK runs in float32 and int8). A side that is not
    a multiple of the block is zero-padded at the bottom/right first. A registered layer, not a Lambda: the
    stages load models in Keras' safe mode, which refuses Lambda layers."""

    def __init__(self, block_size: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        pad_height, pad_width = -height % self.block_size, -width % self.block_size
        if pad_height or pad_width:
            inputs = tf.pad(inputs, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]])
        return tf.nn.space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        block = self.block_size
        return tf.TensorShape(
            [input_shape[0], -(-input_shape[1] // block), -(-input_shape[2] // block), input_shape[3] * block * block]
        )

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


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
