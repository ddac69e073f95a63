"""Choose defaults from the validation halves only: reads ``bench/results/validation/*.json`` (written by
``bench/validation_sweep.py``) and prints, per setting, the figures each default is chosen by, per category
and as the mean over categories (a setting that helps one product and hurts another shows as such).

    .venv/bin/python bench/choose_defaults.py --md bench/results/choose_defaults.md
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from anomalens.evaluation.metrics import image_auroc, oracle_accuracy, threshold_metrics
from anomalens.postprocessing.thresholds import best_balanced_threshold, false_alarm_threshold

RATES = (0.01, 0.02, 0.05, 0.1)
SCORE_RULES = ("max", "top1", "top5")


def threshold_rules(calibration: dict) -> dict[str, float]:
    """Every candidate image threshold from the calibration scores alone (no validation labels)."""
    normals, simulated = calibration["normal_scores"], calibration["simulated_scores"]
    cut = best_balanced_threshold(normals, simulated)
    rules = {"simulated cut": cut}
    for rate in RATES:
        bound = false_alarm_threshold(normals, rate)
        rules[f"bound {rate:g}"] = bound
        rules[f"max(cut, bound {rate:g})"] = max(cut, bound)
    return rules


def summarise(result: dict) -> dict:
    labels = np.array([r["label"] for r in result["images"]])
    fitted_rule = "top5" if result["params"]["score_top_fraction"] == 0.05 else None
    row: dict = {
        "auroc": {
            rule: image_auroc(labels, np.array([r["scores"][rule] for r in result["images"]])) for rule in SCORE_RULES
        },
        "pixel": result["pixel"],
        "fit_seconds": result["fit_seconds"],
        "ms_per_image": result["ms_per_image"],
        "image_size": result["info"].get("feature_grid"),
    }
    types = sorted({r["defect_type"] for r in result["images"]} - {"good"})
    if len(types) > 1:
        good = np.array([r["defect_type"] == "good" for r in result["images"]])
        row["per_type_auroc"] = {}
        for defect in types:
            keep = good | np.array([r["defect_type"] == defect for r in result["images"]])
            row["per_type_auroc"][defect] = image_auroc(
                labels[keep], np.array([r["scores"]["top5"] for r, k in zip(result["images"], keep) if k])
            )
    if fitted_rule:
        scores = np.array([r["scores"][fitted_rule] for r in result["images"]])
        row["oracle_accuracy"] = oracle_accuracy(labels, scores)[0]
        row["thresholds"] = {}
        for name, value in threshold_rules(result["calibration"]).items():
            at = threshold_metrics(labels, scores, value)
            row["thresholds"][name] = {
                "accuracy": at["accuracy"],
                "false_alarm_rate": at["false_positive_rate"],
                "recall": at["recall"],
            }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="bench/results/validation")
    parser.add_argument("--md", help="write the tables here as Markdown")
    args = parser.parse_args()
    rows: dict[str, dict[str, dict]] = defaultdict(dict)
    for path in sorted(Path(args.results).glob("*.json")):
        result = json.loads(path.read_text())
        rows[result["setting"]][result["category"]] = summarise(result)
    lines = [
        "# Defaults chosen on the validation halves",
        "",
        "Written by `bench/choose_defaults.py` from `bench/results/validation/` (validation halves only).",
        "",
        "## Image score rule and working scale: image AUROC (pixel AUROC, AUPRO@30 %, AUPRO@5 % of the maps)",
        "",
        "| setting | category | max | top 1 % | top 5 % | pixel AUROC | AUPRO@30 | AUPRO@5 | fit s | ms/image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    for setting, categories in sorted(rows.items()):
        for category, row in sorted(categories.items()):
            pixel = row["pixel"]
            lines.append(
                f"| {setting} | {category} | "
                + " | ".join(fmt(row["auroc"][r]) for r in SCORE_RULES)
                + f" | {fmt(pixel.get('pixel_auroc'))} | {fmt(pixel.get('pixel_aupro'))} | "
                f"{fmt(pixel.get('pixel_aupro_5'))} | {row['fit_seconds']:.0f} | {row['ms_per_image']:.0f} |"
            )
        if len(categories) > 1:
            means = [np.mean([row["auroc"][r] for row in categories.values()]) for r in SCORE_RULES]
            lines.append(
                f"| {setting} | **mean of {len(categories)}** | " + " | ".join(fmt(m) for m in means) + " | | | | | |"
            )
    typed = {
        (setting, c): row["per_type_auroc"]
        for setting, cats in rows.items()
        for c, row in cats.items()
        if "per_type_auroc" in row
    }
    if typed:
        defects = sorted({d for v in typed.values() for d in v})
        lines += [
            "",
            "## Per defect type: image AUROC (top-5 % score) against the validation good images",
            "",
            "| setting | category | " + " | ".join(defects) + " |",
            "|---|---|" + "---|" * len(defects),
        ]
        for (setting, category), values in sorted(typed.items()):
            lines.append(f"| {setting} | {category} | " + " | ".join(fmt(values.get(d)) for d in defects) + " |")
    lines += [
        "",
        "## Threshold rule (top-5 % score): accuracy / false-alarm rate / recall on the validation halves",
        "",
    ]
    for setting, categories in sorted(rows.items()):
        fitted = {c: r for c, r in categories.items() if "thresholds" in r}
        if not fitted:
            continue
        names = list(next(iter(fitted.values()))["thresholds"])
        lines += [
            f"### {setting}",
            "",
            "| rule | " + " | ".join(sorted(fitted)) + " | mean accuracy | mean FAR | worst FAR |",
            "|---|" + "---|" * (len(fitted) + 3),
        ]
        for name in names:
            cells = [fitted[c]["thresholds"][name] for c in sorted(fitted)]
            lines.append(
                f"| {name} | "
                + " | ".join(f"{x['accuracy']:.3f} / {x['false_alarm_rate']:.3f} / {x['recall']:.3f}" for x in cells)
                + f" | {np.mean([x['accuracy'] for x in cells]):.3f} | "
                f"{np.mean([x['false_alarm_rate'] for x in cells]):.3f} | "
                f"{max(x['false_alarm_rate'] for x in cells):.3f} |"
            )
        lines.append(
            "| oracle accuracy | "
            + " | ".join(f"{fitted[c]['oracle_accuracy']:.3f}" for c in sorted(fitted))
            + f" | {np.mean([fitted[c]['oracle_accuracy'] for c in fitted]):.3f} | | |"
        )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")


if __name__ == "__main__":
    main()
