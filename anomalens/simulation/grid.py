"""A contact sheet of simulated anomalies (for documentation and for eyeballing a simulated set)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ._common import to_uint8
from .simulator import SimulatedAnomaly

__all__ = ["example_grid", "save_example_grid"]

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


def _tile(example: SimulatedAnomaly, size: int) -> np.ndarray:
    """[image with the mask outlined in red | mask], each panel ``size`` x ``size``, labelled with the kind."""
    image = _fit(to_uint8(example.image), size, cv2.INTER_AREA)
    # area-average then "> 0", so that 1-px scratches survive the down-scaling
    mask = (_fit(example.mask.astype(np.float32), size, cv2.INTER_AREA) > 0).astype(np.uint8)
    outlined = image.copy()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, _RED, thickness=1, lineType=cv2.LINE_8)
    left = _letterbox(np.ascontiguousarray(outlined), size)
    shown = np.repeat((mask * 255)[:, :, None], 3, axis=2)
    right = _letterbox(shown, size)
    detail = example.params.get("shape") or example.params.get("texture") or ""
    _label(left, example.kind + (f" ({detail})" if detail else ""))
    _label(right, f"mask {100 * float(example.mask.mean()):.1f}%")
    gap = np.full((size, 2, 3), _BACKGROUND, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def example_grid(examples: Sequence[SimulatedAnomaly], columns: int = 2, tile_size: int = 256) -> np.ndarray:
    """The grid as a uint8 RGB array: ``columns`` examples per row, each as [outlined image | mask]."""
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
    grid = example_grid(examples, columns, tile_size)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - encoding a uint8 array does not fail
        raise OSError(f"could not encode PNG for '{out}'")
    out.write_bytes(data.tobytes())
    return out
