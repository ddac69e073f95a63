"""Large, faint defects: does an image-level (global) score add to PatchCore's patch score? Validation halves.

Each view's global descriptor is the spatial mean (and, in some variants, standard deviation) of Lite0 feature
maps; a Gaussian with Ledoit-Wolf shrinkage fitted on every training view scores a view by its Mahalanobis
distance, an image by its worst view. The patch score of each validation image is read from a committed
validation sweep (``--local``: the defaults' setting), so only the global part is computed here. To put both on
one scale each becomes a z-score over normals: the patch score over the sweep's leave-one-out calibration
normals, the global score over 5-fold out-of-fold scores of the training images. Printed and written: image AUROC
of the patch score, the global score, and their sum, max and patch + half the global, per category and per
magnetic-tile defect type.

    .venv/bin/python bench/global_score_validation.py --json bench/results/global_score_validation.json \
        --md bench/results/global_score_validation.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from result_tables import markdown_table
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from anomalens.api import training_paths
from anomalens.data import iter_images, mvtec_samples
from anomalens.data.splits import select_half
from anomalens.models import PatchCore
from anomalens.models.backbones.registry import build_feature_extractor

SUITE = ("magnetic_tile", "ball_screw_drive", "solar_cell_mono", "solar_cell_poly")
LAYERS = ("blocks.4", "blocks.10", "blocks.14", "blocks.15")
VARIANTS = {
    "mean 10": ["blocks.10:mean"],
    "mean 4+10": ["blocks.4:mean", "blocks.10:mean"],
    "mean+std 4+10": ["blocks.4:mean", "blocks.10:mean", "blocks.4:std", "blocks.10:std"],
    "mean 14+15": ["blocks.14:mean", "blocks.15:mean"],
    "mean 4+10+14+15": [f"{layer}:mean" for layer in LAYERS],
    "mean+std 4+10+14+15": [f"{layer}:{stat}" for layer in LAYERS for stat in ("mean", "std")],
}
FUSIONS = {
    "global": lambda patch, glob: glob,
    "sum": lambda patch, glob: patch + glob,
    "max": np.maximum,
    "patch + half": lambda patch, glob: patch + 0.5 * glob,
}


def descriptors(detector: PatchCore, extractor, image: np.ndarray) -> dict[str, np.ndarray]:
    """Per view [V, C] statistics of each layer's feature map."""
    views = detector._views(image)
    with torch.inference_mode():
        features = extractor(detector._to_tensor([view.pixels for view in views]))
    out = {}
    for layer in LAYERS:
        out[f"{layer}:mean"] = features[layer].mean(dim=(2, 3)).numpy()
        out[f"{layer}:std"] = features[layer].std(dim=(2, 3)).numpy()
    return out


def stacked(per_image: list[dict[str, np.ndarray]], keys: list[str]) -> np.ndarray:
    """[images, views, C] of the chosen statistics."""
    return np.stack([np.concatenate([d[key] for key in keys], axis=1) for d in per_image])


def worst_view_distance(gaussian: LedoitWolf, views: np.ndarray) -> np.ndarray:
    images, n_views, dim = views.shape
    return np.sqrt(gaussian.mahalanobis(views.reshape(-1, dim))).reshape(images, n_views).max(axis=1)


def out_of_fold(train: np.ndarray) -> np.ndarray:
    scores = np.zeros(len(train))
    for fit_rows, held_rows in KFold(5, shuffle=True, random_state=0).split(train):
        gaussian = LedoitWolf().fit(train[fit_rows].reshape(-1, train.shape[2]))
        scores[held_rows] = worst_view_distance(gaussian, train[held_rows])
    return scores


def zscore(scores: np.ndarray, normals: np.ndarray) -> np.ndarray:
    return (scores - normals.mean()) / normals.std()


def run_category(root: str, category: str, local: Path) -> dict:
    detector = PatchCore()  # only for its working scale and views
    train_images = detector._start_fit(image for _, image in iter_images(training_paths(root, category)))
    extractor = build_feature_extractor("efficientnet_lite0", LAYERS).eval()
    started = time.perf_counter()
    train = [descriptors(detector, extractor, image) for image in train_images]
    samples = select_half(mvtec_samples(root, category, "test"), "validation")
    test, names = [], []
    for sample, image in iter_images(samples):
        test.append(descriptors(detector, extractor, image))
        names.append(sample.path.name)
    seconds = time.perf_counter() - started
    sweep = json.loads((local.parent / f"{local.name}__{category}.json").read_text())
    by_name = {record["image"]: record for record in sweep["images"]}
    labels = np.array([by_name[name]["label"] for name in names])
    types = np.array([by_name[name]["defect_type"] for name in names])
    patch = zscore(
        np.array([by_name[name]["scores"]["top5"] for name in names]),
        np.array(sweep["calibration"]["normal_scores"]),
    )
    rows: dict[str, dict[str, float]] = {"patch": {"all": roc_auc_score(labels, patch)}}
    for variant, keys in VARIANTS.items():
        train_views, test_views = stacked(train, keys), stacked(test, keys)
        gaussian = LedoitWolf().fit(train_views.reshape(-1, train_views.shape[2]))
        glob = zscore(worst_view_distance(gaussian, test_views), out_of_fold(train_views))
        for fusion, combine in FUSIONS.items():
            score = combine(patch, glob)
            row = rows.setdefault(f"{variant}: {fusion}", {"all": roc_auc_score(labels, score)})
            for defect in sorted(set(types) - {"good"}):
                chosen = (types == defect) | (labels == 0)
                row[defect] = roc_auc_score(labels[chosen], score[chosen])
                rows["patch"][defect] = roc_auc_score(labels[chosen], patch[chosen])
    return {"category": category, "descriptor_seconds": round(seconds, 1), "image_auroc": rows}


def markdown(results: list[dict], command: str) -> str:
    categories = [result["category"] for result in results]
    lines = [
        "# A global (image-level) score beside the patch score: image AUROC on the validation halves",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M')}. Patch score: the defaults' committed validation sweep.",
        "",
    ]
    base = [result["image_auroc"]["patch"]["all"] for result in results]
    rows = []
    for name in results[0]["image_auroc"]:
        values = [result["image_auroc"][name]["all"] for result in results]
        worst = min(v - b for v, b in zip(values, base, strict=True))
        rows.append([name, *(f"{v:.3f}" for v in values), f"{np.mean(values):.3f}", f"{worst:+.3f}"])
    lines += markdown_table(["score", *categories, "mean", "worst change"], rows)
    tile = next((r for r in results if r["category"] == "magnetic_tile"), None)
    if tile is not None:
        defects = [key for key in tile["image_auroc"]["patch"] if key != "all"]
        lines += ["", "## Magnetic tile per defect type", ""]
        lines += markdown_table(
            ["score", *defects],
            [[name, *(f"{row[d]:.3f}" for d in defects)] for name, row in tile["image_auroc"].items()],
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--categories", nargs="+", default=list(SUITE))
    parser.add_argument("--local", default="bench/results/validation/budget147k-layers4-10", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    command = "python bench/global_score_validation.py " + " ".join(
        f"--{key} {value}" for key, value in (("json", args.json), ("md", args.md)) if value
    )
    results = [run_category(args.data, category, args.local) for category in args.categories]
    text = markdown(results, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
