"""PatchCore as a pure ``nn.Module``: patch embedding, nearest-neighbour scoring against a memory bank.

The training loop (feature collection, coreset, thresholds) lives in ``detector.py``; keeping this module free
of it means export and tests can use the network alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from anomalens.models.anomaly_map import MapSmoother
from anomalens.models.backbones import FeatureExtractor

QUERY_CHUNK = 1024
BANK_CHUNK = 512
PADDINGS = ("zero", "replicate")


# added to a squared distance, it rules a bank row out without overflowing the sum
FAR = torch.finfo(torch.float32).max / 4


def nearest_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_norms: torch.Tensor | None = None,
    excluded: torch.Tensor | None = None,
    out_of_reach: Callable[[slice], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Euclidean distance from each query row [Q, D] to its nearest bank row [M, D].

    ``excluded`` is an optional boolean [M] mask of bank rows to ignore (used for leave-one-out scoring of
    training images); ``out_of_reach(rows)`` an optional boolean [len(rows), M] mask of bank rows that the queries
    ``rows`` may not use (learned patches far from the query's place). Queries are processed in chunks so memory
    stays bounded for large banks; an empty bank leaves every distance infinite.
    """
    out = torch.full((queries.shape[0],), float("inf"), dtype=torch.float32, device=queries.device)
    if len(bank) == 0:
        return out
    if bank_norms is None:
        bank_norms = (bank * bank).sum(dim=1)
    penalty = None if excluded is None else excluded.to(queries.device).float() * FAR
    for start in range(0, queries.shape[0], QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        chunk_penalty = penalty
        if out_of_reach is not None:
            reach = out_of_reach(rows).float() * FAR
            chunk_penalty = reach if penalty is None else reach + penalty
        out[rows] = squared_nearest(queries[rows], bank, bank_norms, chunk_penalty)
    return out.clamp_min(0).sqrt()


def squared_nearest(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_norms: torch.Tensor,
    penalty: torch.Tensor | None = None,
    bank_chunk: int | None = BANK_CHUNK,
) -> torch.Tensor:
    """Squared distance from each query [Q, D] to its nearest bank row [M, D], ``penalty`` ([M] or [Q, M]) added
    to the squared distances first: ||b||^2 - 2 q.b in one BLAS call per ``bank_chunk`` rows of the bank (None:
    one call for the whole bank), and ||q||^2, the same along a row, added after the minimum. Chunks keep each
    product's output in cache for the minimum that reads it (bench/search_kernel.py chose their size)."""
    step = bank.shape[0] if bank_chunk is None else bank_chunk
    nearest = None
    for start in range(0, bank.shape[0], step):
        rows = slice(start, start + step)
        partial = torch.addmm(bank_norms[rows], queries, bank[rows].T, alpha=-2.0)
        if penalty is not None:
            partial += penalty[..., rows]
        least = partial.amin(dim=1)
        nearest = least if nearest is None else torch.minimum(nearest, least)
    assert nearest is not None, "an empty bank has no nearest row"
    return nearest + (queries * queries).sum(dim=1)


class PatchCoreModel(nn.Module):
    """Locally aware patch features from a frozen backbone, scored by distance to a memory bank of normals.

    Besides the fit's bank it keeps a bank of learned patches (from images an operator declared normal), each
    with its place in its image; a learned patch counts only for query patches within ``learned_reach`` (a
    fraction of the image's height and width) of that place.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        layers: tuple[str, ...],
        image_size: int,
        neighbourhood: int = 3,
        smoothing_sigma: float = 4.0,
        learned_reach: float = 0.1,
        padding: str = "zero",
    ):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"unknown neighbourhood padding {padding!r}; expected one of {PADDINGS}")
        self.extractor = extractor
        self.layers = tuple(layers)
        self.neighbourhood = neighbourhood
        self.padding = padding
        self.learned_reach = learned_reach
        self.smoother = MapSmoother(image_size, smoothing_sigma)
        self.register_buffer("memory_bank", torch.empty(0, self.embedding_dim))
        self.register_buffer("bank_norms", torch.empty(0))
        self.register_buffer("learned_bank", torch.empty(0, self.embedding_dim))
        self.register_buffer("learned_norms", torch.empty(0))
        self.register_buffer("learned_positions", torch.empty(0, 2))
        # a linear map applied to every embedding (a PCA, see set_reduction); empty: none
        self.register_buffer("reduction_mean", torch.empty(0))
        self.register_buffer("reduction", torch.empty(0, 0))

    @property
    def embedding_dim(self) -> int:
        return sum(self.extractor.channels[layer] for layer in self.layers)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] in [0,1] -> [B,d,h,w] patch embeddings at the finest requested layer's resolution."""
        return self.reduce_maps(self.features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] in [0,1] -> [B,D,h,w] patch features before any reduction: the layers' maps, each averaged
        over its neighbourhood, brought to the finest one's grid and stacked."""
        features = self.extractor(images)
        pooled = []
        target = None
        for layer in self.layers:
            fmap = features[layer]
            fmap = self._neighbourhood_average(fmap)
            if target is None:
                target = fmap.shape[-2:]
            elif fmap.shape[-2:] != target:
                fmap = F.interpolate(fmap, size=target, mode="bilinear", align_corners=False)
            pooled.append(fmap)
        return torch.cat(pooled, dim=1)

    @property
    def has_reduction(self) -> bool:
        return len(self.reduction_mean) > 0

    def reduce(self, features: torch.Tensor) -> torch.Tensor:
        """[..., D] features -> [..., d]: centred and projected on the reduction's components where one is set."""
        if not self.has_reduction:
            return features
        return (features - self.reduction_mean) @ self.reduction

    def reduce_maps(self, features: torch.Tensor) -> torch.Tensor:
        """[B,D,h,w] feature maps -> [B,d,h,w], reduced where a reduction is set."""
        if not self.has_reduction:
            return features
        return self.reduce(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def set_reduction(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        """From now on embed onto ``components`` [D, d] about ``mean`` [D]; the banks start again, empty, at the
        new width."""
        self.reduction_mean = mean.contiguous()
        self.reduction = components.contiguous()
        width = components.shape[1]
        self.set_memory_bank(components.new_empty(0, width))
        self.set_learned_bank(components.new_empty(0, width), components.new_empty(0, 2))

    def _neighbourhood_average(self, fmap: torch.Tensor) -> torch.Tensor:
        """Each cell averaged with its neighbours: context without losing resolution. Zero padding damps border
        cells (without any padding a border cell averages fewer cells and over-weights a nearby defect);
        replicate padding keeps a border cell's own level."""
        half = self.neighbourhood // 2
        if self.padding == "replicate":
            return F.avg_pool2d(F.pad(fmap, (half, half, half, half), mode="replicate"), self.neighbourhood, stride=1)
        return F.avg_pool2d(fmap, self.neighbourhood, stride=1, padding=half, count_include_pad=True)

    def set_memory_bank(self, bank: torch.Tensor) -> None:
        self.memory_bank = bank.contiguous()
        self.bank_norms = (bank * bank).sum(dim=1)

    def set_learned_bank(self, patches: torch.Tensor, positions: torch.Tensor) -> None:
        self.learned_bank = patches.contiguous()
        self.learned_norms = (patches * patches).sum(dim=1)
        self.learned_positions = positions.contiguous()

    def learned_distances(self, queries: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[Q] distance of each query [Q, D] at ``positions`` [Q, 2] to the nearest learned patch within reach."""

        def out_of_reach(rows: slice) -> torch.Tensor:
            offsets = (positions[rows, None, :] - self.learned_positions[None, :, :]).abs()
            return (offsets > self.learned_reach).any(dim=2)

        return nearest_distances(queries, self.learned_bank, self.learned_norms, out_of_reach=out_of_reach)

    def patch_scores(
        self, embeddings: torch.Tensor, excluded: torch.Tensor | None = None, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B,D,h,w] embeddings -> [B,1,h,w] nearest-neighbour distances; with the patches' ``positions``
        [B*h*w, 2] the learned patches within reach count too."""
        batch, dim, height, width = embeddings.shape
        queries = embeddings.permute(0, 2, 3, 1).reshape(-1, dim)
        distances = nearest_distances(queries, self.memory_bank, self.bank_norms, excluded)
        if positions is not None and len(self.learned_bank):
            distances = torch.minimum(distances, self.learned_distances(queries, positions.to(queries.device)))
        return distances.view(batch, 1, height, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] -> [B,S,S] smoothed anomaly maps, from the fit's bank alone."""
        return self.smoother(self.patch_scores(self.embed(images)))


class PatchCoreFeatures(nn.Module):
    """The model's patch features alone (:meth:`PatchCoreModel.features`), for a runtime of their own."""

    def __init__(self, model: PatchCoreModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)


class PatchCoreExport(nn.Module):
    """The network for ONNX export: embedding, the search of the fit's bank and smoothing, [B,3,S,S] -> [B,S,S].

    The search takes all the batch's patches at once (a loop over them, exported, would keep the example's
    length), one matrix product per chunk of the constant bank, so its memory grows with the batch; learned
    patches are left out (their places are no input of the graph).
    """

    def __init__(self, model: PatchCoreModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = self.model.embed(images)
        batch, dim, height, width = embeddings.shape
        queries = embeddings.permute(0, 2, 3, 1).reshape(-1, dim)
        squared = squared_nearest(queries, self.model.memory_bank, self.model.bank_norms)
        return self.model.smoother(squared.clamp_min(0).sqrt().view(batch, 1, height, width))
