"""The export stage's model variants, each built from its entry in tfpipe/variants.py: the TFLite conversions and the
tfmot fine-tunes (pruning, QAT, PQAT), reused from .cache/export/ when nothing they depend on changed
(components/export/cache.py).

Every fine-tune works on the classifier only (the registry model inside the trained model):
tfmot's quantize_model refuses a model nested in another, and the preprocessing model's
Normalization has no quantized training kernel. The same preprocessor and softmax are put back
around the fine-tuned classifier, so every variant takes raw pixels like the trained model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.export import cache as export_cache
from components.export.cache import CachedVariant
from components.export.examples import Examples
from components.export.fine_tune import prune_classifier, quantization_aware_classifier
from tfpipe import lineage, tflite
from tfpipe.variants import VARIANTS

# tensorflow_model_optimization (~1 s to import) is imported by the fine-tunes only: a run whose variants all
# come from the cache never loads it.


def select_representative_images(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` images drawn without replacement, as float32 raw pixel values (what the model takes)."""
    return Examples.from_arrays(images, np.zeros(len(images), np.int32)).sample(count, seed)


def convert_to_tflite(model: keras.Model, quantization: str, representative_images: np.ndarray | None = None) -> bytes:
    """float32 | float16 (weights) | dynamic_range (int8 weights, float activations) | int8 (full integer, int8 I/O).

    A recurrent model (an LSTM) is converted for a batch of one: TFLite's fused sequence ops need the
    shapes of their state static (with an unknown batch the converter stops at TensorListReserve); the runner
    (tfpipe/tflite.py) invokes such a model one example at a time."""
    if any(isinstance(layer, keras.layers.RNN) for layer in model.submodules):
        spec = tf.TensorSpec([1, *model.input_shape[1:]], model.inputs[0].dtype)
        function = tf.function(lambda inputs: model(inputs, training=False)).get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("full-integer quantization needs representative images to calibrate the activations")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif quantization != "float32":
        raise ValueError(f"unknown quantization {quantization!r}; expected float32, float16, dynamic_range or int8")
    return converter.convert()


def build_tflite_variants(
    model, classifier_name, train: Examples, params, *, log_dir: Path, cache_dir: Path, loss=None, val=None
) -> tuple[dict[str, bytes], dict[str, str], list[str]]:
    """{variant: .tflite bytes} for every variant in params, in the order params lists them; {variant: note} for the
    QAT variants where tfmot could not train some layers (see quantize_apply_skipping), such a variant being left out
    if the interpreter cannot run it; and the variants reused from cache_dir instead of built. `model` takes the
    examples of `train` (an image model its pixels; a table's vector model its feature vectors); `loss` is what the
    fine-tunes minimize (default: a classifier's cross-entropy); `val` (Examples, or None) picks each fine-tune's best
    epoch (components/export/fine_tune.py).

    The cache is keyed on the model's architecture and weights, the train examples, the params and the code
    (export_cache.variant_key). Each fine-tune is seeded on its own, so a variant is the same whether or
    not the ones before it came from the cache.
    """
    representative = train.sample(params.representative_samples, params.seed)
    key_parts = {
        "params": params,
        "model": export_cache.model_digest(model),
        # the fine-tunes read the validation split too: it is in the key of every variant that reads data
        "train_digest": train.digest() + (f"+val:{val.digest()}" if val is not None else ""),
        "code": lineage.code_digest("components.export.variants"),
        "libraries": export_cache.library_versions(),
    }
    fine_tune = {
        "epochs": params.qat_epochs,
        "learning_rate": params.qat_learning_rate,
        "seed": params.seed,
        "loss": loss,
        "val": val,
    }
    pruned = []  # the pruned model, built at most once, only if a variant that needs it is not in the cache

    def pruned_model() -> keras.Model:
        if not pruned:
            keras.utils.set_random_seed(params.seed)
            pruned.append(
                prune_classifier(
                    model,
                    classifier_name,
                    train,
                    target_sparsity=params.prune_target_sparsity,
                    epochs=params.prune_epochs,
                    end_fraction=params.prune_end_fraction,
                    learning_rate=params.prune_learning_rate,
                    min_weights=params.prune_min_weights,
                    seed=params.seed,
                    log_dir=log_dir,
                    loss=loss,
                    val=val,
                )
            )
        return pruned[0]

    def build(name: str) -> CachedVariant:
        """The variant from its entry in tfpipe/variants.py: its base model, the QAT fine-tune if it has one, the
        conversion."""
        variant = VARIANTS[name]
        base = pruned_model() if variant.base == "pruned" else model
        if not variant.quantization_aware:
            return CachedVariant(convert_to_tflite(base, variant.quantization, representative))
        if base.inputs[0].dtype.is_integer:  # token ids: tfmot fake-quantizes a model's input, an id is no float
            return CachedVariant(
                None,
                f"tfmot's quantization-aware training quantizes the model's input, and this model takes integer "
                f"token ids, so {name} is not exported; int8 (post-training, the ids kept int32) is its full-integer "
                "variant",
            )
        keras.utils.set_random_seed(params.seed)
        qat, float_layers = quantization_aware_classifier(
            base, train, classifier_name, preserve_sparsity=variant.base == "pruned", **fine_tune
        )
        content = convert_to_tflite(qat, variant.quantization, representative)
        if not float_layers:
            return CachedVariant(content)
        note = (
            f"tfmot has no quantization-aware training for {len(float_layers)} layer(s): {', '.join(float_layers)}; "
            "they stayed float in the fine-tune and the converter quantized them post-training"
        )
        problem = tflite.run_problem(content, representative[:1].astype(train.dtype))
        if problem:
            return CachedVariant(
                None,
                note + f". The converted model does not run in ai_edge_litert ({problem}), so {name} is not "
                "exported; int8 (post-training) is this model's full-integer variant",
            )
        return CachedVariant(content, note)

    converted, notes, reused = {}, {}, []
    for variant in params.variants:
        entry_dir = cache_dir / export_cache.variant_key(variant, **key_parts)
        entry = export_cache.read_entry(entry_dir)
        if entry is None:
            entry = build(variant)
            export_cache.write_entry(entry_dir, entry, {"variant": variant, "model": key_parts["model"]})
        else:
            reused.append(variant)
        if entry.note:
            notes[variant] = entry.note
        if entry.content is None:
            print(f"{variant}: {entry.note}")
        else:
            converted[variant] = entry.content
    export_cache.prune_entries(cache_dir)
    return converted, notes, reused
