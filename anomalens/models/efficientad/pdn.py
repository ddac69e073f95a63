"""The networks of EfficientAD: patch description networks (PDN) and the autoencoder, as plain ``nn.Module``s.

A PDN is four (small) or six (medium) unpadded convolutions with two average-pooling steps: every output cell
sees a 33x33 pixel patch and nothing else, so a student PDN can only learn what normal *patches* look like.
Without padding no cell sees zeros in place of the image (padded PDNs produced false alarms all along the
border here), and the output is the valid part of the grid: 56x56 cells, on a 4-pixel stride, for a
256-pixel input, centred 4 cells in from each edge. The ``cpu`` size is small at half width, for 2-core line
PCs where small is too slow (a quarter of its FLOPs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (first width, second width) of each PDN size
PDN_WIDTHS = {"cpu": (64, 128), "small": (128, 256), "medium": (256, 512)}
STRIDE = 4  # input pixels per output cell
BORDER_CELLS = 4  # cells of the stride-4 grid that an unpadded PDN's output leaves out on each side


def pdn(size: str, out_channels: int) -> nn.Sequential:
    """A PDN of the given size mapping [B,3,S,S] to [B,out_channels,pdn_grid(S),pdn_grid(S)]."""
    if size not in PDN_WIDTHS:
        raise ValueError(f"unknown PDN size {size!r}; choose from {', '.join(PDN_WIDTHS)}")
    first, second = PDN_WIDTHS[size]
    head: list[nn.Module] = [
        nn.Conv2d(3, first, 4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2),
        nn.Conv2d(first, second, 4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2),
    ]
    if size == "medium":  # the paper's medium PDN: a 1x1 and a 3x3 layer at full width, then a 1x1 output
        tail: list[nn.Module] = [
            nn.Conv2d(second, second, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(second, second, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(second, out_channels, 4),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        ]
    else:
        tail = [nn.Conv2d(second, second, 3), nn.ReLU(inplace=True), nn.Conv2d(second, out_channels, 4)]
    return nn.Sequential(*head, *tail)


def pdn_grid(image_size: int) -> int:
    """Side of a PDN's output grid for a square input (the same for every size)."""
    side = (image_size - 3) // 2  # conv 4, avg-pool 2
    side = (side - 3) // 2
    return side - 2 - 3  # conv 3, conv 4


class Autoencoder(nn.Module):
    """Encodes the whole image into a 64-number code and decodes teacher-like features on the PDN grid.

    The bottleneck can hold the layout of a normal image but not its fine texture, so where the student's
    second half (which sees only local patches) disagrees with the autoencoder, something is wrong with the
    arrangement of the image (a missing or misplaced part): the global, "logical" anomaly map.
    """

    def __init__(self, out_channels: int, grid: int, width: int = 64, dropout: float = 0.2):
        super().__init__()
        self.grid = grid
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, width, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(dropout))
            for _ in range(5)
        )
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, out_channels, 3, padding=1)
        )

    def stage_sizes(self) -> list[int]:
        return [max(2, round(self.grid / 2**k)) for k in (4, 3, 2, 1, 0)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(images)
        for size, stage in zip(self.stage_sizes(), self.stages):
            x = stage(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        return self.head(x)
