"""The tfmot fine-tunes some variants start from: pruning (prune_low_magnitude on a polynomial ramp, then
strip_pruning) and quantization-aware training (pruning-preserving on a pruned model), on the classifier alone with
the trained model's preprocessing and softmax put back around it; reads the train examples it is given (Examples:
streamed from the prepared split, or arrays in a test), writes pruning summaries for TensorBoard.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.export.examples import Examples

FINE_TUNE_BATCH_SIZE = 64


def wrap_classifier(model: keras.Model, classifier: keras.Model, name: str) -> keras.Model:
    """`model`'s preprocessor (an image model's; a table's vector model has none), then `classifier`, then `model`'s
    own head (a float32 softmax, or a regression's TargetTransform): the same inputs and outputs as `model`."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32", name=model.input_names[0])
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


def fine_tune(
    model: keras.Model,
    train: Examples,
    *,
    epochs: int,
    learning_rate: float,
    seed: int,
    callbacks=(),
    loss=None,
):
    """A few epochs of the train examples at a low rate; the variants start from trained weights. loss: the model's
    training loss (default: a classifier's cross-entropy on its probabilities)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(),
        metrics=[] if loss is not None else ["accuracy"],
    )
    dataset = (
        train.dataset()
        .shuffle(train.shuffle_buffer(), seed=seed)
        .batch(FINE_TUNE_BATCH_SIZE)
        .map(lambda image, label: (tf.cast(image, tf.float32), label), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(dataset, epochs=epochs, callbacks=list(callbacks), verbose=2)
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
) -> keras.Model:
    """Fine-tunes a pruned copy of the classifier; returns the whole model with pruning stripped.

    Kernels with fewer than `min_weights` weights stay dense: they are a rounding error of the
    size, and a first conv with one input channel loses accuracy fast when pruned. Depthwise
    kernels stay dense too (tfmot registers DepthwiseConv2D with no prunable weights), as do the
    fixed `input_*` preprocessing layers of a pretrained backbone.
    """
    import tensorflow_model_optimization as tfmot

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
    )
    return wrap_classifier(model, tfmot.sparsity.keras.strip_pruning(prunable), "pruned_model")


def folds_into_previous(layer) -> bool:
    """A batch norm right after a conv or dense layer: tfmot's transforms fold it into that layer. One anywhere else
    (after an addition, as a pre-activation residual block has it) has no QAT config."""
    nodes = getattr(layer, "inbound_nodes", None) or []
    inbound = nodes[0].inbound_layers if nodes else []
    inbound = inbound if isinstance(inbound, list) else [inbound]
    return len(inbound) == 1 and isinstance(inbound[0], (keras.layers.Conv2D, keras.layers.Dense))


def layers_without_quantize_config(classifier: keras.Model, scheme) -> list[str]:
    """Layers the scheme has no QAT config for, as 'name (Class)'. A batch norm after a conv or dense layer is not one
    of them: a transform folds it into that layer. (EfficientNet: Rescaling, Normalization, Multiply.)"""
    registry = scheme.get_quantize_registry()

    def supported(layer) -> bool:
        # The prune-preserving registry says it supports layers it then has no config for (a weightless
        # custom layer such as SpaceToDepth): asking for the config is the test that holds for every scheme.
        if not registry.supports(layer):
            return False
        try:
            registry.get_quantize_config(layer)
        except ValueError:
            return False
        return True

    return [
        f"{layer.name} ({type(layer).__name__})"
        for layer in classifier.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not (isinstance(layer, keras.layers.BatchNormalization) and folds_into_previous(layer))
        and not supported(layer)
    ]


@functools.cache
def float_quantize_config_class():
    """A tfmot QuantizeConfig that quantizes nothing: the layer stays float in the fine-tune (the converter
    quantizes it post-training). Built on first use, because tfmot is imported only when a fine-tune runs."""
    import tensorflow_model_optimization as tfmot

    class FloatQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return FloatQuantizeConfig


def quantize_apply_skipping(classifier: keras.Model, scheme) -> tuple[keras.Model, list[str]]:
    """quantize_apply on every layer the scheme supports; the rest stay float during the fine-tune.

    Returns the QAT model and the layers left float. Those are annotated with FloatQuantizeConfig
    rather than left alone: the prune-preserving scheme would otherwise ask its registry for a config it
    does not have (a layer feeding quantized ones). The int8 converter still quantizes them,
    post-training, from the representative images: the fallback for what tfmot cannot train.
    """
    import tensorflow_model_optimization as tfmot

    skipped = layers_without_quantize_config(classifier, scheme)
    names = {entry.split(" (")[0] for entry in skipped}
    annotate, float_config = tfmot.quantization.keras.quantize_annotate_layer, float_quantize_config_class()

    def clone(layer):  # returns the layers themselves, annotated: weights are shared
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        return annotate(layer, quantize_config=float_config()) if layer.name in names else annotate(layer)

    annotated = keras.models.clone_model(classifier, clone_function=clone)
    with tfmot.quantization.keras.quantize_scope({"FloatQuantizeConfig": float_config}):
        return tfmot.quantization.keras.quantize_apply(annotated, scheme), skipped


def quantization_aware_classifier(
    model,
    train: Examples,
    classifier_name,
    *,
    preserve_sparsity: bool,
    epochs: int,
    learning_rate: float,
    seed: int,
    loss=None,
) -> tuple[keras.Model, list[str]]:
    """QAT fine-tune (fake-quantized weights and activations); with preserve_sparsity (PQAT) the
    zero weights of an already pruned classifier stay zero. The converter turns the result into int8.

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
    trained = fine_tune(qat_model, train, epochs=epochs, learning_rate=learning_rate, seed=seed, loss=loss)
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
