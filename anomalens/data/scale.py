"""The working scale: how large the network sees a product, chosen from the training images themselves.

A defect covering 0.2 % of a 1130x460 frame is a few pixels once the frame is squashed to 256x256, so the
default is the images' own scale: native resolution up to a pixel budget (shrunk uniformly beyond it), the
aspect ratio kept. A roughly square image is one view; an elongated one is cut into square tiles whose side
is the image's short side, each resized to the network input by the same factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Images whose long side is at most this multiple of the short side are one view (squashed to a square);
# longer ones are tiled, since squashing them would distort the product by more than that.
MAX_SQUASH_ASPECT = 1.5
# 384x384: chosen on the suite's validation halves (bench/results/choose_defaults.md): the best localisation of
# small defects for its cost; larger budgets cost several times the time for little more
DEFAULT_PIXEL_BUDGET = 147_456
SIDE_MULTIPLE = 32  # the backbone's coarsest stride: sides that divide by it keep feature grids aligned
MIN_SIDE = 128


@dataclass(frozen=True)
class WorkingScale:
    """Network input side, tile side in source pixels (None: the whole image is one view), and the source."""

    image_size: int
    tile_size: int | None
    source_shape: tuple[int, int]  # median (height, width) of the training images; (0, 0) when fixed by settings
    chosen_by: str  # "pixel budget N", or "settings" when image_size / tile_size fixed it

    @property
    def scale(self) -> float:
        """Network pixels per source pixel (nan when settings fixed the sizes)."""
        if self.source_shape == (0, 0):
            return float("nan")
        side = self.tile_size if self.tile_size else float(np.sqrt(self.source_shape[0] * self.source_shape[1]))
        return self.image_size / side

    def describe(self) -> str:
        if self.source_shape == (0, 0):
            tiles = f" in tiles of {self.tile_size} px" if self.tile_size else ""
            return f"{self.image_size}x{self.image_size} network input{tiles} (fixed by image_size / tile_size)"
        height, width = self.source_shape
        how = (
            f"tiles of {self.tile_size}x{self.tile_size} px, each seen at {self.image_size}x{self.image_size}"
            if self.tile_size
            else f"one {self.image_size}x{self.image_size} view per image"
        )
        return f"{height}x{width} images at {self.scale:.2f}x: {how} ({self.chosen_by})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkingScale:
        return cls(
            int(data["image_size"]),
            None if data["tile_size"] is None else int(data["tile_size"]),
            tuple(int(v) for v in data["source_shape"]),
            str(data["chosen_by"]),
        )


def network_side(length: float) -> int:
    """A network input side near ``length``: a multiple of the coarsest stride, at least ``MIN_SIDE``."""
    return max(MIN_SIDE, int(round(length / SIDE_MULTIPLE)) * SIDE_MULTIPLE)


def choose_working_scale(
    shapes: Sequence[tuple[int, ...]], pixel_budget: int, tile_size: int | None = None
) -> WorkingScale:
    """The working scale for training images of these (height, width, ...) shapes.

    The median image keeps its native resolution when it has at most ``pixel_budget`` pixels and is shrunk
    to that many otherwise. A ``tile_size`` set by the user is kept, seen at its own size up to the budget.
    """
    if not shapes:
        raise ValueError("need at least one image shape to choose a working scale")
    if pixel_budget < MIN_SIDE * MIN_SIDE:
        raise ValueError(f"pixel_budget must be at least {MIN_SIDE * MIN_SIDE}, got {pixel_budget}")
    if tile_size is not None:
        return WorkingScale(network_side(min(tile_size, np.sqrt(pixel_budget))), tile_size, (0, 0), "settings")
    height, width = (int(v) for v in np.median(np.array([s[:2] for s in shapes]), axis=0))
    factor = min(1.0, float(np.sqrt(pixel_budget / (height * width))))
    short, long = min(height, width), max(height, width)
    chosen_by = f"pixel budget {pixel_budget}"
    if long <= MAX_SQUASH_ASPECT * short:
        return WorkingScale(network_side(np.sqrt(height * width) * factor), None, (height, width), chosen_by)
    return WorkingScale(network_side(short * factor), short, (height, width), chosen_by)
