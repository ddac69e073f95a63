"""Large, faint defects: does a coarse-scale memory bank help? A measurement on a validation half.

PatchCore's fine patch embeddings (3x3 neighbourhoods at stride 8) are averaged over KxK cells (stride K/2)
into coarse embeddings; a second bank (greedy coreset of 8192) of those from every other training image scores
the validation half. Printed per map (fine alone, coarse alone, their sum, each divided by its first image's
median): image AUROC, pixel AUROC, AUPRO@30 %, AUPRO@5 %, and image / pixel AUROC per defect type.

    .venv/bin/python bench/coarse_scale_validation.py magnetic_tile 4 | tee bench/results/coarse_scale_validation.txt
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from anomalens.api import training_paths
from anomalens.data import iter_images, mvtec_samples, read_mask
from anomalens.data.splits import select_half
from anomalens.evaluation.metrics import image_auroc, pixel_aupro, pixel_auroc
from anomalens.models import PatchCore
from anomalens.models.patchcore.coreset import greedy_coreset
from anomalens.models.patchcore.torch_model import nearest_distances

cat = sys.argv[1]
K = int(sys.argv[2]) if len(sys.argv) > 2 else 4
root = "../shared/data"
paths = training_paths(root, cat)
det = PatchCore(calibration_images=20, simulated_images=5).fit(image for _, image in iter_images(paths))
m = det.model_


def coarse(emb):  # [B,D,h,w] -> [B,D,h',w'] averaged over KxK cells
    return F.avg_pool2d(emb, K, stride=max(1, K // 2), padding=K // 2, count_include_pad=False)


rows = []
with torch.inference_mode():
    for _, image in iter_images(paths[::2]):
        views = det._views(image)
        e = m.embed(det._to_tensor([v.pixels for v in views]))
        c = coarse(e)
        rows.append(c.permute(0, 2, 3, 1).reshape(-1, c.shape[1]))
    bank = torch.cat(rows)
    keep = greedy_coreset(bank, min(len(bank), 8192), projection_dim=32)
    bank = bank[keep]
    norms = (bank * bank).sum(1)
samples = select_half(mvtec_samples(root, cat, "test"), "validation")
res = {"fine": [], "coarse": [], "sum": []}
masks, labels, types = [], [], []
fine_norm = coarse_norm = None
with torch.inference_mode():
    for s, image in iter_images(samples):
        views = det._views(image)
        x = det._to_tensor([v.pixels for v in views])
        e = m.embed(x)
        fine = m.patch_scores(e)
        c = coarse(e)
        cd = nearest_distances(c.permute(0, 2, 3, 1).reshape(-1, c.shape[1]), bank, norms).view(
            c.shape[0], 1, c.shape[2], c.shape[3]
        )
        cd = F.interpolate(cd, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        if fine_norm is None:
            fine_norm, coarse_norm = float(fine.median()), float(cd.median())
        for name, patch in (("fine", fine), ("coarse", cd), ("sum", fine / fine_norm + cd / coarse_norm)):
            vm = m.smoother(patch)
            amap = det._image_map(list(vm.numpy()), views, image.shape[:2])
            flat = vm.flatten(1)
            k = max(1, round(0.05 * flat.shape[1]))
            res[name].append((float(flat.topk(k, 1).values.mean(1).max()), amap))
        masks.append(read_mask(s.mask_path, image.shape[:2]) if s.mask_path else np.zeros(image.shape[:2], bool))
        labels.append(s.label)
        types.append(s.defect_type)
labels = np.array(labels)
types = np.array(types)
for name, items in res.items():
    scores = np.array([a for a, _ in items])
    maps = [b for _, b in items]
    line = (
        f"{cat} K={K} {name}: image {image_auroc(labels, scores):.3f} pixel {pixel_auroc(masks, maps):.3f} "
        f"aupro {pixel_aupro(masks, maps):.3f} aupro5 {pixel_aupro(masks, maps, 0.05):.3f}"
    )
    for t in sorted(set(types) - {"good"}):
        idx = [i for i in range(len(types)) if types[i] in ("good", t)]
        subset_pixels = pixel_auroc([masks[i] for i in idx], [maps[i] for i in idx])
        line += f" | {t} img {image_auroc(labels[idx], scores[idx]):.3f} px {subset_pixels:.3f}"
    print(line, flush=True)
