"""PatchCore-style memory-bank detector: works from a single normal shot up to hundreds of images.

Fitting collects locally aggregated patch features of the normal images, keeps a greedy coreset of them as the
memory bank, and sets its own thresholds by scoring normal images against the bank with their own patches
left out (so no images need to be set aside). With very few shots the bank is enlarged with flipped and
rotated copies of the shots, as the few-shot decoder of AnomalyGPT does.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from anomalens.models.backbones import build_feature_extractor
from anomalens.models.base import BaseDetector, View
from anomalens.models.patchcore.coreset import greedy_coreset
from anomalens.models.patchcore.torch_model import PatchCoreModel
from anomalens.postprocessing.thresholds import thresholds_from_normal
from anomalens.progress import track


def dihedral_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a square view (the original first)."""
    rotations = [np.rot90(pixels, k) for k in range(4)]
    return [np.ascontiguousarray(v) for v in rotations + [np.fliplr(r) for r in rotations]]


class PatchCore(BaseDetector):
    """Memory-bank anomaly detector (PatchCore) on a frozen ImageNet backbone.

    Parameters
    ----------
    backbone, layers: feature extractor name and the layers whose features are concatenated.
    coreset_ratio: fraction of all normal patches kept in the memory bank (greedy k-center).
    min_bank_size: the bank keeps at least this many patches (all of them when there are fewer), so that
        few-shot banks are not thinned out.
    augment_below: with fewer normal images than this, flips and rotations of each are added to the bank.
    false_alarm_rate: expected share of normal images flagged at the automatic threshold.
    calibration_images: at most this many normal images are scored (leave-one-out) to set thresholds.
    """

    name = "patchcore"

    def __init__(self, backbone: str = "efficientnet_lite0", layers: tuple[str, ...] = ("blocks.4", "blocks.10"),
                 image_size: int = 256, coreset_ratio: float = 0.1, min_bank_size: int = 4096,
                 neighbourhood: int = 3, smoothing_sigma: float = 4.0, augment_below: int = 8,
                 false_alarm_rate: float = 0.01, calibration_images: int = 60,
                 tile_size: int | None = None, tile_overlap: int = 32, batch_size: int = 8, seed: int = 0,
                 progress: bool = False):
        super().__init__(image_size=image_size, tile_size=tile_size, tile_overlap=tile_overlap,
                         batch_size=batch_size, seed=seed, progress=progress)
        self.backbone = backbone
        self.layers = tuple(layers)
        self.coreset_ratio = coreset_ratio
        self.min_bank_size = min_bank_size
        self.neighbourhood = neighbourhood
        self.smoothing_sigma = smoothing_sigma
        self.augment_below = augment_below
        self.false_alarm_rate = false_alarm_rate
        self.calibration_images = calibration_images
        self.model_: PatchCoreModel | None = None
        self.info_: dict[str, Any] = {}

    def _build_model(self) -> PatchCoreModel:
        extractor = build_feature_extractor(self.backbone, self.layers)
        return PatchCoreModel(extractor, self.layers, self.image_size, self.neighbourhood,
                              self.smoothing_sigma).eval()

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, images: Iterable[np.ndarray]) -> "PatchCore":
        torch.manual_seed(self.seed)
        views, groups = [], []
        for index, image in enumerate(images):
            for view in self._views(image):
                views.append(view)
                groups.append(index)
        n_images = (groups[-1] + 1) if groups else 0
        if n_images == 0:
            raise ValueError("fit needs at least one normal image")
        augmented = n_images < self.augment_below
        if augmented:
            views = [View(v.tile, p) for v in views for p in dihedral_views(v.pixels)]
            groups = [g for g in groups for _ in range(8)]
            # with one shot, leave-one-out must leave out single views rather than the only image
            if n_images == 1:
                groups = list(range(len(views)))

        self.model_ = self._build_model()
        embeddings = self._embed_all(views)  # [V, D, h, w]
        n_views, dim, height, width = embeddings.shape
        patches = embeddings.permute(0, 2, 3, 1).reshape(-1, dim)
        patch_groups = torch.tensor(groups).repeat_interleave(height * width)

        bank_size = min(len(patches), max(self.min_bank_size, int(round(self.coreset_ratio * len(patches)))))
        chosen = greedy_coreset(patches, bank_size, seed=self.seed)
        self.model_.set_memory_bank(patches[chosen])
        self.thresholds_ = self._calibrate(embeddings, torch.tensor(groups), patch_groups[chosen])
        self.info_ = {"n_images": n_images, "n_views": n_views, "augmented_views": augmented,
                      "n_patches": int(len(patches)), "bank_size": int(bank_size), "feature_dim": dim,
                      "feature_grid": [height, width]}
        return self

    def _embed_all(self, views: list[View]) -> torch.Tensor:
        assert self.model_ is not None
        chunks = []
        with torch.inference_mode():
            batches = list(self._batches(views))
            for batch in track(batches, "extracting features", enabled=self.progress):
                chunks.append(self.model_.embed(self._to_tensor(batch)))
        return torch.cat(chunks)

    def _calibrate(self, embeddings: torch.Tensor, view_groups: torch.Tensor, bank_groups: torch.Tensor):
        """Score normal views against the bank without their own patches; thresholds from those scores."""
        assert self.model_ is not None
        unique_groups = torch.unique(view_groups)
        if len(unique_groups) > self.calibration_images:
            pick = np.linspace(0, len(unique_groups) - 1, self.calibration_images).round().astype(int)
            unique_groups = unique_groups[pick]
        scores, maps = [], []
        with torch.inference_mode():
            for group in unique_groups:
                excluded = bank_groups == group
                if bool(excluded.all()):
                    continue
                group_maps = self.model_.smoother(
                    self.model_.patch_scores(embeddings[view_groups == group], excluded))
                scores.append(float(group_maps.max()))
                maps.append(group_maps.numpy())
        return thresholds_from_normal(scores, maps, self.false_alarm_rate)

    # -- inference and persistence -----------------------------------------------------------------------
    def _score_views(self, batch: torch.Tensor) -> torch.Tensor:
        assert self.model_ is not None
        return self.model_(batch)

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.model_ is None:
            self.model_ = self._build_model()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.model_ is not None
        return {"memory_bank": self.model_.memory_bank}

    def _load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        self.model_ = self._build_model()
        self.model_.set_memory_bank(tensors["memory_bank"])
        self.info_ = info

    def _info(self) -> dict[str, Any]:
        return self.info_
