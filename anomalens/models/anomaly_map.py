"""Turning coarse patch scores into a smooth pixel map, shared by all detectors.

Pure torch operations only, so the same code runs in training, inference and ONNX export.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


class MapSmoother(torch.nn.Module):
    """Upsample [B,1,h,w] patch scores to [B,S,S] and blur them with a Gaussian (separable, reflect padded).

    Blurring removes the blocky look of patch-level scores; PatchCore uses sigma 4 at 224-256 px input.
    """

    def __init__(self, output_size: int, sigma: float = 4.0):
        super().__init__()
        self.output_size = output_size
        self.sigma = sigma
        self.register_buffer("kernel", gaussian_kernel_1d(sigma) if sigma > 0 else torch.ones(1), persistent=False)

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        maps = F.interpolate(
            patch_scores, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False
        )
        if self.sigma > 0:
            radius = self.kernel.numel() // 2
            maps = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
            maps = F.conv2d(maps, self.kernel.view(1, 1, 1, -1))
            maps = F.conv2d(maps, self.kernel.view(1, 1, -1, 1))
        return maps[:, 0]
