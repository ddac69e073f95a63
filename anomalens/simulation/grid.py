"""A contact sheet of simulated anomalies (for documentation and for eyeballing a simulated set).

Regenerate the documentation grid with ``python -m anomalens.simulation GOOD_FOLDER docs/simulated_examples.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from anomalens.data import write_png
from anomalens.simulation._common import to_uint8
from anomalens.simulation.simulator import SimulatedAnomaly

__all__ = ["example_grid", "examples_from_folder", "save_example_grid"]

_RED = (255, 40, 40)
_BACKGROUND = 32


def _fit(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return cv2.resize(image, (nw, nh), interpolation=interpolation)


def _letterbox(image: np.ndarray, size: int) -> np.ndarray:
    canvas = np.full((size, size, 3), _BACKGROUND, np.uint8)
    h, w = image.shape[:2]
    y, x = (size - h) // 2, (size - w) // 2
    canvas[y : y + h, x : x + w] = image
    return canvas


def _label(panel: np.ndarray, text: str) -> None:
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    cv2.rectangle(panel, (0, 0), (tw + 8, th + base + 6), (0, 0, 0), thickness=-1)
    cv2.putText(panel, text, (4, th + 3), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


def _zoom_box(mask: np.ndarray, min_side: int = 48) -> tuple[int, int, int, int]:
    """A square-ish crop around the mask: its bounding box grown by half (at least ``min_side`` px)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    side = max(min_side, int(1.5 * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)))
    sh, sw = min(side, h), min(side, w)
    y0 = int(np.clip(round(cy - sh / 2.0), 0, h - sh))
    x0 = int(np.clip(round(cx - sw / 2.0), 0, w - sw))
    return y0, x0, sh, sw


def _outlined(image: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    shown = _fit(to_uint8(image), size, cv2.INTER_AREA)
    # area-average then "> 0", so that 1-px scratches survive the down-scaling
    small = (_fit(mask.astype(np.float32), size, cv2.INTER_AREA) > 0).astype(np.uint8)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    shown = np.ascontiguousarray(shown)
    cv2.drawContours(shown, contours, -1, _RED, thickness=1, lineType=cv2.LINE_8)
    return _letterbox(shown, size)


def _tile(example: SimulatedAnomaly, size: int) -> np.ndarray:
    """[whole image, mask outlined in red | the defect enlarged, as made | the mask, same crop].

    Each panel is ``size`` x ``size``; the first is labelled with the kind.
    """
    if example.mask.any():
        y0, x0, sh, sw = _zoom_box(example.mask)
    else:
        y0, x0, (sh, sw) = 0, 0, example.mask.shape
    crop = example.image[y0 : y0 + sh, x0 : x0 + sw]
    crop_mask = example.mask[y0 : y0 + sh, x0 : x0 + sw]
    zoom = size / max(sh, sw)
    interp = cv2.INTER_NEAREST if zoom >= 1 else cv2.INTER_AREA
    left = _outlined(example.image, example.mask, size)
    middle = _letterbox(_fit(to_uint8(crop), size, interp), size)
    shown_mask = np.repeat((crop_mask.astype(np.uint8) * 255)[:, :, None], 3, axis=2)
    right = _letterbox(_fit(shown_mask, size, cv2.INTER_NEAREST), size)
    detail = example.params.get("shape") or example.params.get("texture") or ""
    _label(left, example.kind + (f" ({detail})" if detail else ""))
    _label(middle, f"zoom x{zoom:.1f}")
    _label(right, f"mask {100 * float(example.mask.mean()):.1f}% of image")
    gap = np.full((size, 2, 3), _BACKGROUND, np.uint8)
    return np.concatenate([left, gap, middle, gap, right], axis=1)


def example_grid(examples: Sequence[SimulatedAnomaly], columns: int = 2, tile_size: int = 256) -> np.ndarray:
    """The grid as a uint8 RGB array, ``columns`` examples per row.

    Each example is three panels: the whole image with the mask outlined in red, the defect region
    enlarged as it was made (no drawing on it), and the mask over the same crop.
    """
    if not examples:
        raise ValueError("no examples to draw")
    if columns < 1 or tile_size < 32:
        raise ValueError(f"columns must be >= 1 and tile_size >= 32, got {columns} and {tile_size}")
    tiles = [_tile(e, tile_size) for e in examples]
    th, tw = tiles[0].shape[:2]
    pad = 6
    rows = -(-len(tiles) // columns)
    cols = min(columns, len(tiles))
    grid = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        grid[y : y + th, x : x + tw] = tile
    return grid


def save_example_grid(
    examples: Sequence[SimulatedAnomaly],
    path: str | os.PathLike[str],
    columns: int = 2,
    tile_size: int = 256,
) -> Path:
    """Write :func:`example_grid` as a PNG at ``path`` (folders created); returns the path."""
    return write_png(path, example_grid(examples, columns, tile_size))


def examples_from_folder(
    folder: str | os.PathLike[str], kinds: Sequence[str], per_kind: int = 2, seed: int = 0
) -> list[SimulatedAnomaly]:
    """``per_kind`` examples of each kind, on good images drawn at random from ``folder`` (donors too)."""
    from anomalens.data import folder_samples, read_image
    from anomalens.simulation.simulator import simulate

    paths = [s.path for s in folder_samples(folder)]
    if len(paths) < 2:
        raise ValueError(f"need at least 2 images in '{folder}', found {len(paths)}")
    rng = np.random.default_rng(seed)
    examples = []
    for kind in kinds:
        for _ in range(per_kind):
            base, donor = rng.choice(len(paths), size=2, replace=False)
            sim = simulate(read_image(paths[base]), kind, rng, source=read_image(paths[donor]))
            sim.params["base_file"] = paths[base].name
            examples.append(sim)
    return examples
