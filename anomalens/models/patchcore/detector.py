"""PatchCore-style memory-bank detector: works from a single normal shot up to hundreds of images.

Fitting collects locally aggregated patch features of the normal images, keeps a greedy coreset of them as the
memory bank, and sets its own thresholds by scoring normal images against the bank with their own patches
left out (so no images need to be set aside). With very few shots the bank is enlarged with flipped and
rotated copies of the shots, as the few-shot decoder of AnomalyGPT does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from anomalens.data.scale import DEFAULT_PIXEL_BUDGET
from anomalens.models.backbones import build_feature_extractor
from anomalens.models.base import BaseDetector, View, flush_denormals
from anomalens.models.calibration import calibrate
from anomalens.models.patchcore.coreset import greedy_coreset
from anomalens.models.patchcore.torch_model import PatchCoreExport, PatchCoreModel
from anomalens.progress import track
from anomalens.types import Thresholds


def dihedral(pixels: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square HxWxC view; transform 0 is the identity."""
    rotated = np.rot90(pixels, transform % 4)
    return np.ascontiguousarray(np.fliplr(rotated) if transform >= 4 else rotated)


def dihedral_grid(grid: torch.Tensor, transform: int) -> torch.Tensor:
    """The same transform as ``dihedral`` applied to [V, h, w] grids of patch labels."""
    rotated = torch.rot90(grid, transform % 4, dims=(1, 2))
    return torch.flip(rotated, dims=(2,)) if transform >= 4 else rotated


class PatchCore(BaseDetector):
    """Memory-bank anomaly detector (PatchCore) on a frozen ImageNet backbone.

    Parameters
    ----------
    backbone, layers: feature extractor name and the layers whose features are concatenated (blocks 4 and 10
        of Lite0, strides 8 and 16: chosen on the suite's validation halves, where adding block 14 left image
        AUROC unchanged, lowered AUPRO and doubled the time; bench/results/choose_defaults.md).
    image_size, tile_size, pixel_budget: the working scale; by default (``image_size`` None) chosen at fit time
        from the training images (``anomalens.data.scale``: native resolution up to ``pixel_budget`` pixels,
        long frames tiled), else a square network input of ``image_size`` (tiles of ``tile_size`` pixels).
    coreset_ratio: fraction of all normal patches kept in the memory bank (greedy k-center), at most
        ``max_bank_size`` patches; with more than ``coreset_candidates`` patches the coreset is chosen from a
        random subset of that many, so that fit time stays bounded at high resolutions.
    coreset_projection: random projection size used only to measure distances during coreset selection.
    min_bank_size: the bank keeps at least this many patches (all of them when there are fewer), so that
        few-shot banks are not thinned out.
    augment_below: with fewer normal images than this, flips and rotations of each are added to the bank.
    max_false_alarm_rate: the largest share of normal images the automatic threshold may flag, bounded on the
        held-out normals (see ``postprocessing/thresholds.py``).
    calibration_images: at most this many normal images are scored (leave-one-out) to set thresholds.
    max_learned_patches: at most this many patches of one image declared normal after the fit (``learn_normal``)
        are learned; more are thinned by the same greedy coreset as the fit's.
    learned_reach: a learned patch covers patches within this fraction of the image's height and width of where
        it was learned, so that a defect marked normal by mistake is still found elsewhere.
    calibration: "simulated" sets thresholds between those normal scores and scores of up to
        ``simulated_images`` of the same images with simulated defects (``simulated_per_image`` each, kinds
        cycled), never below the false-alarm bound; "normal" uses the false-alarm bound alone.
    """

    name = "patchcore"

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: tuple[str, ...] = ("blocks.4", "blocks.10"),
        image_size: int | None = None,
        coreset_ratio: float = 0.02,
        min_bank_size: int = 4096,
        max_bank_size: int = 16384,
        coreset_candidates: int = 400_000,
        coreset_projection: int = 32,
        neighbourhood: int = 3,
        smoothing_sigma: float = 4.0,
        augment_below: int = 8,
        max_false_alarm_rate: float = 0.05,
        calibration_images: int = 200,
        calibration: str = "simulated",
        simulated_images: int = 60,
        simulated_per_image: int = 2,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        score_top_fraction: float = 0.05,
        batch_size: int = 8,
        max_learned_patches: int = 1024,
        learned_reach: float = 0.1,
        seed: int = 0,
        progress: bool = False,
        device: str = "auto",
    ):
        super().__init__(
            image_size=image_size,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            pixel_budget=pixel_budget,
            score_top_fraction=score_top_fraction,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            device=device,
        )
        self.backbone = backbone
        self.layers = tuple(layers)
        self.coreset_ratio = coreset_ratio
        self.min_bank_size = min_bank_size
        self.max_bank_size = max_bank_size
        self.coreset_candidates = coreset_candidates
        self.coreset_projection = coreset_projection
        self.neighbourhood = neighbourhood
        self.smoothing_sigma = smoothing_sigma
        self.augment_below = augment_below
        self.max_false_alarm_rate = max_false_alarm_rate
        self.calibration_images = calibration_images
        self.calibration = calibration
        self.simulated_images = simulated_images
        self.simulated_per_image = simulated_per_image
        self.max_learned_patches = max_learned_patches
        self.learned_reach = learned_reach
        self.model_: PatchCoreModel | None = None
        # the mark that taught each learned patch (see learn_normal)
        self.learned_marks_ = torch.empty(0, dtype=torch.int32)
        self.info_: dict[str, Any] = {}

    def _build_model(self) -> PatchCoreModel:
        extractor = build_feature_extractor(self.backbone, self.layers)
        return (
            PatchCoreModel(
                extractor, self.layers, self.input_size, self.neighbourhood, self.smoothing_sigma, self.learned_reach
            )
            .eval()
            .to(self.torch_device)
        )

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, images: Iterable[np.ndarray]) -> PatchCore:
        torch.manual_seed(self.seed)
        views, owners = [], []
        for index, image in enumerate(self._start_fit(images)):
            for view in self._views(image):
                views.append(view)
                owners.append(index)
        n_images = (owners[-1] + 1) if owners else 0
        if n_images == 0:
            raise ValueError("fit needs at least one normal image")

        self.model_ = self._build_model()
        # features are kept once, as patch rows [V, h, w, D]: the largest array of a fit
        patch_grid = self._embed_all([v.pixels for v in views])
        n_views, height, width, dim = patch_grid.shape
        embeddings = patch_grid.permute(0, 3, 1, 2)  # [V, D, h, w] view for scoring, no copy
        groups = self._leave_out_groups(torch.tensor(owners), n_images, height, width)
        patches = [patch_grid.view(-1, dim)]
        patch_groups = [groups.reshape(-1)]
        augmented = n_images < self.augment_below
        if augmented:
            for transform in range(1, 8):
                patches.append(self._embed_all([dihedral(v.pixels, transform) for v in views]).view(-1, dim))
                patch_groups.append(dihedral_grid(groups, transform).reshape(-1))
        patches = torch.cat(patches) if augmented else patches[0]
        patch_groups = torch.cat(patch_groups)

        chosen = self._choose_bank(patches)
        bank_size = len(chosen)
        self.model_.set_memory_bank(patches[chosen])
        self.thresholds_ = self._calibrate(views, embeddings, groups, patch_groups[chosen])
        self.info_ = {
            "n_images": n_images,
            "n_views": n_views,
            "augmented_views": augmented,
            "n_patches": int(len(patches)),
            "bank_size": int(bank_size),
            "feature_dim": dim,
            "feature_grid": [height, width],
        }
        return self

    def _choose_bank(self, patches: torch.Tensor) -> torch.Tensor:
        """Indices of the patches kept as the memory bank."""
        wanted = max(self.min_bank_size, min(self.max_bank_size, int(round(self.coreset_ratio * len(patches)))))
        candidates = torch.arange(len(patches))
        if len(patches) > self.coreset_candidates:
            generator = torch.Generator().manual_seed(self.seed)
            candidates = torch.randperm(len(patches), generator=generator)[: self.coreset_candidates]
        chosen = greedy_coreset(
            patches[candidates], min(wanted, len(candidates)), projection_dim=self.coreset_projection, seed=self.seed
        )
        return candidates[chosen]

    @staticmethod
    def _leave_out_groups(owners: torch.Tensor, n_images: int, height: int, width: int) -> torch.Tensor:
        """Which patches are left out together when scoring normals for calibration: [V, h, w] group ids.

        Normally a whole image; with a single shot there is no other image, so each quarter of every view is
        scored against the rest (leaving out only its own flipped copies would compare it with itself).
        """
        n_views = len(owners)
        if n_images > 1:
            return owners.view(-1, 1, 1).expand(n_views, height, width).clone()
        rows = (torch.arange(height) >= height // 2).long().view(-1, 1)
        cols = (torch.arange(width) >= width // 2).long().view(1, -1)
        return (2 * rows + cols).unsqueeze(0) + 4 * torch.arange(n_views).view(-1, 1, 1)

    def _embed_all(self, pixels: list[np.ndarray]) -> torch.Tensor:
        """Patch features of all views as [V, h, w, D], written batch by batch into one array."""
        assert self.model_ is not None
        out: torch.Tensor | None = None
        with torch.inference_mode():
            starts = range(0, len(pixels), self.batch_size)
            for start in track(starts, "extracting features", enabled=self.progress):
                batch = self._to_tensor(pixels[start : start + self.batch_size]).to(self.torch_device)
                features = self.model_.embed(batch).permute(0, 2, 3, 1)
                if out is None:
                    out = torch.empty((len(pixels), *features.shape[1:]), device=features.device)
                out[start : start + len(features)] = features
        assert out is not None
        return out

    def _calibrate(
        self, views: list[View], embeddings: torch.Tensor, groups: torch.Tensor, bank_groups: torch.Tensor
    ) -> Thresholds:
        """Score normal views against the bank without their own group's patches, and (by default) the same
        views with simulated defects put in; thresholds from those scores."""
        assert self.model_ is not None
        model = self.model_
        unique_groups = torch.unique(groups)
        if len(unique_groups) > self.calibration_images:
            pick = np.linspace(0, len(unique_groups) - 1, self.calibration_images).round().astype(int)
            unique_groups = unique_groups[pick]
        # a group whose patches fill the whole bank (one view, no coreset) has nothing left to compare with
        units = [int(g) for g in unique_groups if not bool((bank_groups == g).all())]
        members = {g: torch.nonzero((groups == g).flatten(1).any(dim=1)).flatten() for g in units}

        def normal_maps(group: int) -> torch.Tensor:
            return model.smoother(model.patch_scores(embeddings[members[group]], bank_groups == group))

        def anomaly_map(group: int, pixels: np.ndarray) -> torch.Tensor:
            batch = self._to_tensor([pixels]).to(self.torch_device)
            return model.smoother(model.patch_scores(model.embed(batch), bank_groups == group))

        return calibrate(
            units,
            lambda g: [int(i) for i in members[g]],
            [v.pixels for v in views],
            normal_maps,
            anomaly_map,
            self.view_scores,
            self.calibration,
            self.simulated_per_image,
            self.max_false_alarm_rate,
            self.seed,
            simulated_units=self.simulated_images,
        )

    # -- learning from operators ----------------------------------------------------------------------------
    def learn_normal(self, image: np.ndarray, mark: int) -> int:
        """Teach the model that ``image`` is normal: its patches that the banks do not cover (nearest distance at
        or above the pixel threshold) are learned, tagged with ``mark`` (a positive id) so that ``forget`` can
        take them out again, each with its place in the image. Every patch of the image then scores below the
        pixel threshold, so the image and near-duplicates of it pass; a learned patch counts only within
        ``learned_reach`` of its place, so a defect learned by mistake is still found elsewhere. Returns how many
        patches were learned. Thresholds are the caller's to re-check (``anomalens.learning``)."""
        if mark < 1:
            raise ValueError("mark ids are positive")
        self._check_fitted()
        assert self.model_ is not None and self.thresholds_ is not None
        flush_denormals()
        views = self._views(image)
        grid = self._embed_all([view.pixels for view in views])  # [V, h, w, D]
        patches = grid.flatten(0, 2)
        positions = torch.cat([view.patch_positions(grid.shape[1], grid.shape[2]) for view in views])
        with torch.inference_mode():
            distances = self.model_.patch_scores(grid.permute(0, 3, 1, 2), positions=positions).flatten()
        uncovered = torch.nonzero(distances >= self.thresholds_.pixel).flatten()
        if len(uncovered) > self.max_learned_patches:
            keep = greedy_coreset(patches[uncovered], self.max_learned_patches, self.coreset_projection, self.seed)
            uncovered = uncovered[keep]
        if len(uncovered):
            self.model_.set_learned_bank(
                torch.cat([self.model_.learned_bank, patches[uncovered]]),
                torch.cat([self.model_.learned_positions, positions[uncovered].to(self.torch_device)]),
            )
            self.learned_marks_ = torch.cat(
                [self.learned_marks_, torch.full((len(uncovered),), mark, dtype=torch.int32)]
            )
        return len(uncovered)

    def forget(self, marks: Iterable[int]) -> int:
        """Take the patches that ``marks`` taught out again; returns how many were taken out."""
        assert self.model_ is not None
        taught = torch.isin(self.learned_marks_, torch.tensor(sorted(set(marks)), dtype=torch.int32))
        if taught.any():
            keep = (~taught).to(self.model_.learned_bank.device)
            self.model_.set_learned_bank(self.model_.learned_bank[keep], self.model_.learned_positions[keep])
            self.learned_marks_ = self.learned_marks_[~taught]
        return int(taught.sum())

    # -- inference and persistence -----------------------------------------------------------------------
    def _score_views(self, batch: torch.Tensor) -> torch.Tensor:
        assert self.model_ is not None
        return self.model_(batch)

    def _score_view_batch(self, pixels: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
        assert self.model_ is not None
        if not len(self.model_.learned_bank):
            return super()._score_view_batch(pixels, views)
        # learned patches count by place, which the exported graph does not know: PyTorch scores these models
        with torch.inference_mode():
            embeddings = self.model_.embed(pixels.to(self.torch_device))
            positions = torch.cat([view.patch_positions(*embeddings.shape[-2:]) for view in views])
            return self.model_.smoother(self.model_.patch_scores(embeddings, positions=positions)).cpu()

    def inference_module(self) -> torch.nn.Module:
        self._check_fitted()
        assert self.model_ is not None
        return PatchCoreExport(self.model_)

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.model_ is None:
            self.model_ = self._build_model()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.model_ is not None
        return {
            "memory_bank": self.model_.memory_bank,
            "learned_bank": self.model_.learned_bank,
            "learned_positions": self.model_.learned_positions,
            "learned_marks": self.learned_marks_,
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        self.model_ = self._build_model()
        self.model_.set_memory_bank(tensors["memory_bank"].to(self.torch_device))
        if "learned_bank" in tensors:  # absent from models saved before learning existed
            self.model_.set_learned_bank(
                tensors["learned_bank"].to(self.torch_device), tensors["learned_positions"].to(self.torch_device)
            )
            self.learned_marks_ = tensors["learned_marks"]
        self.info_ = info

    def _info(self) -> dict[str, Any]:
        return self.info_
