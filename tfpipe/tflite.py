"""TFLite models through ai_edge_litert: load (verified), classify uint8 images, time, count zero weights.

Shared by the export stage (which measures every variant the same way) and the predict command.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

LABELS_FILE = "labels.txt"  # written beside the .tflite files: one class name a line, in class-id order
DECODING_FILE = "decoding.json"  # beside them too: how an image file becomes the input (tfpipe/images.py)
# TFLite ops whose input 1 is a weight tensor: the conv/dense kernels that sparsity is counted over.
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


class InvalidModelError(ValueError):
    """The file is not a TFLite model this code can run."""


def load_interpreter(
    model: bytes | Path | str, num_threads: int = 1, op_resolver_type: OpResolverType = OpResolverType.AUTO
) -> Interpreter:
    """An allocated interpreter; a truncated or foreign file is an InvalidModelError, not a crash.

    The interpreter runs the FlatBuffers verifier on the buffer before using it (it raises
    ValueError "not a valid Flatbuffer buffer"), so a malformed file cannot abort the process.
    op_resolver_type AUTO applies the default XNNPACK delegate; BUILTIN_WITHOUT_DEFAULT_DELEGATES runs
    TFLite's own kernels (the export stage times both when a quantized variant is slower than float32).
    """
    content = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    where = f"{model}" if isinstance(model, (str, Path)) else "the model"
    if len(content) < 8 or content[4:8] != b"TFL3":  # the TFLite schema's file identifier
        raise InvalidModelError(f"{where}: not a TFLite model (no TFL3 file identifier)")
    try:
        interpreter = Interpreter(
            model_content=content, num_threads=num_threads, experimental_op_resolver_type=op_resolver_type
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise InvalidModelError(
            f"{where}: cannot be loaded as a TFLite model (truncated or corrupt?): {error}"
        ) from None
    return interpreter


class TFLiteClassifier:
    """uint8 images [N,H,W,C] (or a table's float32 feature vectors [N,D]) -> float outputs [N,K] (probabilities, or
    a regression's value); int8/uint8 models get (de)quantized I/O."""

    def __init__(
        self, model: bytes | Path | str, num_threads: int = 1, op_resolver_type: OpResolverType = OpResolverType.AUTO
    ):
        self.interpreter = load_interpreter(model, num_threads, op_resolver_type)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_shape = tuple(int(size) for size in self.input["shape"][1:])
        self._batch_size = int(self.input["shape"][0])
        signature = self.input.get("shape_signature")
        # A model converted for a fixed batch (a recurrent one: components/export/variants.py) runs batch by batch
        self.fixed_batch = int(signature[0]) if signature is not None and len(signature) and signature[0] > 0 else 0

    def _resize(self, batch_size: int) -> None:
        if batch_size != self._batch_size:
            self.interpreter.resize_tensor_input(self.input["index"], [batch_size, *self.image_shape])
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch_size = batch_size

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels in the model's input type (what the quantization parameters map 0..255 to)."""
        dtype = self.input["dtype"]
        if dtype not in (np.int8, np.uint8):
            return images.astype(dtype)
        if images.dtype == np.uint8:
            # A 256-entry table: per-call float round/clip would cost more than invoking the model.
            return self._pixel_table()[images]
        scale, zero_point = self.input["quantization"]
        limits = np.iinfo(dtype)
        return np.clip(np.round(images.astype(np.float32) / scale + zero_point), limits.min, limits.max).astype(dtype)

    def _pixel_table(self) -> np.ndarray:
        if getattr(self, "_table", None) is None:
            scale, zero_point = self.input["quantization"]
            limits = np.iinfo(self.input["dtype"])
            pixels = np.arange(256, dtype=np.float32)
            self._table = np.clip(np.round(pixels / scale + zero_point), limits.min, limits.max).astype(
                self.input["dtype"]
            )
        return self._table

    def dequantize_output(self, output: np.ndarray) -> np.ndarray:
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero_point = self.output["quantization"]
            return (output.astype(np.float32) - zero_point) * scale
        return output.astype(np.float32)

    def invoke(self, model_input: np.ndarray) -> np.ndarray:
        """One call on an already-quantized batch; returns the raw output tensor (a model of a fixed batch: one call
        a batch of that size, the last one padded)."""
        if self.fixed_batch and len(model_input) != self.fixed_batch:
            size, outputs = self.fixed_batch, []
            for start in range(0, len(model_input), size):
                part = model_input[start : start + size]
                padded = (
                    np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)]) if len(part) < size else part
                )
                outputs.append(self.invoke(padded)[: len(part)])
            return (
                np.concatenate(outputs) if outputs else np.zeros((0, *self.output["shape"][1:]), self.output["dtype"])
            )
        self._resize(len(model_input))
        if self.fixed_batch:  # a converted LSTM keeps its state in variable tensors: each document starts from zeros
            self.interpreter.reset_all_variables()
        self.interpreter.set_tensor(self.input["index"], model_input)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"expected inputs of shape [N, {', '.join(map(str, self.image_shape))}], got {list(images.shape)}"
            )
        outputs = [
            self.dequantize_output(self.invoke(self.quantize_input(images[start : start + batch_size])))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.output["shape"][-1]), np.float32)


def run_problem(model: bytes, images: np.ndarray) -> str | None:
    """None if the model loads and classifies `images`; otherwise what went wrong, in one line.

    XNNPACK refuses some graphs only when it prepares them (a partially quantization-aware
    EfficientNet, for one), which a successful conversion does not reveal.
    """
    try:
        TFLiteClassifier(model).predict(images)
    except (InvalidModelError, RuntimeError, ValueError) as error:
        message = re.sub(
            r"(failed to create XNNPACK runtime)+", r"\1: ", str(error).splitlines()[0]
        )  # repeated once per attempt
        return message[-300:]
    return None


def time_calls(call, runs: int, warmup: int = 20) -> np.ndarray:
    """Milliseconds per call, after `warmup` untimed calls (allocation, caches, delegate set-up)."""
    for _ in range(warmup):
        call()
    timings = np.empty(runs)
    for index in range(runs):
        start = time.perf_counter()
        call()
        timings[index] = (time.perf_counter() - start) * 1000
    return timings


STORED_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32}


def weight_sparsity(model: bytes) -> float:
    """Fraction of exactly-zero values in the weight tensors (input 1) of conv and dense ops, read from the file.

    int8 weights are quantized symmetrically (zero point 0), float16 ones are stored as float16:
    a stored 0 is a pruned weight or one that rounded to zero, which is what gzip sees. Dynamic-range
    and float16 models keep their weights behind a DEQUANTIZE op, so the op's input is followed.
    """
    from tensorflow.lite.tools import flatbuffer_utils  # TensorFlow's public reader of the .tflite format

    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    zeros = total = 0
    for subgraph in parsed.subgraphs:
        names = [flatbuffer_utils.opcode_to_name(parsed, op.opcodeIndex) for op in subgraph.operators]
        dequantized_from = {
            op.outputs[0]: op.inputs[0]
            for op, name in zip(subgraph.operators, names, strict=True)
            if name == "DEQUANTIZE"
        }
        for op, name in zip(subgraph.operators, names, strict=True):
            if name not in WEIGHT_OPS:
                continue
            tensor = subgraph.tensors[dequantized_from.get(op.inputs[1], op.inputs[1])]
            data = parsed.buffers[tensor.buffer].data
            stored = STORED_TYPES.get(flatbuffer_utils.type_to_name(tensor.type))
            if data is None or stored is None:  # computed at run time, or a type without zero-is-zero meaning
                continue
            weights = np.frombuffer(bytes(data), stored)
            zeros += int(np.sum(weights == 0))
            total += weights.size
    return zeros / total if total else 0.0


def read_labels(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class names not found; export writes {LABELS_FILE} beside the .tflite files")
    return [line for line in path.read_text().splitlines() if line]
