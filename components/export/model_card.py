"""The model card every export writes (artifacts/export/model_card.md) and gives the registered model version as its
description, so the MLflow UI shows it on the version's page.

Its sections follow the Model Card Toolkit's schema where a field fits: model details, model parameters (the
architecture, the input and output format, the training config that matters), the datasets (source, fingerprint,
counts per class and split), the quantitative analysis (test metrics against the classical baseline and the previous
champion, per-class recall, the variants and their trade-offs on the CPU they were measured on), the gate's verdict
and the considerations (known limits: the classes the model confuses, likely label errors, input conventions).

Every value that comes from the user's data (class names, file names, the source) is escaped as Markdown text: the
MLflow UI renders the description as Markdown.
"""

from __future__ import annotations

import math

from components.export.markdown import code, percent, text
from components.export.model_card_regression import regression_analysis, regression_limits
from components.export.shipping import describe as describe_not_for_shipping

REGISTRY_LIMIT = 5000  # characters of a model version's description in MLflow's SQL stores (String(5000))
CLASSES_LISTED = 40  # per-class rows in a full card; the registry's copy lists the weakest classes if it must shorten


def _interval(accuracy: float, count: int) -> str:
    """A 95% Wilson interval: how far the test split's size lets one trust the accuracy."""
    if not count:
        return ""
    z = 1.96
    centre = (accuracy + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(accuracy * (1 - accuracy) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return f"{max(0.0, centre - half):.3f}–{min(1.0, centre + half):.3f}"


def _training(description: dict) -> list[str]:
    params = description.get("params") or {}
    lines = []
    if params:
        augmentation = params.get("augmentation") or {}
        shown = ", ".join(f"{key} {value}" for key, value in augmentation.items() if value not in (0, 0.0, "none"))
        options = params.get("model_options") or {}
        lines += [
            f"- Architecture: {code(params.get('model'))}"
            + (f" ({text(', '.join(f'{k} {v}' for k, v in options.items()))})" if options else ""),
            f"- Epochs: {description.get('epochs_run', '?')} run of at most {params.get('epochs')} (early stopping "
            f"on val_loss, patience {params.get('early_stopping_patience')}), batch size {params.get('batch_size')}",
            f"- Optimizer: {text(params.get('optimizer'))}, learning rate {params.get('learning_rate')} "
            f"({text(params.get('lr_schedule'))} schedule, {params.get('warmup_epochs')} warm-up epoch(s)), "
            f"label smoothing {params.get('label_smoothing')}, weight decay {params.get('weight_decay')}, "
            f"dropout {params.get('dropout_rate')}",
            f"- Augmentation: {text(shown) or 'none'}",
        ]
    search = description.get("search")
    if search:
        lines.append(
            f"- Chosen by the search (`train.model`/`augmentation: auto`): {text(search.get('model'))} with "
            f"{text(search.get('augmentation'))}; {text(search.get('reason', ''))}"
        )
    final = description.get("final_epoch") or {}
    if "val_accuracy" in final:
        lines.append(f"- Validation accuracy at the end: {final['val_accuracy']:.4f}")
    return lines


def _dataset(manifest: dict, fingerprints: dict, unit: str) -> list[str]:
    splits = manifest["splits"]
    counts = ", ".join(f"{name} {splits[name]['count']:,}" for name in ("train", "val", "test") if name in splits)
    classes = f" in {len(manifest['class_names'])} classes" if manifest.get("class_names") else ""
    lines = [
        f"- Source: {code(manifest.get('source'))} ({text(manifest.get('layout', ''))}), "
        f"{sum(split['count'] for split in splits.values()):,} {unit}{classes}: {counts}",
    ]
    for name, value in fingerprints.items():
        if value:
            lines.append(f"- {text(name)}: {code(value)}")
    return lines


def _per_class(manifest: dict, evaluation: dict, champion_recall: dict, limit: int) -> tuple[list[str], int]:
    """The table of counts per split and test recall per class (weakest first when it must be cut)."""
    splits, per_class = manifest["splits"], evaluation.get("per_class", {})
    names = list(manifest["class_names"])
    if len(names) > limit:
        names = sorted(names, key=lambda name: per_class.get(name, {}).get("recall", 1.0))[:limit]
    header = "| class | train | val | test | test recall | precision |" + (
        " champion recall |" if champion_recall else ""
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|" + ("---:|" if champion_recall else "")]
    for name in names:
        row = per_class.get(name, {})
        counts = [splits.get(split, {}).get("class_counts", {}).get(name, 0) for split in ("train", "val", "test")]
        lines.append(
            f"| {text(name)} | {counts[0]:,} | {counts[1]:,} | {counts[2]:,} | {percent(row.get('recall'))} "
            f"| {percent(row.get('precision'))} |"
            + (f" {percent(champion_recall.get(name))} |" if champion_recall else "")
        )
    return lines, len(manifest["class_names"]) - len(names)


def _variants(
    metrics: dict, gate_variant: str, cpu: str, num_threads: int, not_for_shipping: dict[str, str] | None = None
) -> list[str]:
    float32 = metrics.get("tflite_float32", {})
    metric = "mae" if "mae" in float32 else "accuracy"
    lines = [
        f"Measured on {text(cpu)}, {num_threads} interpreter thread(s), on the test split:",
        "",
        f"| variant | {metric} | size kB | gzip kB | invoke p50 µs | vs float32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in metrics.items():
        if not name.startswith("tflite_"):
            continue
        variant = name.removeprefix("tflite_")
        speed = f"{row['invoke_p50_ms'] / float32['invoke_p50_ms']:.2f}×" if float32.get("invoke_p50_ms") else "n/a"
        gzip = f"{row['gzip_bytes'] / 1000:,.1f}" if row.get("gzip_bytes") else "n/a"
        marker = " (the gate's)" if variant == gate_variant else ""
        marker += " **not for shipping**" if variant in (not_for_shipping or {}) else ""
        lines.append(
            f"| {text(variant)}{marker} | {row[metric]:.4f} | {row['size_bytes'] / 1000:,.1f} | {gzip} "
            f"| {row['invoke_p50_ms'] * 1000:,.1f} | {speed} |"
        )
    if not_for_shipping:
        lines += ["", *(f"- {line}" for line in describe_not_for_shipping(not_for_shipping))]
    return lines


def _limits(manifest: dict, evaluation: dict, unit: str) -> list[str]:
    if evaluation.get("task") == "regression":
        return regression_limits(manifest, evaluation)
    lines = []
    confused = [pair for pair in evaluation.get("most_confused", []) if pair["images"]]
    if confused:
        lines.append(
            "- Most confused on the test split: "
            + "; ".join(
                f"{text(pair['actual'])} taken for {text(pair['predicted'])} ({pair['images']} image(s), "
                f"{pair['share']:.0%} of {text(pair['actual'])})"
                for pair in confused[:5]
            )
        )
    errors = evaluation.get("likely_label_errors") or {}
    if errors.get("confirmed"):
        lines.append(
            f"- {errors['confirmed']} example(s) across the splits are likely mislabelled (artifacts/evaluate/"
            "label\\_issues.csv and label\\_issues.png): the model learned from, and was scored against, those labels"
        )
    count = evaluation.get("num_examples", 0)
    if count:
        lines.append(
            f"- The test split has {count:,} {unit}: the accuracy's 95% interval is "
            f"{_interval(evaluation['accuracy'], count)}"
        )
    lines += [
        f"- It knows only these {len(manifest['class_names'])} classes: anything else is still given one of them "
        f"(there is no reject option); {unit} unlike the training data are untested",
        "- Ethical considerations and fairness across groups are not assessed by the pipeline: review them for "
        "your use",
    ]
    return lines


def _verdict(blessing: dict, gate: dict, registration: dict) -> list[str]:
    lines = [f"- Evaluate: {'blessed' if blessing.get('blessed') else 'not blessed'}"]
    lines += [f"  - {text(reason)}" for reason in blessing.get("reasons", [])]
    lines.append(f"- The {text(gate['variant'])} gate: {'passed' if gate['passed'] else 'failed'}")
    lines += [f"  - {text(reason)}" for reason in gate.get("reasons", [])]
    lines.append(
        f"- At export ({text(registration['exported_at'])}): "
        + (
            "promoted to `champion`"
            if registration["promoted"]
            else "not promoted: " + text("; ".join(registration["why_not"]))
        )
        + " (the champion may have moved since: `python -m pipelines.store champion`)"
    )
    return lines


def model_card(
    *,
    description: dict,
    manifest: dict,
    evaluation: dict,
    blessing: dict,
    variants: dict,
    gate: dict,
    registration: dict,
    cpu: str,
    num_threads: int,
    fingerprints: dict,
    inputs: list[str],
    unit: str = "images",
    parameters: int | None = None,
    classes_listed: int = CLASSES_LISTED,
    not_for_shipping: dict[str, str] | None = None,
) -> str:
    """The card as Markdown. registration: model_name, version, promoted, why_not, exported_at, run_id; inputs: the
    kind's lines on what the model takes and returns; unit: what an example is (images, rows); not_for_shipping: the
    variants components/export/shipping.py refused, with why."""
    champion = blessing.get("champion") or {}
    if evaluation.get("task") == "regression":
        subject = f"A regression of {text(manifest.get('target'))} from {unit}"
        analysis = regression_analysis(evaluation, blessing, champion, unit)
    else:
        names = manifest["class_names"]
        subject = (
            f"A classifier of {len(names)} classes ({text(', '.join(names[:20]) + (', …' if len(names) > 20 else ''))})"
            f" from {unit}"
        )
        analysis = _classification_analysis(manifest, evaluation, blessing, champion, unit, classes_listed)
    lines = [
        f"# Model card: {text(registration['model_name'])} version {registration['version']}",
        "",
        "## Model details",
        f"- {subject}, trained and exported by tfpipe",
        f"- Registered model {code(registration['model_name'])}, version {registration['version']}, "
        f"MLflow run {code(registration['run_id'])}, exported {text(registration['exported_at'])}",
        "",
        "## Model parameters",
        *_training(description),
        *([f"- Parameters: {parameters:,}"] if parameters else []),
        *inputs,
        "",
        "## Datasets",
        *_dataset(manifest, fingerprints, unit),
        "",
        "## Quantitative analysis",
        *analysis,
    ]
    lines += [
        "",
        "### Variants and their trade-offs",
        *_variants(variants, gate["variant"], cpu, num_threads, not_for_shipping),
    ]
    lines += ["", "## Gate verdict", *_verdict(blessing, gate, registration)]
    lines += ["", "## Considerations", "### Limitations", *_limits(manifest, evaluation, unit)]
    return "\n".join(lines) + "\n"


def _classification_analysis(
    manifest: dict, evaluation: dict, blessing: dict, champion: dict, unit: str, classes_listed: int
) -> list[str]:
    baseline = evaluation.get("baseline_accuracy")
    accuracy, count = evaluation["accuracy"], evaluation.get("num_examples", 0)
    lines = [
        f"- Test accuracy {accuracy:.4f} on {count:,} {unit} (95% interval {_interval(accuracy, count)}), "
        f"macro F1 {evaluation['macro_f1']:.4f}, "
        f"expected calibration error {evaluation['expected_calibration_error']:.4f}",
    ]
    if baseline is not None:
        lines.append(
            f"- Classical baseline ({text(blessing.get('baseline', {}).get('model', ''))}, same splits): "
            f"{baseline:.4f}; margin {evaluation['accuracy'] - baseline:+.4f}"
        )
    if champion.get("comparable") and not champion.get("same_run"):
        lines.append(
            f"- Previous champion (version {champion['version']}): {champion['accuracy']:.4f}; change "
            f"{champion.get('accuracy_change', 0):+.4f}, largest per-class recall drop "
            f"{champion.get('max_class_recall_drop', 0):+.4f}; the difference is "
            + (text(champion["paired_test"]["sentence"]) if champion.get("paired_test") else "untested")
        )
    elif champion:
        lines.append(f"- Previous champion: version {champion.get('version')} (not comparable on these splits)")
    else:
        lines.append("- Previous champion: none (the first version of this registered model)")
    table, left_out = _per_class(
        manifest,
        evaluation,
        champion.get("per_class_recall", {}) if champion.get("comparable") and not champion.get("same_run") else {},
        classes_listed,
    )
    lines += ["", *table]
    if left_out:
        lines.append(f"\n({left_out} more classes with higher recall: artifacts/evaluate/evaluation.json)")
    return lines


def registry_description(card_arguments: dict, full: str) -> str:
    """The card for the registry: the full card when it fits MLflow's limit, else one listing fewer classes, else
    the full card cut at the limit with a pointer to the artifact."""
    if len(full) <= REGISTRY_LIMIT:
        return full
    for listed in (20, 10, 5):
        shorter = model_card(**{**card_arguments, "classes_listed": listed})
        if len(shorter) <= REGISTRY_LIMIT:
            return shorter
    note = "\n\n… (cut: the whole card is the run's artifact export/model_card.md)\n"
    return full[: REGISTRY_LIMIT - len(note)] + note
