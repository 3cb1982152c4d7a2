"""Chooses precision, XLA and the tf.distribute strategy from params and the devices present."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

import tensorflow as tf
import tf_keras as keras

from tfpipe.config import PARAMS_FILE, ParamsError


@dataclass(frozen=True)
class HardwarePlan:
    precision_policy: str  # float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool
    strategy_name: str  # default | mirrored | multi_worker
    device: str  # what the run is tagged with, e.g. "CPU" or "GPU: NVIDIA H100 (compute 9.0) x1"


def _gpu_capability(gpus) -> tuple[int, int]:
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return tuple(details.get("compute_capability", (0, 0)))


def plan_hardware(mixed_precision: str, jit_compile: str, distribute: str) -> HardwarePlan:
    """Resolves the "auto" settings: mixed precision needs tensor cores (compute capability >= 7.0)."""
    gpus = tf.config.list_physical_devices("GPU")
    capability = _gpu_capability(gpus)
    if mixed_precision == "auto":
        policy = "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16" if capability >= (7, 0) else "float32"
    else:
        policy = "float32" if mixed_precision == "off" else mixed_precision
    jit = (
        bool(gpus) if jit_compile == "auto" else jit_compile == "on"
    )  # then settle_jit_compile, once the model is built
    if distribute == "auto":
        strategy = "multi_worker" if "TF_CONFIG" in os.environ else "mirrored" if len(gpus) > 1 else "default"
    else:
        strategy = "default" if distribute == "none" else distribute
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        device = f"GPU: {name} (compute {capability[0]}.{capability[1]}) x{len(gpus)}"
    else:
        device = "CPU"
    return HardwarePlan(policy, jit, strategy, device)


def build_strategy(plan: HardwarePlan) -> tf.distribute.Strategy:
    if plan.strategy_name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        # With no GPU, mirror over the logical CPU devices (tests configure two of them).
        devices = [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if plan.strategy_name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "train.distribute=multi_worker needs the TF_CONFIG environment variable (cluster and task)"
            )
        json.loads(os.environ["TF_CONFIG"])  # a malformed TF_CONFIG fails here with the JSON error
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def apply_precision(plan: HardwarePlan) -> None:
    """Sets the global Keras dtype policy; layers built afterwards compute in it (variables stay float32)."""
    keras.mixed_precision.set_global_policy(plan.precision_policy)


def layers_without_deterministic_xla(model: keras.Model) -> list[str]:
    """The max-pooling layers, nested models included: TensorFlow's XLA has no deterministic max-pooling
    gradient, so with op determinism on an XLA-compiled train step fails on them (on a CPU too)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [f"{layer.name}/{name}" for name in layers_without_deterministic_xla(layer)]
        elif isinstance(layer, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)):
            found.append(layer.name)
    return found


def settle_jit_compile(plan: HardwarePlan, model: keras.Model, jit_compile: str, deterministic: bool) -> HardwarePlan:
    """The plan, unless XLA and determinism exclude each other (deterministic true, a model with max pooling):
    then jit_compile `auto` gives up XLA and `on` is an error saying what to change."""
    blocking = layers_without_deterministic_xla(model) if plan.jit_compile and deterministic else []
    if not blocking:
        return plan
    if jit_compile == "on":
        raise ParamsError(
            f"{PARAMS_FILE}: train.jit_compile is on and train.deterministic is true, but XLA has no deterministic "
            f"gradient for max pooling ({', '.join(blocking)}): set train.deterministic: false to train with XLA "
            "(seeded, not bit-reproducible), or train.jit_compile: auto or off"
        )
    print(
        "jit_compile auto: no XLA, because train.deterministic is true and XLA has no deterministic gradient "
        "for max pooling "
        f"({', '.join(blocking)}); train.deterministic: false trains with XLA"
    )
    return replace(plan, jit_compile=False)
