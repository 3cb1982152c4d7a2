"""The tfmot fine-tunes some variants start from: pruning (prune_low_magnitude on a polynomial ramp, then
strip_pruning) and quantization-aware training (pruning-preserving on a pruned model), on the classifier alone with
the trained model's preprocessing and softmax put back around it; reads the train examples it is given (Examples:
streamed from the prepared split, or arrays in a test), writes pruning summaries for TensorBoard.

A fine-tune fits the data as training does: `auto` epochs are about FINE_TUNE_STEPS optimizer steps whatever the
train split's size (four epochs of 400 photos were 28 steps, too few for a ResNet to recover from losing three
quarters of its weights), and with a validation split the fine-tune keeps the weights of its best epoch by val_loss
(for pruning, among the epochs after the ramp: every one of them has the final masks) and stops after
`patience_epochs` without a better one.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.export.examples import Examples
from components.export.quantization import quantize_apply_skipping

FINE_TUNE_BATCH_SIZE = 64
FINE_TUNE_STEPS = 1000  # auto epochs: about this many optimizer steps (mnist_5k's 3,998 train images: 16 epochs)
AUTO_EPOCHS = (2, 200)  # auto never gives fewer or more epochs than these


def resolve_epochs(epochs: int | str, count: int, batch_size: int = FINE_TUNE_BATCH_SIZE) -> int:
    """A fine-tune's epochs: the params' number, or for auto about FINE_TUNE_STEPS optimizer steps over `count`
    examples, within AUTO_EPOCHS."""
    if epochs != "auto":
        return int(epochs)
    steps_per_epoch = max(1, math.ceil(count / batch_size))
    return min(AUTO_EPOCHS[1], max(AUTO_EPOCHS[0], round(FINE_TUNE_STEPS / steps_per_epoch)))


def patience_epochs(epochs: int) -> int:
    """Epochs without a better val_loss before a fine-tune stops: a fifth of its epochs, at least 2."""
    return max(2, epochs // 5)


def wrap_classifier(model: keras.Model, classifier: keras.Model, name: str) -> keras.Model:
    """`model`'s preprocessor (an image model's; a table's vector model has none), then `classifier`, then `model`'s
    own head (a float32 softmax, or a regression's TargetTransform): the same inputs and outputs as `model`."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.input_names[0])
    layers = {layer.name for layer in model.layers}
    features = model.get_layer("preprocessing")(inputs) if "preprocessing" in layers else inputs
    return keras.Model(inputs, model.layers[-1](classifier(features)), name=name)


def copy_classifier(model: keras.Model, classifier_name: str) -> keras.Model:
    """A trainable copy with the same weights; clone_model alone would re-initialize them.

    A fine-tune must be able to move every weight it prunes or quantizes, so layers a pretrained
    backbone froze train here too, except batch norm (it keeps its statistics) and the fixed
    `input_*` preprocessing layers.
    """
    classifier = model.get_layer(classifier_name)
    copy = keras.models.clone_model(classifier)  # keeps each layer's trainable flag, so the weights line up
    copy.set_weights(classifier.get_weights())
    for layer in copy.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) and not layer.name.startswith("input_"):
            layer.trainable = True
    return copy


def weight_kernel(layer) -> tf.Variable | None:
    """The kernel of a conv, depthwise conv or dense layer (what sparsity is counted over); None for other layers."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.depthwise_kernel
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return layer.kernel
    return None


def build_pruning_schedule(
    num_examples: int, *, batch_size: int, epochs: int, target_sparsity: float, end_fraction: float = 1.0
):
    """PolynomialDecay from 0 to the target over the first `end_fraction` of the fine-tune.

    The steps after the ramp train with the final mask and win back the accuracy the last pruning
    steps cost. Masks are only updated at multiples of `frequency` (default 100, which a short
    fine-tune would never reach): end_step is the last multiple of frequency within the ramp.
    """
    import tensorflow_model_optimization as tfmot

    total_steps = math.ceil(num_examples / batch_size) * epochs
    ramp_steps = max(1, int(total_steps * end_fraction))
    frequency = max(1, ramp_steps // 10)
    end_step = ramp_steps - ramp_steps % frequency
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target_sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )


def batched(examples: Examples, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """(float32 inputs, targets) batches of FINE_TUNE_BATCH_SIZE, shuffled with the seed when one is given."""
    dataset = examples.dataset()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(examples.shuffle_buffer(), seed=shuffle_seed)
    return (
        dataset.batch(FINE_TUNE_BATCH_SIZE)
        .map(lambda image, label: (tf.cast(image, tf.float32), label), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def fine_tune(
    model: keras.Model,
    train: Examples,
    *,
    epochs: int,
    learning_rate: float,
    seed: int,
    callbacks=(),
    loss=None,
    val: Examples | None = None,
    select_from_epoch: int = 0,
):
    """At most `epochs` epochs of the train examples at a low rate; the variants start from trained weights. loss: the
    model's training loss (default: a classifier's cross-entropy on its probabilities). With val examples, the
    weights of the epoch with the lowest val_loss from `select_from_epoch` on are kept, and the fine-tune stops after
    patience_epochs(epochs) epochs without a lower one."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(),
        metrics=[] if loss is not None else ["accuracy"],
    )
    callbacks = list(callbacks)
    if val is not None and val.count > 0 and select_from_epoch < epochs:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=patience_epochs(epochs),
                restore_best_weights=True,
                start_from_epoch=select_from_epoch,
            )
        )
    else:
        val = None
    model.fit(
        batched(train, shuffle_seed=seed),
        epochs=epochs,
        validation_data=batched(val) if val is not None else None,
        callbacks=callbacks,
        verbose=2,
    )
    return model


def prune_classifier(
    model,
    classifier_name,
    train: Examples,
    *,
    target_sparsity,
    epochs,
    end_fraction,
    learning_rate,
    min_weights,
    seed,
    log_dir,
    loss=None,
    val: Examples | None = None,
) -> keras.Model:
    """Fine-tunes a pruned copy of the classifier; returns the whole model with pruning stripped. epochs: a number or
    auto (resolve_epochs); with val examples, the best epoch after the ramp by val_loss is kept.

    Kernels with fewer than `min_weights` weights stay dense: they are a rounding error of the
    size, and a first conv with one input channel loses accuracy fast when pruned. Depthwise
    kernels stay dense too (tfmot registers DepthwiseConv2D with no prunable weights), as do the
    fixed `input_*` preprocessing layers of a pretrained backbone.
    """
    import tensorflow_model_optimization as tfmot

    epochs = resolve_epochs(epochs, train.count)
    schedule = build_pruning_schedule(
        train.count,
        batch_size=FINE_TUNE_BATCH_SIZE,
        epochs=epochs,
        target_sparsity=target_sparsity,
        end_fraction=end_fraction,
    )

    def wrap(layer):
        kernel = weight_kernel(layer)
        if (
            kernel is not None
            and not isinstance(layer, keras.layers.DepthwiseConv2D)
            and int(np.prod(kernel.shape)) >= min_weights
            and not layer.name.startswith("input_")
        ):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # clone_model re-creates layers without their weights: wrap a copy that has them.
    prunable = keras.models.clone_model(copy_classifier(model, classifier_name), clone_function=wrap)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir))]
    fine_tune(
        wrap_classifier(model, prunable, "pruning"),
        train,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        callbacks=callbacks,
        loss=loss,
        val=val,
        # the first epoch that starts with the final masks (the last update is at the ramp's end step)
        select_from_epoch=schedule.end_step // math.ceil(train.count / FINE_TUNE_BATCH_SIZE) + 1,
    )
    return wrap_classifier(model, tfmot.sparsity.keras.strip_pruning(prunable), "pruned_model")


def quantization_aware_classifier(
    model,
    train: Examples,
    classifier_name,
    *,
    preserve_sparsity: bool,
    epochs: int | str,
    learning_rate: float,
    seed: int,
    loss=None,
    val: Examples | None = None,
) -> tuple[keras.Model, list[str]]:
    """QAT fine-tune (fake-quantized weights and activations); with preserve_sparsity (PQAT) the
    zero weights of an already pruned classifier stay zero. The converter turns the result into int8. epochs: a
    number or auto (resolve_epochs); with val examples, the best epoch by val_loss is kept.

    Returns the fine-tuned model and the layers that stayed float in it (see quantize_apply_skipping).
    """
    import tensorflow_model_optimization as tfmot

    classifier = copy_classifier(model, classifier_name)
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if preserve_sparsity
        else tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
    )
    quantized, float_layers = quantize_apply_skipping(classifier, scheme)
    qat_model = wrap_classifier(model, quantized, "pqat_model" if preserve_sparsity else "qat_model")
    trained = fine_tune(
        qat_model,
        train,
        epochs=resolve_epochs(epochs, train.count),
        learning_rate=learning_rate,
        seed=seed,
        loss=loss,
        val=val,
    )
    return trained, float_layers


def keras_weight_sparsity(model: keras.Model) -> float:
    """Fraction of exactly-zero values in the Conv2D/Dense kernels, nested models included."""

    def kernels(layer):
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                yield from kernels(inner)
        elif weight_kernel(layer) is not None:
            yield weight_kernel(layer).numpy()

    weights = list(kernels(model))
    return sum(int(np.sum(w == 0)) for w in weights) / sum(w.size for w in weights)
