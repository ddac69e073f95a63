"""Which detections wrong marks cost: the defective images that pass once N detected defects are marked normal.

Repeats the wrong-mark experiment of ``bench/feedback_learning.py`` (same model, half, draw and seed) and lists
each defective image that was detected before and passes after, beside the marked images, so that one can see
whether the lost detections are the marked parts photographed again (magnetic tile: the same tile number under
another exposure; ball screw: the same camera position at another time) or other defects.

    OMP_NUM_THREADS=2 .venv/bin/python bench/feedback_lost_detections.py --half report \\
        --categories magnetic_tile ball_screw_drive --models /tmp/models --md bench/results/feedback_lost_report.md
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
from feedback_learning import fitted

from anomalens.data import mvtec_samples, read_image
from anomalens.data.splits import select_half
from anomalens.learning import learn_normal_images


def lost_detections(data: str, category: str, half: str, models: Path | None, count: int) -> list[str]:
    model = fitted(data, category, models)
    samples = select_half(mvtec_samples(data, category, "test"), half)
    images = [read_image(sample.path) for sample in samples]
    labels = np.array([sample.label for sample in samples])
    names = [sample.path.name for sample in samples]
    scores = np.array([score for score, _ in model.score_and_map_batch(images)]) / model.thresholds_.image
    detected = [int(i) for i in np.flatnonzero((labels == 1) & (scores >= 1))]
    marked = [int(i) for i in np.random.default_rng(0).permutation(detected)][:count]
    learner = copy.deepcopy(model)
    learn_normal_images(learner, [(names[i], images[i]) for i in marked], "bench")
    after = np.array([score for score, _ in learner.score_and_map_batch(images)]) / learner.thresholds_.image
    lost = [i for i in detected if i not in marked and after[i] < 1]
    lines = [
        f"## {category}, {half} half: {count} detected defects marked normal",
        "",
        "Marked: " + ", ".join(f"`{names[i]}` ({samples[i].defect_type})" for i in marked) + ".",
        "",
        f"Detections lost: {len(lost)} of {len(detected) - len(marked)}.",
        "",
        "| lost image | defect type | score / threshold before | after |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{names[i]}` | {samples[i].defect_type} | {scores[i]:.3f} | {after[i]:.3f} |" for i in lost]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--categories", nargs="+", default=["magnetic_tile", "ball_screw_drive"])
    parser.add_argument("--half", default="report", choices=("validation", "report"))
    parser.add_argument("--models", type=Path)
    parser.add_argument("--marks", type=int, default=5)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    lines = [
        "# Detections lost to wrong marks",
        "",
        f"`python bench/feedback_lost_detections.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
    ]
    for category in args.categories:
        lines += lost_detections(args.data, category, args.half, args.models, args.marks)
    text = "\n".join(lines)
    if args.md:
        args.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
