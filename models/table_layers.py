"""The layers a table's model holds beyond Keras' own: date parts from ISO text, missing-value indicators and filling,
a slice of the feature vector (each categorical's one-hot block, for its embedding), and the regression head that
returns the target in its own units; plus the regression loss on the standardized target. Registered for Keras, so
a saved model loads in safe mode (models/loading.py imports this module). Reads and writes nothing.

tfpipe/table_encoding.py computes the same features in numpy for the TFLite model, which takes the feature vector:
the two are tested against each other.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tfpipe.date_parts import DATE_PARTS, ISO_PATTERN, days_from_civil, part_values


@keras.utils.register_keras_serializable(package="tfpipe")
class DateParts(keras.layers.Layer):
    """ISO date text [N, 1] -> float32 [N, len(parts)]; an empty or unparseable cell gives NaN in every part (the
    missing-value indicator and filling that follow handle it as for a number)."""

    def __init__(self, parts: list[str], **kwargs):
        super().__init__(**kwargs)
        unknown = [part for part in parts if part not in DATE_PARTS]
        if unknown:
            raise ValueError(f"unknown date parts {unknown}; known: {DATE_PARTS}")
        self.parts = list(parts)

    def call(self, inputs):
        text = tf.strings.strip(tf.reshape(inputs, [-1]))
        valid = tf.strings.regex_full_match(text, ISO_PATTERN)
        safe = tf.where(valid, text, tf.fill(tf.shape(text), "1970-01-01"))
        # A date alone gets midnight: every field below then lies inside the text.
        padded = tf.strings.join([safe, "T00:00:00"])

        def field(start, length):
            return tf.strings.to_number(tf.strings.substr(padded, start, length), out_type=tf.int64)

        year, month, day, hour = field(0, 4), field(5, 2), field(8, 2), field(11, 2)
        weekday = (days_from_civil(year, month, day) + 4) % 7  # 1970-01-01 was a Thursday: 0 is Sunday
        as_float = [tf.cast(value, tf.float32) for value in (year, month, day, weekday, hour)]
        columns = [part_values(part, *as_float, tf.sin, tf.cos) for part in self.parts]
        values = tf.stack(columns, axis=1)
        nan = tf.fill(tf.shape(values), float("nan"))
        return tf.where(valid[:, None], values, nan)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], len(self.parts)])

    def get_config(self):
        return {**super().get_config(), "parts": self.parts}


@keras.utils.register_keras_serializable(package="tfpipe")
class IsMissing(keras.layers.Layer):
    """1.0 where the chosen columns of a float matrix are NaN, else 0.0: the missing-value indicators."""

    def __init__(self, columns: list[int], **kwargs):
        super().__init__(**kwargs)
        self.columns = [int(column) for column in columns]

    def call(self, inputs):
        return tf.cast(tf.math.is_nan(tf.gather(inputs, self.columns, axis=1)), tf.float32)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], len(self.columns)])

    def get_config(self):
        return {**super().get_config(), "columns": self.columns}


@keras.utils.register_keras_serializable(package="tfpipe")
class FillMissing(keras.layers.Layer):
    """NaN -> `value` (after normalization, 0: the train split's mean)."""

    def __init__(self, value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, inputs):
        return tf.where(tf.math.is_nan(inputs), tf.constant(self.value, inputs.dtype), inputs)

    def get_config(self):
        return {**super().get_config(), "value": self.value}


@keras.utils.register_keras_serializable(package="tfpipe")
class FeatureSlice(keras.layers.Layer):
    """Columns [start, start + size) of the feature vector (TFLite: STRIDED_SLICE, which runs in int8)."""

    def __init__(self, start: int, size: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.size = int(start), int(size)

    def call(self, inputs):
        return inputs[:, self.start : self.start + self.size]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.size])

    def get_config(self):
        return {**super().get_config(), "start": self.start, "size": self.size}


@keras.utils.register_keras_serializable(package="tfpipe")
class TargetTransform(keras.layers.Layer):
    """The regression head: the network's standardized output z -> the target in its units, z * std + mean, then
    exp() when the target was learned as its log. float32 whatever the compute policy."""

    def __init__(self, mean: float, std: float, log: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean, self.std, self.log = float(mean), float(std), bool(log)

    def call(self, inputs):
        values = tf.cast(inputs, tf.float32) * self.std + self.mean
        return tf.exp(tf.minimum(values, 80.0)) if self.log else values

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "log": self.log}


def head_standardization(target_statistics: dict, transform: str) -> tuple[float, float, bool]:
    """(mean, std, log) of a regression target as the network learns it: of its log (train.target_transform: log)
    or of its values (tfpipe/table_encoding.target_statistics holds both)."""
    if transform == "log":
        return target_statistics["log_mean"], target_statistics["log_std"], True
    return target_statistics["mean"], target_statistics["std"], False


def standardized(values, mean: float, std: float, log: bool):
    """The target as the network learns it: (log(y) or y - mean) / std."""
    values = tf.cast(values, tf.float32)
    if log:
        values = tf.math.log(tf.maximum(values, 1e-12))
    return (values - mean) / std


def regression_loss(name: str, mean: float, std: float, log: bool):
    """mse | huber | mae on the standardized target (targets and predictions are in the target's units), so one
    learning rate suits a target in grams and one in millions; Huber's delta is one standard deviation."""
    losses = {
        "mse": keras.losses.MeanSquaredError(),
        "huber": keras.losses.Huber(delta=1.0),
        "mae": keras.losses.MeanAbsoluteError(),
    }
    if name not in losses:
        raise ValueError(f"unknown regression loss {name!r}; expected mse, huber or mae")
    inner = losses[name]

    def loss(targets, predictions):
        targets = tf.reshape(targets, [-1, 1])
        return inner(standardized(targets, mean, std, log), standardized(predictions, mean, std, log))

    loss.__name__ = f"standardized_{name}"
    return loss
