"""The export stage's report: report.md (every variant side by side, the gate, the CPU and any variant slower than
float32 with the fastest interpreter setting found) and variants.png (accuracy against size and latency)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import pandas as pd

from components.export import cpu
from components.export.measure import REFERENCE, SLOWER_MARGIN
from components.export.shipping import NOT_FOR_SHIPPING
from components.export.shipping import describe as describe_not_for_shipping
from tfpipe import tracking

matplotlib.rcParams["text.parse_math"] = False  # file and class names are drawn as text, never as mathtext


def quality_metric(metrics: dict[str, dict]) -> str:
    """What the variants are compared on: a classifier's accuracy, a regression's MAE."""
    return "mae" if "mae" in metrics.get(REFERENCE, {}) else "accuracy"


def plot_variants(metrics: dict[str, dict]) -> plt.Figure:
    """Accuracy against gzipped size and against single-image latency, one labelled point a variant."""
    rows = {name: row for name, row in metrics.items() if row["gzip_bytes"] is not None}
    metric = quality_metric(metrics)
    figure, (by_size, by_latency) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for name, row in rows.items():
        label = name.removeprefix("tflite_")
        by_size.scatter(row["gzip_bytes"] / 1024, row[metric])
        by_size.annotate(
            label, (row["gzip_bytes"] / 1024, row[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
        by_latency.scatter(row["invoke_p50_ms"] * 1000, row[metric])
        by_latency.annotate(
            label, (row["invoke_p50_ms"] * 1000, row[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    by_size.set(xlabel="gzipped size (KiB)", ylabel=f"test {metric}", title=f"{metric} vs size")
    by_latency.set(xlabel="single-example invoke p50 (µs)", title=f"{metric} vs latency")
    for axes in (by_size, by_latency):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def describe_slower_variant(variant: str, facts: dict, num_threads: int) -> str:
    """One sentence: how much slower than float32 the variant is, and the fastest interpreter setting found for it
    (facts: one value of export_measure.slower_than_float32)."""
    how = ", ".join(
        text
        for kind, text in (
            ("invoke_p50", f"invoke p50 {facts['invoke_p50_ratio']:.2f}× float32's"),
            ("throughput", f"throughput {facts['throughput_ratio']:.2f}× float32's"),
        )
        if kind in facts["slower_in"]
    )
    text = (
        f"**{variant} is slower than float32 on this machine**: {how} "
        f"(default XNNPACK delegate, num_threads={num_threads})"
    )
    if "settings" not in facts:
        return text + "; it was not timed with other interpreter settings."
    figures, one, many = facts["settings"], facts["fastest_invoke_setting"], facts["fastest_throughput_setting"]
    best_one, best_many = figures[one]["invoke_p50_ms"], figures[many]["throughput_images_per_s"]
    if one == many:
        fastest = f"`{one}` ({best_one * 1000:.1f} µs, {best_many:,.0f} images/s)"
    else:
        fastest = (
            f"`{one}` for single images ({best_one * 1000:.1f} µs) and `{many}` for batches ({best_many:,.0f} images/s)"
        )
    float32_one, float32_many = facts["float32_fastest_invoke_p50_ms"], facts["float32_fastest_throughput_images_per_s"]
    still = ", so it stays slower" if best_one > float32_one and best_many < float32_many else ""
    return (
        f"{text}. Fastest setting found for it: {fastest}; float32 at its fastest: {float32_one * 1000:.1f} µs, "
        f"{float32_many:,.0f} images/s{still}."
    )


def settings_table(slower: dict[str, dict]) -> str:
    """Markdown: invoke p50 and throughput of float32 and of each slower variant under every interpreter setting
    timed."""
    rows = {}
    for variant, facts in slower.items():
        for setting, figures in facts.get("settings", {}).items():
            rows.setdefault(
                ("float32", setting), (figures["float32_invoke_p50_ms"], figures["float32_throughput_images_per_s"])
            )
            rows[(variant, setting)] = (figures["invoke_p50_ms"], figures["throughput_images_per_s"])
    if not rows:
        return ""
    ordered = sorted(
        rows.items(), key=lambda item: item[0][0] != "float32"
    )  # float32 first, then the variants in order
    table = pd.DataFrame(
        [
            {
                "variant": variant,
                "interpreter setting": f"`{setting}`",
                "invoke_p50_us": f"{invoke * 1000:.1f}",
                "throughput_images_per_s": f"{throughput:,.0f}",
            }
            for (variant, setting), (invoke, throughput) in ordered
        ]
    )
    return table.to_markdown(index=False, colalign=("left", "left", "right", "right"), disable_numparse=True) + "\n\n"


def format_report(
    metrics: dict[str, dict],
    *,
    model_name: str,
    version: int,
    promoted: bool,
    why_not: list[str],
    gate: dict,
    num_threads: int,
    notes: dict[str, str] | None = None,
    baseline: dict | None = None,
    cpu_description: dict | None = None,
    slower: dict[str, dict] | None = None,
    not_for_shipping: dict[str, str] | None = None,
) -> str:
    """The report; every quantized variant slower than float32 gets a paragraph (slower: the stage's
    export_measure.slower_than_float32, computed once with the interpreter settings' figures), every variant not for
    shipping (components/export/shipping.py) a line and a mark in the table."""
    not_for_shipping = not_for_shipping or {}
    table = pd.DataFrame.from_dict(metrics, orient="index").rename_axis("variant")
    table = table.rename(
        index=lambda name: f"{name} ({NOT_FOR_SHIPPING})" if name.removeprefix("tflite_") in not_for_shipping else name
    )
    table["latency_p50_us"] = table.pop("latency_p50_ms") * 1000
    table["latency_p99_us"] = table.pop("latency_p99_ms") * 1000
    table["invoke_p50_us"] = table.pop("invoke_p50_ms") * 1000
    for column in ("size_bytes", "gzip_bytes", "throughput_images_per_s"):  # integers, not 591595.0000
        table[column] = table[column].map(lambda value: "" if pd.isna(value) else f"{value:,.0f}")
    table = table.astype(object)
    status = (
        f"promoted to `{tracking.CHAMPION_ALIAS}`"
        if promoted
        else f"**not** `{tracking.CHAMPION_ALIAS}`: " + "; ".join(why_not)
    )
    metric = quality_metric(metrics)
    compared = (
        (
            f"Classical baseline ({baseline['model']}, same train and test splits): "
            f"test {metric} {baseline[metric]:.4f}; "
            f"the float model: {metrics[REFERENCE][metric]:.4f}.\n\n"
        )
        if baseline and metric in baseline
        else ""
    )
    slower = slower or {}
    speed = "".join(f"- {describe_slower_variant(variant, facts, num_threads)}\n" for variant, facts in slower.items())
    if speed:
        speed = (
            "Quantized variants slower than float32 on this machine "
            f"(invoke p50 more than {SLOWER_MARGIN:.0%} above float32's "
            f"or throughput more than {SLOWER_MARGIN:.0%} below, in the table below), each timed again with every "
            f"interpreter setting in interleaved rounds (OpResolverType `AUTO`: the default XNNPACK delegate; "
            f"`BUILTIN_WITHOUT_DEFAULT_DELEGATES`: TFLite's own kernels):\n\n{speed}\n{settings_table(slower)}"
        )
    if any(variant.endswith("int8") for variant in slower) and ((cpu_description or {}).get("flags") or {}).get(
        "amx_int8"
    ):
        speed += (
            "This CPU has AMX-INT8: XNNPACK runs int8 convolutions on its AMX tile kernel, "
            "which is slow for convolutions "
            "with few channels (issue 18); on a CPU without AMX the same file can be faster than float32.\n\n"
        )
    machine = f" on the build machine's CPU: {cpu.format_cpu(cpu_description)}" if cpu_description else ""
    return (
        f"# Export report: {model_name} version {version}\n\n"
        f"Registered in MLflow as `models:/{model_name}/{version}` "
        f"(SavedModel `saved_model/{model_name}/{version}/`), {status}.\n\n"
        f"int8 gate ({gate['variant']}): {'passed' if gate['passed'] else 'failed'} — {'; '.join(gate['reasons'])}.\n\n"
        + "".join(f"{line}.\n\n" for line in describe_not_for_shipping(not_for_shipping))
        + f"{compared}{speed}"
        + (
            "MAE and RMSE are on the whole test split through the interpreter, in the target's units; mae_increase "
            f"and mean_abs_difference compare with the float Keras model ({REFERENCE}); "
            if metric == "mae"
            else "Accuracy is on the whole test split through the interpreter; drop, worst per-class recall drop and "
            f"agreement compare with the float Keras model ({REFERENCE}); "
        )
        + "sparsity is the share of zero conv/dense "
        f"weights stored in the file. Every TFLite variant runs in ai_edge_litert with num_threads={num_threads} "
        f"and its default XNNPACK delegate{machine}; latency is one image per call including (de)quantization, invoke "
        "is the interpreter call alone, throughput is images/s in batches. The keras_float row runs in "
        "TensorFlow (size: model.keras).\n\n"
        f"{table.to_markdown(floatfmt='.4f')}\n\n"  # to_markdown needs tabulate, which dvc brings in
        + "".join(f"**{variant}**: {note}.\n\n" for variant, note in (notes or {}).items())
        + "![accuracy vs size and latency](variants.png)\n"
    )
