"""Chooses precision, XLA and the tf.distribute strategy from params and the devices present."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras


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
    jit = bool(gpus) if jit_compile == "auto" else jit_compile == "on"
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
            raise ValueError("train.distribute=multi_worker needs the TF_CONFIG environment variable (cluster and task)")
        json.loads(os.environ["TF_CONFIG"])  # a malformed TF_CONFIG fails here with the JSON error
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def apply_precision(plan: HardwarePlan) -> None:
    """Sets the global Keras dtype policy; layers built afterwards compute in it (variables stay float32)."""
    keras.mixed_precision.set_global_policy(plan.precision_policy)
