"""The train stage's schedule: phases (a pretrained backbone's head, then its fine-tune), learning rate, optimizer,
loss.

Pure functions of TrainParams; components/train/stage.py compiles and fits with them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from models import applications, registry
from tfpipe.config import PARAMS_FILE, ParamsError, TrainParams


@dataclass(frozen=True)
class Phase:
    """A fit() over epochs [initial_epoch, end_epoch) at its own rate, with some backbone layers frozen."""

    name: str
    initial_epoch: int
    end_epoch: int
    learning_rate: float
    warmup_epochs: int
    trainable_top_layers: int | None  # backbone layers that train; None: every layer (and any model without a backbone)


# What every builder takes (the kinds' build_model passes them; a table's layout comes from its statistics);
# train.model_options holds the rest.
COMMON_ARGUMENTS = ("input_shape", "num_classes", "dropout_rate", "weight_decay", "batch_norm", "layout")


@dataclass(frozen=True)
class Objective:
    """What a model trains on and is chosen by: its loss and metrics, and the validation metric that the search and
    the stage's headline read (`monitor`, better when higher or lower)."""

    loss: object
    metrics: tuple
    monitor: str = "val_accuracy"
    higher_is_better: bool = True


def classification_objective(params: TrainParams) -> Objective:
    """Sparse labels, softmax probabilities: cross-entropy (with train.label_smoothing) and accuracy."""
    return Objective(build_loss(params.label_smoothing), (keras.metrics.SparseCategoricalAccuracy(name="accuracy"),))


def model_options(model: str) -> dict[str, inspect.Parameter]:
    """The options a registered model's builder takes beyond the common arguments (resnet_small: width, depth)."""
    from models import applications

    if applications.is_backbone(model):
        return {}  # train.backbone configures them
    signature = inspect.signature(registry.get_builder(model))
    return {name: value for name, value in signature.parameters.items() if name not in COMMON_ARGUMENTS}


def options_for(model: str, options: dict) -> dict:
    """The train.model_options this model takes (with train.model: auto, each candidate takes its own)."""
    accepted = model_options(model)
    return {name: value for name, value in options.items() if name in accepted}


def check_candidates(params: TrainParams, candidates: list[str], kind: str) -> None:
    """Every candidate model is one of the kind's (registry.check_kind), and every train.model_options entry one a
    candidate takes."""
    for name in candidates:
        try:
            registry.check_kind(name, kind)
        except ValueError as error:
            raise ParamsError(f"{PARAMS_FILE}: train.model: {error}") from None
    check_model_options(candidates, params.model_options)


def check_model_options(models: list[str], options: dict) -> None:
    """Each option must be one a candidate model takes, of its default's type (an int for width, not 16.0)."""
    for name, value in options.items():
        takers = {model: model_options(model)[name] for model in models if name in model_options(model)}
        if not takers:
            known = {model: sorted(model_options(model)) for model in models}
            raise ParamsError(
                f"{PARAMS_FILE}: train.model_options.{name}: not an option of {' or '.join(models)} "
                f"(their options: {known})"
            )
        for model, parameter in takers.items():
            default = parameter.default
            if default is not inspect.Parameter.empty and default is not None and type(value) is not type(default):
                raise ParamsError(
                    f"{PARAMS_FILE}: train.model_options.{name}: {value!r} is {type(value).__name__}, {model} expects "
                    f"{type(default).__name__} (its default is {default!r})"
                )


def check_model_params(params: TrainParams) -> None:
    """The params that need the model registry (checked here, not in tfpipe/config.py, so that
    the other stages do not import model code): a known model, its options, a backbone schedule that fits."""
    try:
        registry.get_builder(params.model)
    except ValueError as error:
        raise ParamsError(f"{PARAMS_FILE}: train.model: {error}") from None
    if (
        applications.is_backbone(params.model)
        and params.backbone.weights != "none"
        and params.backbone.head_epochs > params.epochs
    ):
        raise ParamsError(
            f"{PARAMS_FILE}: train.backbone.head_epochs ({params.backbone.head_epochs}) is above train.epochs "
            f"({params.epochs}): epochs counts both phases"
        )


def plan_phases(params: TrainParams) -> list[Phase]:
    """One phase; for a pretrained backbone, the head on the frozen backbone, then a fine-tune of its top layers.

    A backbone with weights: none trains every layer from the first epoch: freezing random weights
    would teach the head nothing.
    """
    if not applications.is_backbone(params.model) or params.backbone.weights == "none":
        return [Phase("train", 0, params.epochs, params.learning_rate, params.warmup_epochs, None)]
    head, phases = params.backbone.head_epochs, []
    if head:
        phases.append(Phase("head", 0, head, params.learning_rate, params.warmup_epochs, 0))
    if params.epochs > head:
        phases.append(
            Phase(
                "fine_tune",
                head,
                params.epochs,
                params.backbone.fine_tune_learning_rate,
                0,
                params.backbone.fine_tune_layers,
            )
        )
    return phases


def build_learning_rate(params: TrainParams, steps_per_epoch: int, phase: Phase | None = None):
    """A constant rate, or a cosine/exponential decay over the run (or phase) with an optional linear warmup."""
    phase = phase or plan_phases(params)[0]
    learning_rate = phase.learning_rate
    total_steps = max(1, (phase.end_epoch - phase.initial_epoch) * steps_per_epoch)
    warmup_steps = phase.warmup_epochs * steps_per_epoch
    if params.lr_schedule == "cosine":
        # CosineDecay ramps from initial_learning_rate up to warmup_target during warmup_steps.
        start = learning_rate / 10 if warmup_steps else learning_rate
        return keras.optimizers.schedules.CosineDecay(
            start,
            max(1, total_steps - warmup_steps),
            alpha=0.01,
            warmup_target=learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if params.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=steps_per_epoch, decay_rate=0.9)
    return learning_rate


def build_optimizer(
    params: TrainParams, steps_per_epoch: int = 1, phase: Phase | None = None
) -> keras.optimizers.Optimizer:
    rate = build_learning_rate(params, steps_per_epoch, phase)
    options = {"learning_rate": rate, "clipnorm": params.clipnorm}
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=params.momentum, nesterov=params.nesterov, **options)
    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=params.momentum, **options)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=params.weight_decay or 1e-4, **options)
    return keras.optimizers.Adam(**options)


def build_loss(label_smoothing: float):
    """Sparse labels everywhere; Keras 2's sparse loss has no label smoothing, so one-hot it inside."""
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy()

    def smoothed_crossentropy(labels, probabilities):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(probabilities)[-1])
        return keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=label_smoothing)

    return smoothed_crossentropy


def compile_model(
    model,
    params: TrainParams,
    steps_per_epoch: int,
    jit_compile: bool,
    phase: Phase | None = None,
    objective: Objective | None = None,
) -> None:
    """Compiles with the phase's optimizer and the objective's loss and metrics (default: a classifier's)."""
    objective = objective or classification_objective(params)
    model.compile(
        optimizer=build_optimizer(params, steps_per_epoch, phase),
        loss=objective.loss,
        metrics=[metric.__class__.from_config(metric.get_config()) for metric in objective.metrics],
        jit_compile=jit_compile,
        steps_per_execution=params.steps_per_execution,
    )


def describe_phases(phases: list[Phase]) -> str:
    """'head: epochs 1-3, lr 0.002, backbone frozen; fine_tune: epochs 4-10, lr 1e-05, top 20 backbone layers'"""

    def layers(phase: Phase) -> str:
        if phase.trainable_top_layers is None:
            return "every layer"
        return (
            "backbone frozen"
            if phase.trainable_top_layers == 0
            else f"top {phase.trainable_top_layers} backbone layers (batch norm frozen)"
        )

    return "; ".join(
        f"{phase.name}: epochs {phase.initial_epoch + 1}-{phase.end_epoch}, lr {phase.learning_rate:g}, {layers(phase)}"
        for phase in phases
    )


# "auto" settings: dataset-aware defaults that suit 200 images as well as 60,000. mnist_5k's 4,000
# train images resolve to batch 64, 40 epochs, patience 6 (chosen on its validation split, benchmarks/RESULTS.md).
TARGET_STEPS = 2500  # optimizer steps an auto schedule aims at
EPOCH_RANGE = (20, 300)
BATCH_RANGE = (16, 128)


def resolve_train_schedule(params: TrainParams, train_count: int) -> TrainParams:
    """TrainParams with batch_size, epochs and early_stopping_patience resolved for a train split of train_count
    images."""
    batch_size = params.batch_size
    if batch_size == "auto":
        batch_size = int(
            min(max(2 ** round(math.log2(math.sqrt(max(1, train_count)))), BATCH_RANGE[0]), BATCH_RANGE[1])
        )
    epochs = params.epochs
    if epochs == "auto":
        steps_per_epoch = max(1, math.ceil(train_count / batch_size))
        epochs = int(min(max(round(TARGET_STEPS / steps_per_epoch), EPOCH_RANGE[0]), EPOCH_RANGE[1]))
    patience = params.early_stopping_patience
    if patience == "auto":
        patience = max(6, round(0.15 * epochs))
    return dataclasses.replace(params, batch_size=batch_size, epochs=epochs, early_stopping_patience=patience)
