"""The baseline for the train-stage overhead figure: a bare Keras script, data in memory, no tracking.

Same model (LeNet-5 from the registry behind the same normalization), same epochs, batch size and
optimizer as the train stage reads from params.yaml; what it leaves out is exactly what tfpipe adds:
tf.data from TFRecords, MLflow, TensorBoard, checkpoints, backup and early stopping.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from models import registry  # noqa: E402
from pipelines import (
    paths,  # noqa: E402
    records,  # noqa: E402
)
from pipelines.config import load_params, resolve_train_schedule  # noqa: E402


def main() -> None:
    images, labels = records.load_split_arrays(paths.PREPARED, "train")
    params = resolve_train_schedule(load_params().train, len(images))  # the same "auto" values as the stage
    keras.utils.set_random_seed(params.seed)
    val_images, val_labels = records.load_split_arrays(paths.PREPARED, "val")
    images, val_images = images.astype(np.float32), val_images.astype(np.float32)
    normalize = keras.layers.Normalization(mean=float(images.mean()), variance=float(images.var()))
    classifier = registry.get_builder(params.model)(
        input_shape=images.shape[1:], num_classes=10, dropout_rate=params.dropout_rate, batch_norm=params.batch_norm
    )
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Softmax()(classifier(normalize(inputs))))
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=params.steps_per_execution,
    )
    model.fit(
        images,
        labels,
        validation_data=(val_images, val_labels),
        epochs=params.epochs,
        batch_size=params.batch_size,
        verbose=2,
    )


if __name__ == "__main__":
    main()
