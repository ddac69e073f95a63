"""Feedback that teaches, on the suite: false alarms and detection before and after operators mark images normal.

Per category a PatchCore is fitted with the defaults on the training images (or loaded from ``--models``). On
one half of the test images (``--half``; the validation half chose the guard's defaults, the report half is
reported):

- **Honest marks.** An operator marks the N good images the station doubted most (all flagged ones first, then
  the next highest scores) as false alarms, N = 1, 5, 20. Reported: the false-alarm rate on all good images of
  the half and on the good images not marked, the detection rate on the defective images, the image threshold
  and the bank's growth.
- **Wrong marks.** An operator marks N flagged *defective* images as false alarms (drawn at random with a fixed
  seed among those the model detects). Reported: how many the guard refused, and the detection rate on the other
  defective images before and after.

Each experiment starts from the fitted model; marks go through ``anomalens.learning.learn_normal_images`` at its
defaults, as ``anomalens learn`` and the service apply them. ``--no-guard`` learns wrong marks with the guard
off (``force``) to show what the guard prevents.

    OMP_NUM_THREADS=2 .venv/bin/python bench/feedback_learning.py --half validation \\
        --json bench/results/feedback_learning_validation.json --md bench/results/feedback_learning_validation.md
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np

from anomalens import api
from anomalens.data import mvtec_samples, read_image
from anomalens.data.splits import select_half
from anomalens.learning import learn_normal_images
from anomalens.models import load_detector

SUITE = ("magnetic_tile", "ball_screw_drive", "solar_cell_mono", "solar_cell_poly")
MARK_COUNTS = (1, 5, 20)
GUARD_RATIOS = (1.2, 1.5, 2.0, 3.0)  # candidate refusal levels, in units of the image threshold
WRONG_COUNTS = (1, 3, 5)


def fitted(data: str, category: str, models: Path | None):
    """The category's default PatchCore: loaded from ``models/category`` when saved there, else fitted (and saved
    there when ``models`` is given)."""
    if models is not None and (models / category / "config.json").is_file():
        return load_detector(models / category)
    model, _ = api.fit(data, category, "patchcore")
    if models is not None:
        model.save(models / category)
    return model


def rates(model, images: list[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Scores of ``images``, the share of good ones flagged and of defective ones detected."""
    scores = np.array([score for score, _ in model.score_and_map_batch(images)])
    flagged = scores >= model.thresholds_.image
    good, bad = labels == 0, labels == 1
    return scores, float(flagged[good].mean()) if good.any() else float("nan"), float(flagged[bad].mean())


def honest_marks(model, images, labels, names, scores) -> list[dict]:
    rows = []
    order = [int(i) for i in np.argsort(-scores) if labels[i] == 0]  # good images, most doubted first
    flagged_before = scores >= model.thresholds_.image
    for count in MARK_COUNTS:
        marked = order[:count]
        learner = copy.deepcopy(model)
        report = learn_normal_images(learner, [(names[i], images[i]) for i in marked], "bench")
        after, false_alarms, detection = rates(learner, images, labels)
        unmarked_good = np.array([labels[i] == 0 and i not in marked for i in range(len(labels))])
        rows.append(
            {
                "marks": count,
                "marked_flagged": int(flagged_before[marked].sum()),
                "learned": len(report.learned),
                "refused": len(report.refused),
                "patches_added": sum(mark.patches for mark in report.learned),
                "marked_still_flagged": int((after[marked] >= learner.thresholds_.image).sum()),
                "false_alarms_unmarked": float((after[unmarked_good] >= learner.thresholds_.image).mean())
                if unmarked_good.any()
                else float("nan"),
                "false_alarms_all": false_alarms,
                "detection": detection,
                "threshold": learner.thresholds_.image,
                "threshold_capped": report.threshold_capped,
            }
        )
    return rows


def wrong_marks(model, images, labels, names, scores, guard: bool, seed: int = 0) -> list[dict]:
    rows = []
    detected = [int(i) for i in np.flatnonzero((labels == 1) & (scores >= model.thresholds_.image))]
    rng = np.random.default_rng(seed)
    drawn = [int(i) for i in rng.permutation(detected)]
    for count in WRONG_COUNTS:
        marked = drawn[:count]
        learner = copy.deepcopy(model)
        report = learn_normal_images(learner, [(names[i], images[i]) for i in marked], "bench", force=not guard)
        after = np.array([s for s, _ in learner.score_and_map_batch(images)])
        others = np.array([labels[i] == 1 and i not in marked for i in range(len(labels))])
        rows.append(
            {
                "guard": guard,
                "wrong_marks": count,
                "refused": len(report.refused),
                "learned": len(report.learned),
                "detection_others_before": float((scores[others] >= model.thresholds_.image).mean()),
                "detection_others_after": float((after[others] >= learner.thresholds_.image).mean()),
                "good_flagged_after": float((after[labels == 0] >= learner.thresholds_.image).mean()),
                "threshold": learner.thresholds_.image,
            }
        )
    return rows


def run_category(
    data: str, category: str, half: str, models: Path | None, no_guard: bool, reaches: list[float] | None
) -> dict:
    tic = time.perf_counter()
    model = fitted(data, category, models)
    samples = select_half(mvtec_samples(data, category, "test"), half)
    images = [read_image(sample.path) for sample in samples]
    labels = np.array([sample.label for sample in samples])
    names = [sample.path.name for sample in samples]
    scores, false_alarms, detection = rates(model, images, labels)
    result = {
        "category": category,
        "n_good": int((labels == 0).sum()),
        "n_defective": int((labels == 1).sum()),
        "before": {
            "false_alarms": false_alarms,
            "detection": detection,
            "threshold": model.thresholds_.image,
        },
        "normalized_scores": {
            "good": sorted(round(float(s / model.thresholds_.image), 4) for s in scores[labels == 0]),
            "defective": sorted(round(float(s / model.thresholds_.image), 4) for s in scores[labels == 1]),
        },
        "honest": [],
        "wrong": [],
    }
    for reach in reaches or [model.learned_reach]:
        model.learned_reach = model.model_.learned_reach = reach
        result["honest"] += [{"reach": reach, **row} for row in honest_marks(model, images, labels, names, scores)]
        for guard in (True, False) if no_guard else (True,):
            rows = wrong_marks(model, images, labels, names, scores, guard=guard)
            result["wrong"] += [{"reach": reach, **row} for row in rows]
    result["seconds"] = round(time.perf_counter() - tic, 1)
    return result


def pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f} %"


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Feedback that teaches: {meta['half']} halves",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['machine']}). Defaults of `anomalens.learning`: "
        f"max_mark_ratio {meta['max_mark_ratio']}, max_threshold_rise {meta['max_threshold_rise']}.",
        "",
        "## Honest marks: the N good images the station doubted most, marked as false alarms",
        "",
        "| category | reach | N | of them flagged | learned | patches learned | marked still flagged | "
        "false alarms, unmarked good | false alarms, all good | detection | threshold |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        before = result["before"]
        lines.append(
            f"| {result['category']} | - | 0 | - | - | - | - | {pct(before['false_alarms'])} | "
            f"{pct(before['false_alarms'])} | {pct(before['detection'])} | {before['threshold']:.4g} |"
        )
        for row in result["honest"]:
            capped = " (cap)" if row["threshold_capped"] else ""
            lines.append(
                f"| {result['category']} | {row['reach']:g} | {row['marks']} | {row['marked_flagged']} | "
                f"{row['learned']} | {row['patches_added']} | {row['marked_still_flagged']} | "
                f"{pct(row['false_alarms_unmarked'])} | {pct(row['false_alarms_all'])} | {pct(row['detection'])} | "
                f"{row['threshold']:.4g}{capped} |"
            )
    lines += [
        "",
        "## Wrong marks: N detected defective images marked as false alarms",
        "",
        "| category | reach | guard | N | refused | learned | detection of the other defects before | after | "
        "good flagged after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["wrong"]:
            lines.append(
                f"| {result['category']} | {row['reach']:g} | {'on' if row['guard'] else 'off (force)'} | "
                f"{row['wrong_marks']} | "
                f"{row['refused']} | {row['learned']} | {pct(row['detection_others_before'])} | "
                f"{pct(row['detection_others_after'])} | {pct(row['good_flagged_after'])} |"
            )
    lines += [
        "",
        "## The guard's level: what each refusal level would refuse, from the scores before any mark",
        "",
        "Share of the good images the model flags (honest false-alarm marks) and of the defective images it "
        "detects (wrong marks) that score above each level, in units of the image threshold.",
        "",
        "| category | highest flagged good | "
        + " | ".join(f"refused at {r:g}: false alarms / detected defects" for r in GUARD_RATIOS)
        + " |",
        "|---|---|" + "---|" * len(GUARD_RATIOS),
    ]
    for result in results:
        flagged = [s for s in result["normalized_scores"]["good"] if s >= 1]
        detected = [s for s in result["normalized_scores"]["defective"] if s >= 1]
        cells = [f"{share(flagged, ratio)} / {share(detected, ratio)}" for ratio in GUARD_RATIOS]
        highest = f"{max(flagged):.2f}" if flagged else "- (none flagged)"
        lines.append(f"| {result['category']} | {highest} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def share(ratios: list[float], level: float) -> str:
    """How many of ``ratios`` lie above ``level``, as "k of n"."""
    return f"{sum(r > level for r in ratios)} of {len(ratios)}"


def main() -> None:
    from anomalens.learning.learn import DEFAULT_MAX_MARK_RATIO, DEFAULT_MAX_THRESHOLD_RISE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--categories", nargs="+", default=list(SUITE))
    parser.add_argument("--half", default="report", choices=("validation", "report"))
    parser.add_argument("--models", type=Path, help="load fitted models from here (fit and save them when absent)")
    parser.add_argument("--no-guard", action="store_true", help="also learn the wrong marks with the guard off")
    parser.add_argument(
        "--reach", type=float, nargs="+", help="learned_reach values to compare (default: the model's own)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    results = []
    for category in args.categories:
        results.append(run_category(args.data, category, args.half, args.models, args.no_guard, args.reach))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "normalized_scores"}), flush=True)
    import sys

    meta = {
        "half": args.half,
        "command": "python bench/feedback_learning.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "max_mark_ratio": DEFAULT_MAX_MARK_RATIO,
        "max_threshold_rise": DEFAULT_MAX_THRESHOLD_RISE,
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    text = markdown(results, meta)
    if args.md:
        args.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
