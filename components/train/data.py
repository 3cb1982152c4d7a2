"""tf.data input pipelines and augmentation for training; reads TFRecord splits via tfpipe.records."""

from __future__ import annotations

import functools

import tensorflow as tf
import tf_keras as keras

from tfpipe.config import AugmentationParams


def random_generator(seed: int | None) -> tf.random.Generator:
    """A layer's own random generator: seeded (the same draws on every run) or, without a seed, not."""
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed)


class RandomErasing(keras.layers.Layer):
    """Random erasing (Zhong et al., 2017): with probability `rate`, a random rectangle becomes `fill`.

    tf_keras has no such layer; this one is a pure TF op on a batch, so it runs inside tf.data.
    """

    def __init__(self, rate: float, max_fraction: float = 0.4, fill: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.max_fraction, self.fill, self.seed = rate, max_fraction, fill, seed
        self.generator = random_generator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        uniform = self.generator.uniform([batch, 5])
        box_h = tf.cast(uniform[:, 0] * self.max_fraction * tf.cast(height, tf.float32), tf.int32) + 1
        box_w = tf.cast(uniform[:, 1] * self.max_fraction * tf.cast(width, tf.float32), tf.int32) + 1
        top = tf.cast(uniform[:, 2] * tf.cast(height - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(uniform[:, 3] * tf.cast(width - box_w + 1, tf.float32), tf.int32)
        apply = uniform[:, 4] < self.rate
        rows = tf.range(height)[None, :, None]
        columns = tf.range(width)[None, None, :]
        inside = (
            (rows >= top[:, None, None])
            & (rows < (top + box_h)[:, None, None])
            & (columns >= left[:, None, None])
            & (columns < (left + box_w)[:, None, None])
            & apply[:, None, None]
        )
        erased = tf.where(inside[..., None], tf.cast(self.fill, images.dtype), images)
        # Models that compute with the static shape (SpaceToDepth, Flatten before Dense) need it kept.
        erased.set_shape(images.shape)
        return erased

    def compute_output_shape(self, input_shape):
        return input_shape


class RandomCropWithPadding(keras.layers.Layer):
    """Pads `fraction` of the height (width) on the top and bottom (left and right), then crops each image back
    to its size at a random offset: 0.125 is CIFAR's classic 4 pixels at 32x32, and the same shift at any size."""

    def __init__(self, fraction: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fraction = fraction
        self.generator = random_generator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        size = tf.shape(images)[1:]
        pad = tf.cast(tf.round(self.fraction * tf.cast(size[:2], tf.float32)), tf.int32)
        padded = tf.pad(images, [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]])
        seeds = self.generator.uniform_full_int([tf.shape(images)[0], 2], dtype=tf.int32)
        # keras.layers.RandomCrop uses one offset for the whole batch; this crops each image on its own.
        cropped = tf.map_fn(
            lambda args: tf.image.stateless_random_crop(args[0], size, seed=args[1]),
            (padded, seeds),
            fn_output_signature=images.dtype,
        )
        # The crop size is a tensor, so map_fn's result has no static shape at all; it is the input's. Without it, a
        # model that computes with the static shape fails (SpaceToDepth: height None; Flatten before Dense).
        cropped.set_shape(images.shape)
        return cropped

    def compute_output_shape(self, input_shape):
        return input_shape


def build_augmenter(params: AugmentationParams, seed: int) -> keras.Sequential | None:
    """Random transforms on float pixel batches (0..255); None when every transform is off."""
    layers = []
    if params.crop_padding:
        layers.append(RandomCropWithPadding(params.crop_padding, seed=seed))
    if params.flip != "none":
        layers.append(keras.layers.RandomFlip(params.flip, seed=seed + 1))
    if params.rotation:
        layers.append(keras.layers.RandomRotation(params.rotation, fill_mode="constant", seed=seed + 2))
    if params.zoom:
        layers.append(keras.layers.RandomZoom(params.zoom, fill_mode="constant", seed=seed + 3))
    if params.translation:
        layers.append(
            keras.layers.RandomTranslation(params.translation, params.translation, fill_mode="constant", seed=seed + 4)
        )
    if params.contrast:
        layers.append(keras.layers.RandomContrast(params.contrast, seed=seed + 5))
    if params.erasing:
        layers.append(RandomErasing(params.erasing, seed=seed + 6))
    return keras.Sequential(layers, name="augmentation") if layers else None


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a function of the epoch, not of how many epochs this process has run."""
    return seed * 1_000_003 + epoch


def build_input_pipeline(
    dataset: tf.data.Dataset,
    batch_size: int,
    training: bool,
    shuffle_buffer: int = 1,
    seed: int = 0,
    augmenter: keras.Model | None = None,
    cache: str = "memory",
    epochs: range | None = None,
) -> tf.data.Dataset:
    """Cache decoded images, shuffle (train only), batch, augment (train only), prefetch.

    `cache` is "memory", "none", or a file path prefix (for splits larger than memory). With
    `epochs` (training), the result holds those epochs one after the other, each a full pass
    shuffled with its own seed (epoch_seed), and fit() needs steps_per_epoch: a run resumed at
    epoch k sees the batches an uninterrupted run sees at epoch k. (`reshuffle_each_iteration`
    would derive each order from how many passes this process made, so a resumed run would repeat
    the first epoch's order.) Batches keep the stored uint8 pixels unless they are augmented
    (float32, 0..255): the model's float32 input casts them inside the training step. A cast here
    would be one more map per batch (~10% of a LeNet-5 epoch on 2 cores, benchmarks/RESULTS.md)
    and 4x the bytes sent to an accelerator.
    """
    if cache == "memory":
        dataset = dataset.cache()
    elif cache != "none":
        dataset = dataset.cache(cache)
    if training and epochs is not None:
        passes = [
            dataset.shuffle(shuffle_buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False).batch(
                batch_size
            )
            for epoch in epochs
        ]
        if not passes:
            raise ValueError(f"no epochs to train in {epochs}")
        dataset = functools.reduce(tf.data.Dataset.concatenate, passes)
    else:
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    if training and augmenter is not None:
        # Two maps, not one: with the cast inside the augmentation map, training waited on input
        # for ~1/3 of an epoch instead of ~0.1 (benchmarks/run.py's input-bound share, 2 runs each).
        dataset = dataset.map(
            lambda images, labels: (tf.cast(images, tf.float32), labels), num_parallel_calls=tf.data.AUTOTUNE
        )
        dataset = dataset.map(
            lambda images, labels: (augmenter(images, training=True), labels), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
