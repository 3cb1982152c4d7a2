"""The baseline for the train-stage overhead figure: a bare Keras script, data in memory, no tracking.

Same model (the registry's, behind the same preprocessing model), same epochs, batch size, optimizer and
augmentation (the same Keras layers, on batches, as a hand-written script would apply them) as the train stage
reads from params.yaml; what it leaves out is exactly what tfpipe adds: tf.data from TFRecords, MLflow,
TensorBoard, checkpoints, backup and early stopping.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from components.train.data import build_augmenter  # noqa: E402
from components.train.schedule import resolve_train_schedule  # noqa: E402
from models import registry  # noqa: E402
from models.preprocessing import load_preprocessor  # noqa: E402
from tfpipe import paths, records  # noqa: E402
from tfpipe.params_file import load_params  # noqa: E402


def main() -> None:
    manifest = records.read_manifest(paths.PREPARED)  # the data's own shape and classes, whatever the dataset
    images, labels = records.load_split_arrays(paths.PREPARED, "train")
    params = resolve_train_schedule(load_params().train, len(images))  # the same "auto" values as the stage
    if params.model == "auto":  # the model the train stage's search chose, as it recorded it
        params = dataclasses.replace(params, model=json.loads((paths.TRAIN / "model.json").read_text())["model"])
    keras.utils.set_random_seed(params.seed)
    val_images, val_labels = records.load_split_arrays(paths.PREPARED, "val")
    images, val_images = images.astype(np.float32), val_images.astype(np.float32)
    preprocessor = load_preprocessor()  # the same resize and normalization as the stage's model
    classifier = registry.get_builder(params.model)(
        input_shape=preprocessor.output_shape[1:],
        num_classes=len(manifest["class_names"]),
        dropout_rate=params.dropout_rate,
        batch_norm=params.batch_norm,
    )
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Softmax()(classifier(preprocessor(inputs))))
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=params.steps_per_execution,
    )
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=params.seed)
    batches = batches.batch(params.batch_size)
    augmenter = build_augmenter(params.augmentation, params.seed)
    if augmenter is not None:
        batches = batches.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    model.fit(
        batches.prefetch(tf.data.AUTOTUNE),
        validation_data=(val_images, val_labels),
        epochs=params.epochs,
        batch_size=params.batch_size,
        verbose=2,
    )


if __name__ == "__main__":
    main()
