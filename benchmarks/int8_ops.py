"""Where int8 time goes on this CPU: single convolutions and the trained model cut after each layer, int8 vs float32.

    # after `make repro` (reads artifacts/train):
    .venv/bin/python -m benchmarks.int8_ops [--json benchmarks/int8_ops.json] [--quick]

(--quick: two convolutions and the model's first two cuts, one round of a few calls: a check that it runs, in
seconds, not figures.)

XNNPACK, TFLite's default CPU delegate, picks its int8 kernels by CPU: on a CPU with AMX-INT8 every int8
convolution runs on a 16-pixel x 64-channel tile kernel whose cost follows pixels x kernel taps and not the
channel count, so a convolution with few channels (LeNet-5's first: 1 -> 6) is several times slower in int8
than in float32. This prints, for the CPU it runs on (model and flags named): invoke time of single
convolutions whose shapes vary one factor at a time, and of the trained model cut after each of its layers,
both converted with the export stage's recipe and timed in interleaved rounds (1 thread, batch 1, median).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tf_keras as keras  # noqa: E402

from components.export import cpu
from components.export.variants import convert_to_tflite  # noqa: E402
from models.loading import load_trained_model  # noqa: E402
from tfpipe import paths, records, tflite  # noqa: E402

# (height, input channels, output channels, kernel): one factor varied at a time from LeNet-5's first convolution.
# fmt: off
CONVOLUTIONS = [
    (28, 1, 6, 5), (28, 16, 6, 5), (28, 64, 6, 5), (28, 68, 6, 5),  # input channels
    (28, 1, 64, 5), (28, 1, 65, 5),  # output channels
    (14, 1, 6, 5), (56, 1, 6, 5),  # size
    (28, 1, 6, 3),  # kernel
    (14, 6, 16, 5), (7, 16, 32, 3), (7, 32, 16, 3),  # LeNet-5's second convolution, lenet5_s2d's two
]
# fmt: on
ROUNDS, CALLS = 7, 200


def time_models(models: dict[str, bytes], rounds: int = ROUNDS, calls: int = CALLS) -> dict[str, float]:
    """Median over interleaved rounds of the mean invoke time (µs) of each model, batch 1, one thread."""
    runners = {name: tflite.TFLiteClassifier(content, num_threads=1) for name, content in models.items()}
    inputs = {name: np.zeros((1, *runner.image_shape), runner.input["dtype"]) for name, runner in runners.items()}
    timings = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            timings[name].append(
                float(np.mean(tflite.time_calls(lambda r=runner, x=inputs[name]: r.invoke(x), calls, warmup=5))) * 1000
            )
    return {name: float(np.median(values)) for name, values in timings.items()}


def single_convolutions(shapes=CONVOLUTIONS, rounds: int = ROUNDS, calls: int = CALLS) -> list[dict]:
    rng = np.random.default_rng(0)
    models = {}
    for height, channels_in, channels_out, kernel in shapes:
        inputs = keras.Input((height, height, channels_in))
        model = keras.Model(inputs, keras.layers.Conv2D(channels_out, kernel, padding="same")(inputs))
        representative = rng.uniform(0, 255, (32, height, height, channels_in)).astype(np.float32)
        for kind in ("float32", "int8"):
            models[(height, channels_in, channels_out, kernel, kind)] = convert_to_tflite(model, kind, representative)
    timed = time_models(models, rounds, calls)
    return [
        {
            "height": h,
            "in": ci,
            "out": co,
            "kernel": k,
            "float32_us": timed[(h, ci, co, k, "float32")],
            "int8_us": timed[(h, ci, co, k, "int8")],
        }
        for h, ci, co, k in shapes
    ]


def model_cuts(limit: int | None = None, rounds: int = ROUNDS, calls: int = CALLS) -> list[dict]:
    """The trained model (preprocessing + classifier) cut after each classifier layer that computes something."""
    model = load_trained_model(paths.TRAIN)
    classifier = next(
        layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "preprocessing"
    )
    images, _ = records.load_split_arrays(paths.PREPARED, "train")
    representative = images[:64].astype(np.float32)
    cuts, models = [], {}
    for layer in classifier.layers[1:]:
        if isinstance(layer, (keras.layers.Dropout, keras.layers.Flatten)) or len(cuts) == limit:
            continue
        part = keras.Model(classifier.input, layer.output)
        inputs = keras.Input(model.input_shape[1:])
        cut = keras.Model(inputs, part(model.get_layer("preprocessing")(inputs)))
        for kind in ("float32", "int8"):
            models[(layer.name, kind)] = convert_to_tflite(cut, kind, representative)
        cuts.append(f"{layer.name} ({type(layer).__name__})")
    timed = time_models(models, rounds, calls)
    return [
        {
            "after": name,
            "float32_us": timed[(name.split(" (")[0], "float32")],
            "int8_us": timed[(name.split(" (")[0], "int8")],
        }
        for name in cuts
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="a check that it runs (seconds), not figures")
    args = parser.parse_args(argv)
    timing = {"rounds": 1, "calls": 10} if args.quick else {}
    description = cpu.describe_cpu()
    print(cpu.format_cpu(description))
    convolutions = single_convolutions(CONVOLUTIONS[:2] if args.quick else CONVOLUTIONS, **timing)
    print("\nsingle Conv2D (padding same), invoke µs, batch 1:\n  H x W   in  out  k   float32    int8   int8/float32")
    for row in convolutions:
        print(
            f"  {row['height']:>2}x{row['height']:<3} {row['in']:>3} {row['out']:>4} {row['kernel']:>2} "
            f"{row['float32_us']:9.1f} {row['int8_us']:7.1f}   {row['int8_us'] / row['float32_us']:.2f}"
        )
    cuts = model_cuts(2 if args.quick else None, **timing)
    print(f"\n{paths.TRAIN / 'model.keras'} cut after each layer (cumulative), invoke µs, batch 1:")
    for row in cuts:
        print(
            f"  {row['after']:<40} float32 {row['float32_us']:7.1f}   int8 {row['int8_us']:7.1f}   int8/float32 "
            f"{row['int8_us'] / row['float32_us']:.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": description, "convolutions": convolutions, "cuts": cuts}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
