"""PatchCore-style memory-bank detector: works from a single normal shot up to hundreds of images.

Fitting collects locally aggregated patch features of the normal images, keeps a greedy coreset of them as the
memory bank, and sets its own thresholds by scoring normal images against the bank with their own patches
left out (so no images need to be set aside). With very few shots the bank is enlarged with flipped and
rotated copies of the shots, as the few-shot decoder of AnomalyGPT does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anomalens.data.scale import DEFAULT_PIXEL_BUDGET
from anomalens.models.backbones import build_feature_extractor
from anomalens.models.base import BaseDetector, View, flush_denormals
from anomalens.models.calibration import calibrate, spread_evenly
from anomalens.models.heap import release_free_memory
from anomalens.models.onnx_runtime import CpuGraphModule
from anomalens.models.patchcore.coreset import coreset_draws, greedy_coreset, k_center_greedy
from anomalens.models.patchcore.sampling import PatchPool, Reservoir
from anomalens.models.patchcore.torch_model import PatchCoreExport, PatchCoreFeatures, PatchCoreModel
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


def patch_keys(image: int, first_view: int, shape: tuple[int, ...]) -> torch.Tensor:
    """[v, h, w, 2] keys of the patches of an image's ``v`` views of ``h`` x ``w`` patches: the image's index, and
    4 x the view's index (counted over the fit) plus the quarter of the view the patch lies in."""
    views, height, width = shape
    rows = (torch.arange(height) >= height // 2).long().view(-1, 1)
    cols = (torch.arange(width) >= width // 2).long().view(1, -1)
    quarter = (2 * rows + cols).unsqueeze(0) + 4 * (first_view + torch.arange(views)).view(-1, 1, 1)
    return torch.stack([torch.full_like(quarter, image), quarter], dim=-1)


@dataclass(frozen=True)
class FitImage:
    """A training image during a fit, as far as it is kept: its patches' keys (``patch_keys``), their features
    [v, h, w, D] and its views' pixels."""

    keys: torch.Tensor
    features: torch.Tensor | None
    pixels: list[np.ndarray]

    @property
    def index(self) -> int:
        return int(self.keys[0, 0, 0, 0])

    def groups(self, key: int) -> list[tuple[int, torch.Tensor]]:
        """Each group of the image's patches that calibration leaves out together (by key ``key``), with the
        indices of the views it lies in."""
        labels = self.keys[..., key]
        return [
            (int(group), torch.nonzero((labels == group).flatten(1).any(dim=1)).flatten())
            for group in torch.unique(labels)
        ]


# on a CPU, PyTorch's backbone runs fastest per view in batches of 2 (larger ones leave the cache) and ONNX
# Runtime's about as fast from 2 to 8 (bench/results/embed_batch.md), while the search's products outgrow the
# cache with the batch (bench/results/predict_sub_batch.md): a fit and a prediction there run at most this many
# views through the network at a time
CPU_BATCH = 2
# how the fit holds the calibration normals' features until the bank is chosen: float16 takes half the memory
# of float32 and moves their scores, so the thresholds, by float16's rounding only (bench/results/fit_scale_held.md).
# The coreset's candidates stay float32: rounded, they change some of the coreset's picks, so the bank.
HELD_DTYPE = torch.float16
# a fit hands the memory it has freed back to the system every this many images (see heap.release_free_memory)
RELEASE_EVERY = 16


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
    neighbourhood, neighbourhood_padding: each patch feature is averaged over ``neighbourhood`` x
        ``neighbourhood`` cells; beyond the view's edge the average counts zeros (``"zero"``) or repeats the edge
        cell (``"replicate"``).
    feature_dims: if set, patch features are reduced to this many dimensions by a PCA of the coreset candidates
        (applied inside the network, so bank, thresholds, learned patches and exports all use it); the search's
        matrix product shrinks with the width, its minimum over the bank does not. None keeps the full width.
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
        feature_dims: int | None = None,
        neighbourhood: int = 3,
        neighbourhood_padding: str = "zero",
        smoothing_sigma: float = 4.0,
        augment_below: int = 8,
        max_false_alarm_rate: float = 0.05,
        calibration_images: int = 200,
        calibration: str = "simulated",
        simulated_images: int = 30,
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
        self.feature_dims = feature_dims
        self.neighbourhood = neighbourhood
        self.neighbourhood_padding = neighbourhood_padding
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
        self.patch_features_: CpuGraphModule | None = None
        # the mark that taught each learned patch (see learn_normal)
        self.learned_marks_ = torch.empty(0, dtype=torch.int32)
        self.info_: dict[str, Any] = {}

    def _new_model(self) -> None:
        """A new, empty network (``model_``) and the runtime of its patch features (``patch_features_``)."""
        extractor = build_feature_extractor(self.backbone, self.layers)
        self.model_ = (
            PatchCoreModel(
                extractor,
                self.layers,
                self.input_size,
                self.neighbourhood,
                self.smoothing_sigma,
                self.learned_reach,
                self.neighbourhood_padding,
            )
            .eval()
            .to(self.torch_device)
        )
        self.patch_features_ = CpuGraphModule(PatchCoreFeatures(self.model_), self.input_size, self.torch_device)

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] -> [B,d,h,w] embeddings on the model's device: the backbone and pooling through ONNX Runtime
        where it runs (``patch_features_``), the reduction, if any, in PyTorch."""
        assert self.model_ is not None and self.patch_features_ is not None
        return self.model_.reduce_maps(self.patch_features_(batch).to(self.torch_device))

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, images: Iterable[np.ndarray]) -> PatchCore:
        """Learn from a stream of normal images, holding at most ``coreset_candidates`` patches, the patches of
        ``calibration_images`` images and the pixels of ``simulated_images`` (uniform samples of the stream),
        so that memory stops growing with the number of images."""
        torch.manual_seed(self.seed)
        started = time.perf_counter()
        stream = self._start_fit(images)
        self._new_model()
        width = self.model_.embedding_dim
        if self.feature_dims is not None and not 0 < self.feature_dims <= width:
            # checked before the images are read, not after
            raise ValueError(f"feature_dims must lie between 1 and the features' {width} dimensions")
        pool = PatchPool(self.coreset_candidates, self.seed)
        normals: Reservoir[FitImage] = Reservoir(self.calibration_images, self.seed + 1)
        simulated: Reservoir[FitImage] = Reservoir(self.simulated_images, self.seed + 2)
        first: list[FitImage] = []  # the first few kept whole, to augment a few-shot bank
        n_images = n_views = 0
        for views, grid in track(self._embed_stream(stream), "extracting features", enabled=self.progress):
            keys = patch_keys(n_images, n_views, grid.shape[:3])
            pool.add(grid.flatten(0, 2), keys.flatten(0, 2))
            pixels = [view.pixels for view in views]
            normals.offer(lambda keys=keys, grid=grid: FitImage(keys, grid.to(HELD_DTYPE), []))
            simulated.offer(lambda keys=keys, pixels=pixels: FitImage(keys, None, pixels))
            if n_images < self.augment_below:
                first.append(FitImage(keys, grid.clone(), pixels))
            n_images, n_views = n_images + 1, n_views + len(views)
            if n_images == self.augment_below:
                first.clear()  # enough shots: the bank will not be augmented
            if n_images % RELEASE_EVERY == 0:
                release_free_memory()
        release_free_memory()
        if n_images == 0:
            raise ValueError("fit needs at least one normal image")
        height, width = grid.shape[1:3]
        key = 0 if n_images > 1 else 1  # leave out a whole image, or with a single shot a quarter of a view
        augmented = n_images < self.augment_below
        if augmented:
            self._add_symmetries(pool, first)

        read = time.perf_counter()
        if self.feature_dims is not None:
            self._fit_reduction(pool)
        chosen = self._choose_bank(pool)
        chose = time.perf_counter()
        bank_groups = pool.keys[chosen, key].to(self.torch_device)
        self.model_.set_memory_bank(self.model_.reduce(pool.rows(chosen).to(self.torch_device)))
        n_patches, n_candidates = int(pool.seen), len(pool)
        del pool  # the candidates' memory is free for the calibration
        self.thresholds_ = self._calibrate(list(normals), list(simulated), key, bank_groups)
        self.info_ = {
            "n_images": n_images,
            "n_views": n_views,
            "augmented_views": augmented,
            "n_patches": n_patches,
            "n_coreset_candidates": n_candidates,
            "bank_size": len(chosen),
            "feature_dim": self.model_.memory_bank.shape[1],
            "feature_grid": [height, width],
            # where the fit's time went: reading and embedding the images, the coreset, the thresholds
            "fit_seconds": {
                "features": round(read - started, 2),
                "coreset": round(chose - read, 2),
                "calibration": round(time.perf_counter() - chose, 2),
            },
        }
        return self

    def _embed_stream(self, images: Iterable[np.ndarray]) -> Iterator[tuple[list[View], torch.Tensor]]:
        """Each image's views and their patch features [v, h, w, D]; views of consecutive images share batches."""
        pending: list[list[View]] = []
        for image in images:
            pending.append(self._views(image))
            if sum(map(len, pending)) >= self._network_batch_size():
                yield from self._embed_images(pending)
                pending = []
        yield from self._embed_images(pending)

    def _embed_images(self, per_image: list[list[View]]) -> Iterator[tuple[list[View], torch.Tensor]]:
        if not per_image:
            return
        grid = self._embed_all([view.pixels for views in per_image for view in views])
        start = 0
        for views in per_image:
            yield views, grid[start : start + len(views)]
            start += len(views)

    def _add_symmetries(self, pool: PatchPool, images: list[FitImage]) -> None:
        """Add the patches of the flipped and rotated copies of ``images`` (a few-shot fit) to ``pool``."""
        pixels = [view for image in images for view in image.pixels]
        keys = torch.cat([image.keys for image in images])
        for transform in range(1, 8):
            grid = self._embed_all([dihedral(view, transform) for view in pixels])
            moved = torch.stack([dihedral_grid(keys[..., k], transform) for k in range(keys.shape[-1])], dim=-1)
            pool.add(grid.flatten(0, 2), moved.flatten(0, 2))

    def _fit_reduction(self, pool: PatchPool) -> None:
        """Reduce the model's embeddings to the ``feature_dims`` principal components of the pool's patches."""
        assert self.model_ is not None and self.feature_dims is not None
        mean, covariance = pool.moments()
        _, vectors = torch.linalg.eigh(covariance)  # eigenvalues in ascending order
        components = vectors[:, -self.feature_dims :].flip(1)
        self.model_.set_reduction(mean.float().to(self.torch_device), components.float().to(self.torch_device))

    def _choose_bank(self, pool: PatchPool) -> torch.Tensor:
        """Slots of the pool's patches kept as the memory bank, chosen by their distances after the model's
        reduction, if any (distances ignore its centring, so its components alone map the pool's rows)."""
        assert self.model_ is not None
        wanted = max(self.min_bank_size, min(self.max_bank_size, int(round(self.coreset_ratio * pool.seen))))
        projection, first = coreset_draws(len(pool), pool.dim, self.coreset_projection, self.seed)
        if self.model_.has_reduction:
            components = self.model_.reduction.cpu()
            # the same draw, seen in the reduced space: a reduction to all dimensions chooses the same bank
            projection = (
                components
                if components.shape[1] <= self.coreset_projection
                else components @ (components.T @ projection)
            )
        points = pool.projected(projection) if projection is not None else pool.rows(torch.arange(len(pool)))
        return k_center_greedy(points, first, min(wanted, len(pool)))

    def _network_batch_size(self) -> int:
        return min(self.batch_size, CPU_BATCH) if self.torch_device.type == "cpu" else self.batch_size

    def _embed_all(self, pixels: list[np.ndarray]) -> torch.Tensor:
        """Patch features of all views as [V, h, w, D], written batch by batch into one array."""
        assert self.model_ is not None
        out: torch.Tensor | None = None
        size = self._network_batch_size()
        with torch.inference_mode():
            for start in range(0, len(pixels), size):
                batch = self._to_tensor(pixels[start : start + size]).to(self.torch_device)
                features = self._embed(batch).permute(0, 2, 3, 1)
                if out is None:
                    out = torch.empty((len(pixels), *features.shape[1:]), device=features.device)
                out[start : start + len(features)] = features
        assert out is not None
        return out

    def _calibrate(
        self, normals: list[FitImage], simulated: list[FitImage], key: int, bank_groups: torch.Tensor
    ) -> Thresholds:
        """Score the sampled normal images against the bank without their own group's patches (``key``: which of
        the patch keys is the group), and (by default) the sampled images with simulated defects put in;
        thresholds from those scores."""
        assert self.model_ is not None
        model = self.model_
        # a group whose patches fill the whole bank (one view, no coreset) has nothing left to compare with
        in_bank = torch.unique(bank_groups).tolist()
        alone = in_bank[0] if len(in_bank) == 1 else None
        members = {group: (image, views) for image in normals for group, views in image.groups(key) if group != alone}
        units = spread_evenly(sorted(members), self.calibration_images)
        simulated_units = spread_evenly(
            [
                (group, [image.pixels[v] for v in views.tolist()])
                for image in sorted(simulated, key=lambda image: image.index)
                for group, views in image.groups(key)
                if group != alone
            ],
            self.simulated_images,
        )

        def normal_maps(group: int) -> torch.Tensor:
            image, views = members[group]
            assert image.features is not None
            embeddings = model.reduce(image.features[views].float()).permute(0, 3, 1, 2)
            return model.smoother(model.patch_scores(embeddings, bank_groups == group))

        def anomaly_map(group: int, pixels: np.ndarray) -> torch.Tensor:
            batch = self._to_tensor([pixels]).to(self.torch_device)
            return model.smoother(model.patch_scores(self._embed(batch), bank_groups == group))

        return calibrate(
            units,
            normal_maps,
            simulated_units,
            anomaly_map,
            self.view_scores,
            self.calibration,
            self.simulated_per_image,
            self.max_false_alarm_rate,
            self.seed,
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

    def _graph_scores(self) -> bool:
        # learned patches count by place, which the exported graph does not know: PyTorch scores those models
        return self.model_ is None or not len(self.model_.learned_bank)

    def _score_view_batch(self, pixels: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
        assert self.model_ is not None
        if self._graph_scores():
            return super()._score_view_batch(pixels, views)
        with torch.inference_mode():
            embeddings = self._embed(pixels)
            positions = torch.cat([view.patch_positions(*embeddings.shape[-2:]) for view in views])
            return self.model_.smoother(self.model_.patch_scores(embeddings, positions=positions)).cpu()

    def inference_module(self) -> torch.nn.Module:
        self._check_fitted()
        assert self.model_ is not None
        return PatchCoreExport(self.model_)

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.model_ is None:
            self._new_model()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.model_ is not None
        reduction = (
            {"reduction_mean": self.model_.reduction_mean, "reduction": self.model_.reduction}
            if self.model_.has_reduction
            else {}
        )
        return {
            "memory_bank": self.model_.memory_bank,
            "learned_bank": self.model_.learned_bank,
            "learned_positions": self.model_.learned_positions,
            "learned_marks": self.learned_marks_,
            **reduction,
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        self._new_model()
        if "reduction" in tensors:
            self.model_.set_reduction(
                tensors["reduction_mean"].to(self.torch_device), tensors["reduction"].to(self.torch_device)
            )
        self.model_.set_memory_bank(tensors["memory_bank"].to(self.torch_device))
        if "learned_bank" in tensors:  # absent from models saved before learning existed
            self.model_.set_learned_bank(
                tensors["learned_bank"].to(self.torch_device), tensors["learned_positions"].to(self.torch_device)
            )
            self.learned_marks_ = tensors["learned_marks"]
        self.info_ = info

    def _info(self) -> dict[str, Any]:
        return self.info_
