"""Write a synthetic-defect data set in the MVTec layout from a category's good images.

Layout written under ``out_root/category``::

    train/good/<original file>            good images kept for training (copied byte for byte)
    test/good/<original file>             held-out good images (copied byte for byte)
    test/<kind>/<NNN>.png                 simulated defective images (NNN = running number over all kinds)
    ground_truth/<kind>/<NNN>_mask.png    their masks, 0/255 single-channel PNG
    simulation.json                       seed, kinds, split, and per image: base and donor paths, params

The defects are made from the *held-out* good images only (cycling through them), never from the images
left in ``train/good``: a detector fitted on ``train/good`` must not have memorised the very surface the
defect was placed on, or its scores on the simulated set would be optimistic. Donor images (``source`` of
``nsa`` and ``texture``) are drawn from all other usable good images. Kinds are cycled in the given order,
so every kind gets ``n / len(kinds)`` images (``+-1``); when a kind cannot make a visible defect in an
image the simulator falls back to another kind and the image goes to that kind's folder.

Each defect ``i`` is drawn with ``numpy.random.default_rng([seed, i])``, so one image can be reproduced on
its own from ``simulation.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.data import ImageReadError, mvtec_samples, read_image, to_uint8_rgb, write_png
from anomalens.progress import track
from anomalens.simulation._common import MIN_SIDE
from anomalens.simulation.simulator import KINDS, SimulatedAnomaly, simulate

__all__ = ["METADATA_FILE", "write_simulated_dataset"]

logger = logging.getLogger(__name__)

METADATA_FILE = "simulation.json"
_USES_SOURCE = {"nsa", "texture"}


@dataclass(frozen=True)
class _Draw:
    """One planned defect: running number ``index`` and file stem ``name``, the ``kind`` asked for, the ``base``
    image it goes on and the ``donor`` image it takes material from (``None`` for kinds that take none)."""

    index: int
    name: str
    kind: str
    base: Path
    donor: Path | None


def _check_request(n: int, kinds: Sequence[str], holdout: float) -> list[str]:
    """Check the request's ``n``, ``kinds`` and ``holdout``; return the kinds as a list of strings."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    kinds = [str(k) for k in kinds]
    if not kinds:
        raise ValueError(f"kinds must name at least one anomaly kind ({', '.join(KINDS)})")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown anomaly kind(s) {', '.join(unknown)}; choose from: {', '.join(KINDS)}")
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"holdout must be between 0 and 1 (exclusive), got {holdout}")
    return kinds


def _usable_good_images(data_root: Path, category: str) -> tuple[list[Path], list[dict[str, str]]]:
    """List the category's good training images; return the ones a defect can be made in, and the skipped ones
    with the reason (``{"path", "error"}``)."""
    good_dir = data_root / category / "train" / "good"
    goods = [s.path for s in mvtec_samples(data_root, category, "train") if s.label == 0]
    if not goods:
        raise ValueError(f"no good images in '{good_dir}'")
    usable: list[Path] = []
    skipped: list[dict[str, str]] = []
    for path in goods:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            logger.warning("skipping unreadable good image: %s", exc)
            skipped.append({"path": str(path), "error": str(exc)})
            continue
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE:
            reason = f"image is {h}x{w} pixels, smaller than {MIN_SIDE} in a side"
            logger.warning("skipping good image '%s': %s", path, reason)
            skipped.append({"path": str(path), "error": reason})
            continue
        usable.append(path)
    if len(usable) < 2:
        raise ValueError(
            f"need at least 2 usable good images in '{good_dir}' "
            f"(one to train on, one to hold out), found {len(usable)}"
        )
    return usable, skipped


def _split_good_images(usable: list[Path], holdout: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split the usable good images at random into ``(train, held)``, both in listing order."""
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(len(usable))
    n_hold = int(np.clip(round(holdout * len(usable)), 1, len(usable) - 1))
    held = [usable[i] for i in sorted(order[:n_hold])]
    train = [usable[i] for i in sorted(order[n_hold:])]
    return train, held


def _prepare_output(cat_out: Path, cat_in: Path, overwrite: bool) -> None:
    src, dst = cat_in.resolve(), cat_out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ValueError(f"output folder '{cat_out}' overlaps the input category folder '{cat_in}'")
    if cat_out.exists() and (not cat_out.is_dir() or any(cat_out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"output folder '{cat_out}' already exists and is not empty (use overwrite)")
        if not (cat_out / METADATA_FILE).is_file():
            raise FileExistsError(
                f"refusing to overwrite '{cat_out}': it has no {METADATA_FILE}, so it was not written by the simulator"
            )
        shutil.rmtree(cat_out)
    cat_out.mkdir(parents=True, exist_ok=True)


def _copy_good_images(cat_out: Path, train: list[Path], held: list[Path]) -> None:
    """Copy the kept and the held-out good images byte for byte to ``train/good`` and ``test/good``."""
    for folder, paths in (("train", train), ("test", held)):
        dest = cat_out / folder / "good"
        dest.mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copyfile(path, dest / path.name)


def _plan_draws(n: int, kinds: list[str], usable: list[Path], held: list[Path], seed: int) -> list[_Draw]:
    """Plan the ``n`` defects: defect ``i`` takes the next kind and the next held-out base in turn, and a donor
    drawn from the other usable images where its kind uses one."""
    width = max(3, len(str(n - 1)))
    draws = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        base = held[i % len(held)]
        donor = None
        if kind in _USES_SOURCE:  # own stream, so that default_rng([seed, i]) alone reproduces simulate()
            others = [p for p in usable if p != base]
            donor = others[int(np.random.default_rng([seed, i, 1]).integers(len(others)))]
        draws.append(_Draw(index=i, name=f"{i:0{width}d}", kind=kind, base=base, donor=donor))
    return draws


def _write_defect(cat_out: Path, draw: _Draw, sim: SimulatedAnomaly, seed: int) -> dict[str, Any]:
    """Write the simulated image and its mask under the kind actually made; return its ``simulation.json`` entry."""
    image_rel = Path("test") / sim.kind / f"{draw.name}.png"
    mask_rel = Path("ground_truth") / sim.kind / f"{draw.name}_mask.png"
    write_png(cat_out / image_rel, to_uint8_rgb(sim.image))
    write_png(cat_out / mask_rel, sim.mask.astype(np.uint8) * 255)
    return {
        "index": draw.index,
        "image": image_rel.as_posix(),
        "mask": mask_rel.as_posix(),
        "kind": sim.kind,
        "requested_kind": draw.kind,
        "base": str(draw.base),
        "source": None if draw.donor is None else str(draw.donor),
        "rng_seed": [seed, draw.index],
        "mask_pixels": int(sim.mask.sum()),
        "params": sim.params,
    }


def _make_defects(
    cat_out: Path, draws: list[_Draw], seed: int, progress: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Simulate and write every planned defect; return the entries of the written ones and of the failed ones."""
    load = lru_cache(maxsize=8)(read_image)  # bases and donors come round again
    records: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for draw in track(draws, "simulating defects", total=len(draws), enabled=progress):
        rng = np.random.default_rng([seed, draw.index])
        try:
            sim = simulate(load(draw.base), draw.kind, rng, None if draw.donor is None else load(draw.donor))
        except (RuntimeError, ValueError) as exc:
            logger.warning("could not simulate %s defect %d on '%s': %s", draw.kind, draw.index, draw.base, exc)
            failed.append({"index": draw.index, "kind": draw.kind, "base": str(draw.base), "error": str(exc)})
            continue
        records.append(_write_defect(cat_out, draw, sim, seed))
    return records, failed


def write_simulated_dataset(
    data_root: str | os.PathLike[str],
    category: str,
    out_root: str | os.PathLike[str],
    n: int,
    kinds: Sequence[str],
    seed: int,
    progress: bool = False,
    *,
    holdout: float = 0.2,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Make ``n`` simulated defective images from ``data_root/category/train/good`` and write an MVTec set.

    ``data_root`` is the MVTec-layout root of the real data; the set is written to ``out_root/category``, which
    must not exist or be empty, unless ``overwrite`` is set and it holds a previous ``simulation.json`` (the
    previous simulated set is then replaced). ``kinds`` are the anomaly kinds to cycle through (see
    :data:`anomalens.simulation.KINDS`); ``seed`` seeds the whole run (the split, and defect ``i`` uses
    ``default_rng([seed, i])``); ``progress`` draws a progress bar. ``holdout`` is the share of the usable good
    images moved to ``test/good`` and used as defect bases (at least one image, and at least one is kept for
    ``train/good``).

    Unreadable good images (and images under 16 px in a side) are skipped with a warning and listed in the
    summary and in ``simulation.json``.

    Returns the summary: ``out_dir``, ``category``, ``n_defects``, ``per_kind`` (counts by the kind actually
    made), ``n_train_good``, ``n_test_good``, ``skipped`` (``[{"path", "error"}]``), ``failed`` and
    ``metadata`` (path of ``simulation.json``). A bad ``n``, ``kinds`` or ``holdout``, fewer than two usable
    good images or an output overlapping the input raise ``ValueError``; missing data set folders
    ``FileNotFoundError``; an output that is not empty ``FileExistsError``.
    """
    kinds = _check_request(n, kinds, holdout)
    data_root = Path(data_root)
    usable, skipped = _usable_good_images(data_root, category)
    cat_out = Path(out_root) / category
    _prepare_output(cat_out, data_root / category, overwrite)
    train, held = _split_good_images(usable, holdout, int(seed))
    _copy_good_images(cat_out, train, held)
    draws = _plan_draws(n, kinds, usable, held, int(seed))
    records, failed = _make_defects(cat_out, draws, int(seed), progress)

    metadata = {
        "generator": "anomalens.simulation",
        "data_root": str(data_root),
        "category": category,
        "seed": int(seed),
        "n": int(n),
        "kinds": kinds,
        "holdout": float(holdout),
        "train_good": [str(p) for p in train],
        "test_good": [str(p) for p in held],
        "defects": records,
        "skipped": skipped,
        "failed": failed,
    }
    meta_path = cat_out / METADATA_FILE
    meta_path.write_text(json.dumps(metadata, indent=2))
    return {
        "out_dir": str(cat_out),
        "category": category,
        "n_defects": len(records),
        "per_kind": dict(sorted(Counter(record["kind"] for record in records).items())),
        "n_train_good": len(train),
        "n_test_good": len(held),
        "skipped": skipped,
        "failed": failed,
        "metadata": str(meta_path),
    }
