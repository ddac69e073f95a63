"""Listing image samples: MVTec-AD style data sets, plain folders, CLI paths.

Listings are sorted by file name and therefore deterministic. Hidden files
(names starting with ``.``, e.g. macOS ``._foo.png`` resource forks or
``.DS_Store``) are never treated as images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anomalens.data.io import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_image

__all__ = [
    "NoImagesError",
    "Sample",
    "collect_images",
    "find_mask",
    "folder_samples",
    "iter_images",
    "mask_index",
    "mvtec_samples",
]

logger = logging.getLogger(__name__)

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a data set: its file, ``label`` 0 (normal) or 1 (anomalous), ``defect_type`` (``"good"``
    for normal images, else the defect class name) and ``mask_path``, its ground-truth defect mask (``None``
    when there is none)."""

    path: Path
    label: int  # 0 normal, 1 anomalous
    defect_type: str = GOOD  # "good" for normal
    mask_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (paths as strings)."""
        return {
            "path": str(self.path),
            "label": int(self.label),
            "defect_type": self.defect_type,
            "mask_path": None if self.mask_path is None else str(self.mask_path),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        """Inverse of :meth:`to_dict`."""
        mask = d.get("mask_path")
        return cls(
            path=Path(d["path"]),
            label=int(d["label"]),
            defect_type=str(d.get("defect_type", GOOD)),
            mask_path=None if mask is None else Path(mask),
        )


class NoImagesError(FileNotFoundError):
    """Inputs that yield no image; made by :meth:`looked_in`, whose message says where it looked and for what."""

    @classmethod
    def looked_in(cls, folders: Sequence[str | os.PathLike[str]], recursive: bool) -> NoImagesError:
        accepted = f"image files end in {' '.join(IMAGE_EXTENSIONS)}"
        if not folders:
            return cls(f"no input images given; {accepted}")
        where = ", ".join(f"'{folder}'" for folder in folders)
        depth = " or any sub-folder" if recursive else " (sub-folders not searched)"
        return cls(f"no images in {where}{depth}; {accepted}")


def _is_hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _list_images(folder: Path, recursive: bool = False, skip: frozenset[Path] = frozenset()) -> list[Path]:
    """Image files in ``folder``, sorted (by relative path when recursive: a flat folder lists the same either
    way); hidden files and folders, and the folders in ``skip`` (resolved paths), are left out."""
    if not recursive:
        return sorted(
            (p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not _is_hidden(p)),
            key=lambda p: p.name,
        )
    found: list[Path] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and Path(top, d).resolve() not in skip]
        found += [Path(top, f) for f in files if not f.startswith(".") and is_image_file(f) and Path(top, f).is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)


def mask_index(folder: Path) -> dict[str, Path]:
    """Lower-case file name -> file, for the visible files of ``folder`` (empty when it is no folder);
    the listing :func:`find_mask` searches."""
    if not folder.is_dir():
        return {}
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file() and not _is_hidden(p)}


def find_mask(index: dict[str, Path], stem: str, beside_image: bool = False) -> Path | None:
    """Mask for image ``stem`` among the files of one folder (``index`` from :func:`mask_index`):
    ``<stem>_mask.png`` first, then ``<stem>.png``, then either name with any image extension
    (case-insensitive). ``beside_image``: the folder holds the image itself, so only ``<stem>_mask.*``
    can be its mask."""
    for base in (f"{stem}_mask",) if beside_image else (f"{stem}_mask", stem):
        for ext in (".png", *IMAGE_EXTENSIONS):
            hit = index.get((base + ext).lower())
            if hit is not None:
                return hit
    return None


def mvtec_samples(
    root: str | os.PathLike[str],
    category: str,
    split: Literal["train", "test"],
) -> list[Sample]:
    """List the samples of an MVTec-AD style category.

    Layout::

        root/category/train/good/*
        root/category/test/<defect_type>/*          (``good`` = normal)
        root/category/ground_truth/<defect_type>/<stem>_mask.png

    Masks named ``<stem>.png`` or with any image extension are accepted too.
    Normal samples get ``label=0`` and no mask; every other sub-folder is a
    defect type with ``label=1``. A defective image without a mask gets
    ``mask_path=None`` and a warning is logged.

    Returns samples sorted by defect type, then file name. A ``split`` other
    than ``"train"`` or ``"test"`` raises ``ValueError``; a missing root,
    category or split folder raises ``FileNotFoundError`` whose message lists
    what does exist.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root '{root}' does not exist or is not a folder")
    cat_dir = root / category
    if not cat_dir.is_dir():
        existing = [p.name for p in _subdirs(root)]
        raise FileNotFoundError(
            f"category '{category}' not found under '{root}'; "
            f"categories there: {', '.join(existing) if existing else '(none)'}"
        )
    split_dir = cat_dir / split
    if not split_dir.is_dir():
        existing = [p.name for p in _subdirs(cat_dir)]
        raise FileNotFoundError(
            f"split folder '{split_dir}' not found; "
            f"folders in '{cat_dir}': {', '.join(existing) if existing else '(none)'}"
        )

    samples: list[Sample] = []
    for type_dir in _subdirs(split_dir):
        defect_type = type_dir.name
        is_good = defect_type == GOOD
        gt_dir = cat_dir / "ground_truth" / defect_type
        index = {} if is_good else mask_index(gt_dir)
        missing = 0
        for img in _list_images(type_dir):
            mask = None if is_good else find_mask(index, img.stem)
            if not is_good and mask is None:
                missing += 1
            samples.append(Sample(img, 0 if is_good else 1, defect_type, mask))
        if missing:
            logger.warning("%d image(s) in '%s' have no ground-truth mask in '%s'", missing, type_dir, gt_dir)
    return samples


def folder_samples(
    folder: str | os.PathLike[str],
    label: int = 0,
    defect_type: str = GOOD,
    recursive: bool = False,
) -> list[Sample]:
    """All images in ``folder`` (sorted) as samples with the given label and type.

    ``FileNotFoundError`` when ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder '{folder}' does not exist or is not a folder")
    return [Sample(p, int(label), defect_type, None) for p in _list_images(folder, recursive)]


def collect_images(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    recursive: bool = True,
    skip: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Expand files and folders into a list of image paths.

    Files are kept as given (in order, whatever their extension, so that a
    non-image file is reported when read rather than silently dropped);
    folders contribute the image files inside them and, unless
    ``recursive`` is false, inside their sub-folders (e.g. ``test/<type>/``),
    sorted by relative path; folders in ``skip`` (say, the run's own output
    folder) are not searched. Duplicates are dropped, keeping the first
    occurrence. A single path may be passed instead of a sequence. A given
    path that does not exist raises ``FileNotFoundError``; inputs that yield
    no image at all raise :class:`NoImagesError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    skipped = frozenset(Path(p).resolve() for p in skip)
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for img in _list_images(p, recursive, skipped):
                add(img)
        elif p.exists():
            add(p)
        else:
            raise FileNotFoundError(f"input path '{p}' does not exist")
    if not out:
        raise NoImagesError.looked_in(paths, recursive)
    return out


def _item_path(item: Any) -> Path:
    if isinstance(item, Sample):
        return item.path
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    path = getattr(item, "path", None)
    if path is None:
        raise TypeError(f"expected a path or a Sample, got {type(item).__name__}")
    return Path(path)


def iter_images(
    paths_or_samples: Iterable[str | os.PathLike[str] | Sample],
    on_error: Literal["skip", "raise"] = "skip",
    errors: list[tuple[Any, str]] | None = None,
) -> Iterator[tuple[Any, np.ndarray]]:
    """Yield ``(item, image)`` for each path or :class:`Sample`, reading lazily.

    ``image`` is :func:`~anomalens.data.io.read_image`'s float32 RGB array.
    When a file cannot be read (:class:`ImageReadError`):

    * ``on_error="skip"``: ``(item, message)`` is appended to ``errors`` (if
      given), a warning naming the file is logged, and iteration continues;
    * ``on_error="raise"``: the error propagates (images already yielded
      have been handed to the caller and are not affected).

    Other exceptions (programming errors) always propagate.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    return _iter_images(paths_or_samples, on_error, errors)


def _iter_images(
    items: Iterable[Any], on_error: str, errors: list[tuple[Any, str]] | None
) -> Iterator[tuple[Any, np.ndarray]]:
    for item in items:
        path = _item_path(item)
        try:
            image = read_image(path)
        except ImageReadError as exc:
            if on_error == "raise":
                raise
            message = str(exc)
            if errors is not None:
                errors.append((item, message))
            logger.warning("skipping unreadable image: %s", message)
            continue
        yield item, image
