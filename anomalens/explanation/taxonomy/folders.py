"""Labelled examples on disk: a folder per defect type, with or without masks.

Layouts: MVTec (``root/test/<type>/*`` with masks ``root/ground_truth/<type>/<stem>_mask.png``; a ``good``
folder is ignored) or plain (``root/<type>/*`` with masks in ``root/ground_truth/<type>/``,
``root/<type>/masks/`` or next to the image as ``<stem>_mask.png``). Masks are found as for MVTec data sets
(:func:`anomalens.data.datasets.find_mask`). An image without a mask stands for its whole self.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.data import IMAGE_EXTENSIONS, read_image, read_mask
from anomalens.data.datasets import find_mask, mask_index
from anomalens.explanation.taxonomy.regions import strongest_region

NOT_TYPES = ("good", "ground_truth", "masks")


def _is_mask_name(path: Path) -> bool:
    return path.stem.endswith("_mask")


def folder_examples(root: str | Path) -> list[tuple[Path, Path | None, str]]:
    """(image, mask or None, type) for every example under ``root`` (layouts: module docstring)."""
    root = Path(root)
    if (root / "test").is_dir():
        type_root, gt_root = root / "test", root / "ground_truth"
    else:
        type_root, gt_root = root, root / "ground_truth"
    found = []
    for folder in sorted(p for p in type_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = folder.name
        if label in NOT_TYPES:
            continue
        mask_folders = [
            (mask_index(gt_root / label), False),
            (mask_index(folder / "masks"), False),
            (mask_index(folder), True),
        ]
        for path in sorted(folder.iterdir()):
            if (
                not path.is_file()
                or path.name.startswith(".")
                or path.suffix.lower() not in IMAGE_EXTENSIONS
                or _is_mask_name(path)
            ):
                continue
            mask = next(
                (
                    hit
                    for index, beside_image in mask_folders
                    if (hit := find_mask(index, path.stem, beside_image)) is not None
                ),
                None,
            )
            found.append((path, mask, label))
    return found


def labelled_regions(
    root: str | Path, detector: Any = None
) -> Iterator[tuple[np.ndarray, np.ndarray | None, str, str]]:
    """``(image, mask or None, type, name)`` for every example under ``root``; with a fitted ``detector``, also
    the strongest region it outlines in each example it calls anomalous (named ``"<path> (detector region)"``).
    """
    examples = folder_examples(root)
    if not examples:
        raise FileNotFoundError(f"no labelled example images found under {root}")
    for path, mask_path, label in examples:
        image = read_image(path)
        mask = read_mask(mask_path, image.shape[:2]) if mask_path is not None else None
        yield image, mask, label, str(path)
        outlined = strongest_region(detector, image) if detector is not None else None
        if outlined is not None:
            yield image, outlined, label, f"{path} (detector region)"
