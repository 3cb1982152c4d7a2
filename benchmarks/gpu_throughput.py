"""GPU training throughput of ResNet18 on 32x32x3 images: float32 vs mixed precision vs mixed + XLA.

Prints images/s for each mode on synthetic data and on real shipped data (mnist_5k digits resized to
32x32x3), with the device name and the share of the GPU's peak arithmetic rate reached. Without a GPU
it stops with an error, so that CPU figures are never taken for GPU ones; --allow-cpu runs it on
a CPU anyway, slowly, for checking the script. Figures worth recording come from a GPU machine:
    make install-gpu && python benchmarks/gpu_throughput.py --json benchmarks/gpu_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from models import registry  # noqa: E402

# Dense peak rates in TFLOP/s (vendor data sheets, SXM parts): (float32 non-tensor, 16-bit tensor core).
PEAK_TFLOPS = {
    "H100": (67.0, 989.0),
    "H200": (67.0, 989.0),
    "A100": (19.5, 312.0),
    "L4": (30.3, 121.0),
    "T4": (8.1, 65.0),
    "V100": (15.7, 125.0),
}


def training_flops_per_image(model: keras.Model) -> float:
    """Forward multiply-adds of conv and dense layers x 2 FLOPs, x 3 for forward + backward."""
    flops = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            _, height, width, _ = layer.output_shape
            flops += 2.0 * height * width * channels_out * kernel_h * kernel_w * channels_in
        elif isinstance(layer, keras.layers.Dense):
            flops += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3.0 * flops


def real_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    from pipelines.sources import load_mnist_5k

    images, labels = load_mnist_5k()
    images = tf.image.resize(images[:count, :, :, None].astype(np.float32), (32, 32))
    return tf.repeat(images, 3, axis=-1).numpy(), labels[:count]


def measure(
    mode: str, images: np.ndarray, labels: np.ndarray, batch_size: int, steps: int, repeats: int
) -> tuple[float, float]:
    gpus = tf.config.list_physical_devices("GPU")
    capability = (
        tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))) if gpus else (0, 0)
    )
    policy = (
        "float32" if mode == "float32" else ("mixed_bfloat16" if capability >= (8, 0) or not gpus else "mixed_float16")
    )
    keras.mixed_precision.set_global_policy(policy)
    classifier = registry.get_builder("resnet18")(input_shape=(32, 32, 3), num_classes=10)
    outputs = keras.layers.Activation("softmax", dtype="float32")(classifier.output)
    model = keras.Model(classifier.input, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile=mode == "mixed+xla",
    )
    data = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(
        data, steps_per_epoch=max(5, steps // 4), epochs=1, verbose=0
    )  # warm-up: tracing, XLA compilation, autotune
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    keras.mixed_precision.set_global_policy("float32")
    return statistics.median(rates), training_flops_per_image(classifier)


def no_gpu_message() -> str:
    """Why there is no GPU is rarely the hardware: TensorFlow's pip wheel finds CUDA only in the nvidia-* wheels."""
    return (
        f"TensorFlow sees no GPU. TensorFlow {tf.__version__} (built with CUDA: {tf.test.is_built_with_cuda()}); "
        f"tf.config.list_physical_devices() returned {tf.config.list_physical_devices()}.\n"
        "Install TensorFlow's CUDA libraries, the nvidia-* wheels of tensorflow[and-cuda] pinned in "
        "requirements-gpu.txt: "
        "`make install-gpu` (or `pip install -r requirements-gpu.txt`), and check that `nvidia-smi` lists the GPU "
        "and that CUDA_VISIBLE_DEVICES does not hide it.\n"
        "To run this benchmark on the CPU anyway (to check the script; its figures mean nothing), pass --allow-cpu."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (slowly, to check the script)")
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        sys.exit(no_gpu_message())
    device = (
        tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU (no GPU found)"
    )
    peak = next((value for key, value in PEAK_TFLOPS.items() if key in device), None)
    synthetic = (
        np.random.default_rng(0).uniform(0, 255, (4096, 32, 32, 3)).astype(np.float32),
        np.random.default_rng(1).integers(0, 10, 4096),
    )
    datasets = {"synthetic": synthetic, "mnist_5k (32x32x3)": real_images(4096)}
    rows = []
    for data_name, (images, labels) in datasets.items():
        for mode in ("float32", "mixed", "mixed+xla"):
            rate, flops = measure(mode, images, labels, args.batch_size, args.steps, args.repeats)
            share = None if peak is None else rate * flops / 1e12 / (peak[0] if mode == "float32" else peak[1])
            rows.append({"data": data_name, "mode": mode, "images_per_s": round(rate, 1), "peak_share": share})
            print(
                f"{device:28s} {data_name:20s} {mode:10s} {rate:10.1f} images/s"
                + ("" if share is None else f"  {100 * share:5.1f}% of peak"),
                flush=True,
            )
    for data_name in datasets:
        by_mode = {row["mode"]: row["images_per_s"] for row in rows if row["data"] == data_name}
        print(f"{data_name}: mixed+XLA / float32 = {by_mode['mixed+xla'] / by_mode['float32']:.2f}x (goal >= 2x)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": device, "tensorflow": tf.__version__, "batch_size": args.batch_size, "rows": rows}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
