"""The model card's sections for a regression: its test errors in the target's units against the linear baseline, the
gradient-boosting reference and the previous champion, and its limits (the largest errors, the categories it does
worst on). Reads the evaluation it is given, writes nothing."""

from __future__ import annotations

from components.export.markdown import text


def regression_analysis(evaluation: dict, blessing: dict, champion: dict, unit: str) -> list[str]:
    lines = [
        f"- Test MAE {evaluation['mae']:.4f}, RMSE {evaluation['rmse']:.4f}, R² {evaluation['r2']:.4f} on "
        f"{evaluation.get('num_examples', 0):,} {unit} (in the target's units; median absolute error "
        f"{evaluation['median_absolute_error']:.4f}, mean error {evaluation['mean_error']:+.4f})"
    ]
    baseline = evaluation.get("baseline_mae")
    if baseline is not None:
        lines.append(
            f"- Linear baseline ({text(evaluation.get('baseline_model', ''))}, same splits): MAE {baseline:.4f}; "
            f"the model's is {baseline - evaluation['mae']:+.4f} lower"
        )
    for reference in evaluation.get("references", []):
        lines.append(f"- Reference ({text(reference['model'])}, same splits): MAE {reference['mae']:.4f}")
    if champion.get("comparable") and not champion.get("same_run"):
        lines.append(
            f"- Previous champion (version {champion['version']}): MAE {champion['mae']:.4f}; change "
            f"{champion.get('mae_change', 0):+.4f}; the difference is "
            + (text(champion["paired_test"]["sentence"]) if champion.get("paired_test") else "untested")
        )
    elif champion:
        lines.append(f"- Previous champion: version {champion.get('version')} (not comparable on these splits)")
    else:
        lines.append("- Previous champion: none (the first version of this registered model)")
    return lines


def regression_limits(manifest: dict, evaluation: dict) -> list[str]:
    lines = []
    for column, groups in (evaluation.get("error_by_category") or {}).items():
        worst = sorted(groups.items(), key=lambda item: -item[1]["mae"])[:3]
        lines.append(
            f"- MAE by {text(column)}: "
            + ", ".join(f"{text(value)} {group['mae']:.3f} ({group['rows']} rows)" for value, group in worst)
        )
    lines += [
        "- The rows with the largest errors: artifacts/evaluate/largest\\_residuals.csv",
        f"- Trained on {text(manifest.get('target'))} values within the train split's range; far outside it the "
        "model extrapolates untested",
        "- Ethical considerations and fairness across groups are not assessed by the pipeline: review them for "
        "your use",
    ]
    return lines
