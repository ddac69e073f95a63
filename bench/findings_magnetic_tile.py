"""Do the findings say the right thing about where and how many? Figures on magnetic tile's defective images.

For every defective test image: whether the predicted regions' 3x3 position words include the grid cell of
the ground-truth mask's centroid, and whether the predicted region count equals the number of connected
components of the ground-truth mask (components smaller than the findings' minimum region size are not
counted). Pooled and per defect type, with what keeps those two honest: how many of the nine position words the
regions name on average (naming all nine would always "hit"), the mean predicted and true region counts, and the
intersection over union of the outlined regions with the ground-truth mask.

    .venv/bin/python bench/findings_magnetic_tile.py [--model MODEL_DIR] [--json OUT]

Without --model, PatchCore is fitted on the category's train/good images first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np
from skimage.measure import label, regionprops

from anomalens import api
from anomalens.data import mvtec_samples, read_image, read_mask
from anomalens.explanation.taxonomy import region_masks
from anomalens.models import load_detector
from anomalens.postprocessing.findings import MERGE_DISTANCE, extract_findings, grid_cell
from anomalens.postprocessing.outline import OUTLINE_LEVEL

MIN_AREA_FRACTION, MIN_AREA_PIXELS = 0.0005, 16  # the defaults of extract_findings


def truth_of(mask: np.ndarray) -> tuple[str, int]:
    """Grid cell of the mask's centroid and its number of connected components of at least the minimum size."""
    ys, xs = np.nonzero(mask)
    minimum = max(MIN_AREA_PIXELS, MIN_AREA_FRACTION * mask.size)
    count = sum(1 for r in regionprops(label(mask, connectivity=2)) if r.area >= minimum)
    return grid_cell(float(xs.mean()), float(ys.mean()), mask.shape), max(count, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--model", help="a fitted model directory (default: fit PatchCore now)")
    parser.add_argument(
        "--outline-level",
        type=float,
        default=OUTLINE_LEVEL,
        help="outline pixels this far above the image's typical level (0: the pixel threshold alone)",
    )
    parser.add_argument(
        "--merge-distance",
        type=float,
        default=MERGE_DISTANCE,
        help="parts closer than this share of the short side are one region (0: never merge)",
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    print("command:", " ".join(sys.argv))
    detector = load_detector(args.model) if args.model else api.fit(args.data, args.category, "patchcore")[0]
    detector.outline_level = args.outline_level
    rows: dict[str, list[dict]] = defaultdict(list)
    for sample in mvtec_samples(args.data, args.category, "test"):
        if sample.label == 0 or sample.mask_path is None:
            continue
        image = read_image(sample.path)
        prediction = detector.predict(image)
        findings = extract_findings(prediction, image, merge_distance=args.merge_distance)
        truth = read_mask(sample.mask_path, image.shape[:2])
        truth_cell, truth_count = truth_of(truth)
        words = {word for region in findings.regions for word in region.positions}
        outlined = np.zeros(truth.shape, dtype=bool)
        for _, region_mask in region_masks(prediction, findings):
            outlined |= region_mask
        rows[sample.defect_type].append(
            {
                "detected": findings.is_anomalous,
                "cell_hit": truth_cell in words,
                "count_equal": findings.count == truth_count,
                "predicted_count": findings.count,
                "true_count": truth_count,
                "words": len(words),
                "iou": float((outlined & truth).sum() / max(1, (outlined | truth).sum())),
            }
        )
    report = {}
    print(
        "\n| defect type | n | detected | position words include the true cell | count equal | "
        "position hit among detected | words per image | mean count (pred / true) | IoU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, items in [*sorted(rows.items()), ("pooled", [r for v in rows.values() for r in v])]:
        detected = [r for r in items if r["detected"]]
        figures = {
            "n": len(items),
            "detected": np.mean([r["detected"] for r in items]),
            "position_hit": np.mean([r["cell_hit"] for r in items]),
            "count_equal": np.mean([r["count_equal"] for r in items]),
            "position_hit_among_detected": np.mean([r["cell_hit"] for r in detected]) if detected else None,
            "words_per_image": np.mean([r["words"] for r in items]),
            "mean_predicted_count": np.mean([r["predicted_count"] for r in items]),
            "mean_true_count": np.mean([r["true_count"] for r in items]),
            "iou": np.mean([r["iou"] for r in items]),
        }
        report[name] = {k: (float(v) if v is not None else None) for k, v in figures.items()}
        hit_detected = (
            "-" if figures["position_hit_among_detected"] is None else f"{figures['position_hit_among_detected']:.3f}"
        )
        print(
            f"| {name} | {figures['n']} | {figures['detected']:.3f} | {figures['position_hit']:.3f} | "
            f"{figures['count_equal']:.3f} | {hit_detected} | {figures['words_per_image']:.1f} | "
            f"{figures['mean_predicted_count']:.2f} / {figures['mean_true_count']:.2f} | {figures['iou']:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
