"""Outline level, merge distance and pixel threshold, re-examined on the validation halves of the categories with
masks.

For each fitted model (one per category), the validation half's defective images are predicted once; then for
each (outline level, merge distance) the outline is drawn as if the verdict were anomalous (so the figures do
not depend on the image threshold), and the findings are compared with the ground truth: the region count
equal to the mask's number of components, the 3x3 position words including the mask's centroid cell, the
words named per image (naming all nine would always hit) and the IoU of the outline with the mask.

    .venv/bin/python bench/outline_validation.py --models magnetic_tile=/tmp/models/magnetic_tile \
        ball_screw_drive=/tmp/models/ball_screw_drive --md bench/results/outline_validation.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from anomalens.data import iter_images, mvtec_samples, read_mask
from anomalens.data.splits import select_half
from anomalens.explanation.taxonomy import region_masks
from anomalens.models import load_detector
from anomalens.postprocessing.findings import extract_findings
from anomalens.postprocessing.outline import outline_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from findings_magnetic_tile import truth_of  # noqa: E402

LEVELS = (0.0, 0.25, 0.5, 0.75)
MERGES = (0.0, 0.08, 0.16)


def figures(detector, samples, pixel_scales) -> dict[tuple[float, float, float], dict[str, float]]:
    predictions = [
        (detector.predict(image), image, read_mask(s.mask_path, image.shape[:2]))
        for s, image in iter_images([s for s in samples if s.label == 1 and s.mask_path])
    ]
    out = {}
    for level, merge, scale in itertools.product(LEVELS, MERGES, pixel_scales):
        rows = []
        for prediction, image, truth in predictions:
            mask = outline_mask(prediction.anomaly_map, scale * detector.thresholds_.pixel, level)
            outlined = replace(prediction, is_anomalous=True, mask=mask)
            findings = extract_findings(outlined, image, merge_distance=merge)
            cell, count = truth_of(truth)
            words = {w for region in findings.regions for w in region.positions}
            union = np.zeros(truth.shape, bool)
            for _, mask in region_masks(outlined, findings):
                union |= mask
            rows.append(
                (
                    findings.count == count,
                    cell in words,
                    len(words),
                    float((union & truth).sum() / max(1, (union | truth).sum())),
                )
            )
        rows = np.array(rows, dtype=float)
        out[(level, merge, scale)] = {
            "count_equal": rows[:, 0].mean(),
            "position_hit": rows[:, 1].mean(),
            "words_per_image": rows[:, 2].mean(),
            "iou": rows[:, 3].mean(),
            "n": len(rows),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--models", nargs="+", required=True, help="CATEGORY=MODEL_DIR pairs")
    parser.add_argument("--md", help="write the table here")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--pixel-scales", nargs="+", type=float, default=[1.0], help="factors on the pixel threshold")
    args = parser.parse_args()
    results = {}
    for pair in args.models:
        category, model = pair.split("=", 1)
        detector = load_detector(model)
        samples = select_half(mvtec_samples(args.data, category, "test"), "validation")
        results[category] = figures(detector, samples, args.pixel_scales)
    lines = [
        "# Outline level, merge distance and pixel threshold on the validation halves",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        "| outline level | merge distance | pixel threshold x | "
        + " | ".join(f"{c}: count equal / position hit / words / IoU" for c in results)
        + " | mean count equal | mean IoU |",
        "|---|---|---|" + "---|" * (len(results) + 2),
    ]
    for key in itertools.product(LEVELS, MERGES, args.pixel_scales):
        cells = [results[c][key] for c in results]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | "
            + " | ".join(
                f"{x['count_equal']:.3f} / {x['position_hit']:.3f} / {x['words_per_image']:.1f} / {x['iou']:.3f}"
                for x in cells
            )
            + f" | {np.mean([x['count_equal'] for x in cells]):.3f} | "
            f"{np.mean([x['iou'] for x in cells]):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({c: {",".join(map(str, k)): v for k, v in r.items()} for c, r in results.items()}, indent=1)
        )


if __name__ == "__main__":
    main()
