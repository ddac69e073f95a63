"""Score the validation halves of the suite under one PatchCore setting, keeping every number a default needs.

One run fits PatchCore on each category's train/good images with the given overrides, scores the category's
validation half (never the report half) and writes, per category, the per-image scores under several image
score rules (maximum, mean of the top 1 % and top 5 % of each view's map), the pixel metrics of the maps, and
the calibration's held-out normal and simulated-defect scores, so that threshold rules can be compared
afterwards without fitting again (``bench/choose_defaults.py``).

    .venv/bin/python bench/validation_sweep.py --name tiles320 --working-pixels 262144
    .venv/bin/python bench/validation_sweep.py --name squash256 --image-size 256
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from anomalens.api import training_paths
from anomalens.data import iter_images, mvtec_samples, read_mask
from anomalens.data.splits import select_half
from anomalens.evaluation.metrics import pixel_aupro, pixel_auroc
from anomalens.models import PatchCore

SUITE = ("magnetic_tile", "ball_screw_drive", "solar_cell_mono", "solar_cell_poly")
TOP_FRACTIONS = {"max": 0.0, "top1": 0.01, "top5": 0.05}


def view_score(view_maps: torch.Tensor, fraction: float) -> float:
    flat = view_maps.flatten(1)
    if fraction <= 0:
        return float(flat.max())
    count = max(1, round(fraction * flat.shape[1]))
    return float(flat.topk(count, dim=1).values.mean(dim=1).max())


def run_category(root: str, category: str, params: dict, half: str) -> dict:
    detector = PatchCore(**params)
    paths = training_paths(root, category)
    start = time.perf_counter()
    detector.fit(image for _, image in iter_images(paths))
    fit_seconds = time.perf_counter() - start
    samples = select_half(mvtec_samples(root, category, "test"), half)
    records, masks, maps, millis = [], [], [], []
    for sample, image in iter_images(samples):
        tic = time.perf_counter()
        views = detector._views(image)
        with torch.inference_mode():
            view_maps = torch.cat(
                [
                    detector._score_views(detector._to_tensor([v.pixels for v in batch]))
                    for batch in detector._batches(views)
                ]
            )
        amap = detector._image_map(list(view_maps.numpy()), views, image.shape[:2])
        millis.append(1000 * (time.perf_counter() - tic))
        records.append(
            {
                "image": sample.path.name,
                "defect_type": sample.defect_type,
                "label": sample.label,
                "scores": {name: view_score(view_maps, f) for name, f in TOP_FRACTIONS.items()},
            }
        )
        if sample.mask_path is not None:
            masks.append(read_mask(sample.mask_path, amap.shape))
            maps.append(amap)
        elif sample.label == 0 and any(s.mask_path for s in samples):
            masks.append(np.zeros(amap.shape, bool))
            maps.append(amap)
    thresholds = detector.thresholds_
    details = thresholds.details
    pixel = {}
    if any(m.any() for m in masks):
        pixel = {
            "pixel_auroc": pixel_auroc(masks, maps),
            "pixel_aupro": pixel_aupro(masks, maps, 0.3),
            "pixel_aupro_5": pixel_aupro(masks, maps, 0.05),
        }
    return {
        "category": category,
        "half": half,
        "params": detector.get_params(),
        "info": detector.info_,
        "fit_seconds": round(fit_seconds, 1),
        "ms_per_image": round(float(np.median(millis)), 1),
        "image_threshold": thresholds.image,
        "pixel_threshold": thresholds.pixel,
        "calibration": {
            "normal_scores": details["normal_scores"],
            "simulated_scores": details.get("simulated_scores", []),
            "balanced_cut": details.get("balanced_cut"),
        },
        "pixel": pixel,
        "images": records,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="name of this setting (file name of the results)")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--categories", nargs="+", default=list(SUITE))
    parser.add_argument("--half", default="validation", choices=("validation",))
    parser.add_argument("--params", default="{}", help="PatchCore overrides as JSON")
    parser.add_argument("--out", default="bench/results/validation")
    args = parser.parse_args()
    torch.manual_seed(0)
    params = json.loads(args.params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for category in args.categories:
        result = run_category(args.data, category, params, args.half)
        result["setting"] = args.name
        (out / f"{args.name}__{category}.json").write_text(json.dumps(result))
        print(
            args.name,
            category,
            "fit",
            result["fit_seconds"],
            "s;",
            result["ms_per_image"],
            "ms/image;",
            result["pixel"],
            flush=True,
        )


if __name__ == "__main__":
    main()
