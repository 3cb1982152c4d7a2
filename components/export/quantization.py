"""Which layers of a classifier tfmot's quantization-aware training can train, and the QAT model with the rest left
float (the converter quantizes those post-training); the fine-tune itself is components/export/fine_tune.py's. Reads
and writes nothing.
"""

from __future__ import annotations

import functools

import tf_keras as keras


def folds_into_previous(layer) -> bool:
    """A batch norm right after a conv (depthwise too) or dense layer: tfmot's transforms fold it into that layer. One
    anywhere else (after an addition, as a pre-activation residual block has it) has no QAT config."""
    nodes = getattr(layer, "inbound_nodes", None) or []
    inbound = nodes[0].inbound_layers if nodes else []
    inbound = inbound if isinstance(inbound, list) else [inbound]
    # DepthwiseConv2D named: tf_keras 2.21's is no Conv2D subclass, and tfmot folds a batch norm after it too
    folding = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return len(inbound) == 1 and isinstance(inbound[0], folding)


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
