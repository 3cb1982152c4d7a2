"""The hand-written reference recipe, a yardstick for models/resnet_small.py on the pipeline's own splits.

    .venv/bin/python -m benchmarks.reference_recipe [--prepared data/prepared] [--epochs 30]

A 79k-parameter CIFAR-style ResNet written out here (16/32/64 channels, one basic block per stage, batch norm),
per-channel normalization from the train split, random flips and translation, Adam with cosine decay, batch 64:
trains on train, prints JSON with test and val accuracy, the script's wall seconds and training images/s.
Deliberately independent of models/: it is what our own model is measured against.
"""

import time

START = time.perf_counter()  # wall time counts the imports too: what a user waits for

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tfpipe import records  # noqa: E402


def block(x, filters, stride):
    """Basic block: two 3x3 conv-bn, a 1x1 projection shortcut where the shape changes, relu after the sum."""
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
    y = keras.layers.BatchNormalization()(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
    if stride != 1 or x.shape[-1] != filters:
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
    return keras.layers.ReLU()(keras.layers.Add()([y, x]))


def build_model(train_images, num_classes):
    """Normalization (per-channel, from the train split), stem, three stages, pooling, softmax."""
    inputs = keras.Input(train_images.shape[1:])
    normalize = keras.layers.Normalization(axis=-1)
    normalize.adapt(train_images)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(normalize(inputs))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        x = block(x, filters, stride)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def main(argv=None):
    """Trains the reference on --prepared's train split and prints its accuracies and speed as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size", type=int, help="resize larger images to this side first (32: the CIFAR size this net is for)"
    )
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    class_names = records.read_manifest(args.prepared)["class_names"]
    (train_images, train_labels), (val_images, val_labels), (test_images, test_labels) = (
        records.load_split_arrays(args.prepared, split) for split in ("train", "val", "test")
    )
    if args.size and max(train_images.shape[1:3]) > args.size:  # a photo folder stored larger: the net's 32 px

        def shrink(images):
            return tf.image.resize(images, (args.size, args.size), antialias=True).numpy()

        train_images, val_images, test_images = (shrink(images) for images in (train_images, val_images, test_images))
    train_images = train_images.astype(np.float32)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.1, 0.1)])
    train = (
        tf.data.Dataset.from_tensor_slices((train_images, train_labels))
        .shuffle(len(train_images), seed=args.seed)
        .batch(args.batch_size)
        .map(lambda images, labels: (augment(images, training=True), labels), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = build_model(train_images, len(class_names))
    steps = args.epochs * -(-len(train_images) // args.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit_start = time.perf_counter()
    model.fit(train, epochs=args.epochs, verbose=0)
    fit_seconds = time.perf_counter() - fit_start

    def accuracy(images, labels):
        return float(model.evaluate(images.astype(np.float32), labels, batch_size=256, verbose=0)[1])

    result = {
        "test_accuracy": accuracy(test_images, test_labels),
        "val_accuracy": accuracy(val_images, val_labels) if len(val_images) else None,
        "parameters": int(model.count_params()),
        "epochs": args.epochs,
        "train_images_per_s": len(train_images) * args.epochs / fit_seconds,
        "wall_seconds": time.perf_counter() - START,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
