"""Structured findings: what a :class:`~anomalens.types.Prediction` says in terms a person can check.

:func:`extract_findings` turns the prediction's mask into regions (8-connected components, parts closer than
``MERGE_DISTANCE`` of the image's short side taken together) and describes each
one by its place in a 3x3 grid over the image, its size, shape, score and severity, and how it looks next to its
surroundings (darker / brighter / similar, other colour). Everything here is measured; nothing is guessed about
the kind or cause of a defect.

Severity bands, from ``relative_peak`` = region peak score / image threshold (the anomaly map and the image score
share one scale):

* ``relative_peak < 1.25``: "low"
* ``1.25 <= relative_peak < 1.6``: "medium"
* ``1.6 <= relative_peak < 2.2``: "high"
* ``relative_peak >= 2.2`` (or no positive threshold): "critical"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage import measure

from anomalens.postprocessing.outline import outline_mask
from anomalens.postprocessing.region_measures import (
    elongation,
    gray_level,
    ring_radius,
    surround_ring,
    within_distance,
)
from anomalens.types import Prediction

SEVERITY_BANDS: tuple[tuple[float, str], ...] = ((1.25, "low"), (1.6, "medium"), (2.2, "high"))
SEVERITY_ORDER = ("none", "low", "medium", "high", "critical")
GRID_NAMES = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))
CELL_SHARE = 0.10  # a grid cell counts for a region holding at least this share of its pixels
ELONGATED_RATIO = 3.0  # major / minor axis length at and above which a region is "elongated"
BRIGHTNESS_DELTA = 0.04  # |region - surroundings| mean gray difference (on [0, 1]) for darker / brighter
CHROMA_DELTA = 0.05  # distance of mean chromaticity (r, g, b) / (r + g + b) for "other colour"
MIN_CHROMA_SUM = 0.05  # darker means than this (sum of r, g, b) carry no reliable colour
# Parts of the outline closer than this share of the image's short side are one finding: anomaly maps are
# smooth at about this scale (PatchCore: 32x32 patches, each seeing its 3x3 neighbours), so a gap narrower than
# it says little. On the validation halves, at the default outline level, merging gaps up to this one made more
# region counts agree with the ground truth and left the position hits as they were
# (bench/outline_validation.py, bench/results/outline_validation.md).
MERGE_DISTANCE = 0.16


def severity_for(relative_peak: float) -> str:
    """Severity band for a peak score in units of the image threshold (see the module docstring)."""
    if not math.isfinite(relative_peak):
        return "critical" if relative_peak > 0 else "low"
    for upper, name in SEVERITY_BANDS:
        if relative_peak < upper:
            return name
    return "critical"


def _num(value: float | None, digits: int = 6) -> float | None:
    """Rounded float, or None where the value is missing or not finite (JSON has no NaN / inf)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


@dataclass
class Region:
    """One connected anomalous region. Coordinates are pixels; ``box`` is (x0, y0, x1, y1), x1/y1 exclusive."""

    index: int
    label: int
    box: tuple[int, int, int, int]
    area_pixels: int
    area_fraction: float
    centroid: tuple[float, float]
    peak_score: float
    mean_score: float
    relative_peak: float
    severity: str
    positions: list[str]
    position: str
    shape: str
    elongation: float
    orientation_degrees: float
    brightness: str
    appearance: list[str]
    mean_intensity: float | None
    surround_intensity: float | None
    intensity_difference: float | None
    colour_difference: float | None
    parts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": int(self.index),
            "parts": int(self.parts),
            "bbox": [int(v) for v in self.box],
            "area_pixels": int(self.area_pixels),
            "area_fraction": _num(self.area_fraction),
            "centroid": [_num(self.centroid[0], 2), _num(self.centroid[1], 2)],
            "peak_score": _num(self.peak_score),
            "mean_score": _num(self.mean_score),
            "relative_peak": _num(self.relative_peak, 4),
            "severity": self.severity,
            "grid": list(self.positions),
            "position": self.position,
            "shape": self.shape,
            "elongation": _num(self.elongation, 3),
            "orientation_degrees": _num(self.orientation_degrees, 2),
            "brightness": self.brightness,
            "appearance": list(self.appearance),
            "mean_intensity": _num(self.mean_intensity, 4),
            "surround_intensity": _num(self.surround_intensity, 4),
            "intensity_difference": _num(self.intensity_difference, 4),
            "colour_difference": _num(self.colour_difference, 4),
        }


@dataclass
class Findings:
    """The verdict and its regions, strongest (highest peak score) first.

    ``labels`` (not serialised) is the image of region labels the regions were measured on: pixel value
    ``region.label`` belongs to that region, 0 to none; see :meth:`region_mask`.
    """

    verdict: str
    is_anomalous: bool
    image_score: float
    normalized_score: float
    regions: list[Region] = field(default_factory=list)
    labels: np.ndarray | None = field(default=None, repr=False)

    def region_mask(self, region: Region) -> np.ndarray:
        """Boolean mask of ``region``'s pixels (all of its parts)."""
        if self.labels is None:
            raise ValueError("these findings carry no label image (they were read back from JSON)")
        return self.labels == region.label

    @property
    def count(self) -> int:
        return len(self.regions)

    @property
    def total_area_fraction(self) -> float:
        return float(sum(r.area_fraction for r in self.regions))

    @property
    def severity(self) -> str:
        """The worst region's severity, or "none" without regions."""
        if not self.regions:
            return "none"
        return max((r.severity for r in self.regions), key=SEVERITY_ORDER.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "anomalous": bool(self.is_anomalous),
            "score": _num(self.image_score),
            "normalized_score": _num(self.normalized_score, 4),
            "count": self.count,
            "total_area_fraction": _num(self.total_area_fraction),
            "severity": self.severity,
            "regions": [r.to_dict() for r in self.regions],
        }


def _cells(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grid row of every image row and grid column of every image column (thirds, by pixel centre)."""
    height, width = shape
    rows = np.minimum(2, ((np.arange(height) + 0.5) * 3 / height).astype(int))
    cols = np.minimum(2, ((np.arange(width) + 0.5) * 3 / width).astype(int))
    return rows, cols


def grid_cell(x: float, y: float, shape: tuple[int, int]) -> str:
    """The 3x3 grid word ("top left" ... "bottom right") of pixel (x, y) in an image of this (H, W)."""
    height, width = shape
    row = min(2, max(0, int((y + 0.5) * 3 / height)))
    col = min(2, max(0, int((x + 0.5) * 3 / width)))
    return GRID_NAMES[row][col]


def _positions(coords: np.ndarray, centre_cell: str, cell_rows: np.ndarray, cell_cols: np.ndarray) -> list[str]:
    counts = np.zeros((3, 3), dtype=np.int64)
    np.add.at(counts, (cell_rows[coords[:, 0]], cell_cols[coords[:, 1]]), 1)
    shares = counts / max(1, len(coords))
    chosen = [
        (shares[r, c], GRID_NAMES[r][c])
        for r in range(3)
        for c in range(3)
        if shares[r, c] >= CELL_SHARE or GRID_NAMES[r][c] == centre_cell
    ]
    # stable: equal shares keep reading order (top left ... bottom right)
    return [name for _, name in sorted(chosen, key=lambda item: -item[0])]


def _shape(props: Any) -> tuple[str, float, float]:
    """("elongated" | "compact", major/minor axis ratio, orientation in degrees).

    The ratio is :func:`~anomalens.postprocessing.region_measures.elongation`. The orientation is the major
    axis' angle to the image's horizontal, counter-clockwise as the image is displayed (y up), in [0, 180).
    """
    ratio = elongation(props.coords)
    # skimage: angle between the row axis and the major axis; rows run downwards on screen
    degrees = (90.0 + math.degrees(float(props.orientation))) % 180.0
    return ("elongated" if ratio >= ELONGATED_RATIO else "compact"), ratio, degrees


def _gray_and_rgb(image: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    if image is None:
        return None
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    rgb = rgb[..., :3]
    if rgb.shape[:2] != shape:
        rgb = cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return gray_level(rgb), rgb


def _chromaticity(mean_rgb: np.ndarray) -> np.ndarray | None:
    total = float(mean_rgb.sum())
    return mean_rgb / total if total >= MIN_CHROMA_SUM else None


def _appearance(
    region: np.ndarray,
    window: tuple[slice, slice],
    anomalous: np.ndarray,
    pixels: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[str, list[str], float | None, float | None, float | None, float | None]:
    """Brightness word, cue list and the measured numbers, region vs. a ring of normal surroundings (all normal
    pixels where the ring has none). ``region`` is the region's mask on ``window`` (see :func:`_region_window`)
    of the image, ``anomalous`` the whole image's mask."""
    if pixels is None:
        return "unknown", [], None, None, None, None
    luma, rgb = pixels
    ring = surround_ring(region, exclude=anomalous[window])
    inside = float(luma[window][region].mean())
    if ring.any():
        around_luma, around_rgb = luma[window][ring], rgb[window][ring]
    else:
        normal = ~anomalous
        around_luma, around_rgb = luma[normal], rgb[normal]
    if not around_luma.size:
        return "unknown", [], inside, None, None, None
    around = float(around_luma.mean())
    difference = inside - around
    brightness = (
        "darker" if difference <= -BRIGHTNESS_DELTA else "brighter" if difference >= BRIGHTNESS_DELTA else "similar"
    )
    cues = [brightness]
    colour = None
    chroma_in = _chromaticity(rgb[window][region].mean(axis=0))
    chroma_out = _chromaticity(around_rgb.mean(axis=0))
    if chroma_in is not None and chroma_out is not None:
        colour = float(np.linalg.norm(chroma_in - chroma_out))
        if colour >= CHROMA_DELTA:
            cues.append("other colour")
    return brightness, cues, inside, around, difference, colour


def _fallback_mask(anomaly_map: np.ndarray) -> np.ndarray:
    """For an anomalous verdict with an empty mask: the half-maximum blob around the map's maximum."""
    labels = measure.label(outline_mask(anomaly_map), connectivity=2)
    y, x = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
    return labels == labels[y, x]


def group_regions(mask: np.ndarray, merge_distance: float = MERGE_DISTANCE) -> np.ndarray:
    """Label image of ``mask``'s regions (8-connected), where parts closer than ``merge_distance`` x the image's
    short side count as one region (0 keeps every connected component apart)."""
    if merge_distance <= 0:
        return measure.label(mask, connectivity=2)
    radius = max(1, int(round(merge_distance * min(mask.shape[:2]) / 2)))
    return measure.label(within_distance(mask, radius), connectivity=2) * mask


def _kept_regions(
    mask: np.ndarray, merge_distance: float, min_area_pixels: int, min_area_fraction: float
) -> tuple[np.ndarray, list[Any]]:
    """The label image of ``mask``'s regions (see :func:`group_regions`) and the regions large enough to report,
    or the largest one when none is."""
    labels = group_regions(mask, merge_distance)
    props = measure.regionprops(labels)
    minimum = max(float(min_area_pixels), min_area_fraction * mask.shape[0] * mask.shape[1])
    kept = [p for p in props if p.area >= minimum] or [max(props, key=lambda p: p.area)]
    return labels, kept


def _region_window(props: Any) -> tuple[slice, slice]:
    """The part of the image a region's measures read: its box grown by the width of its ring of surroundings,
    so that the work per region follows the region's size rather than the image's."""
    margin = ring_radius(int(props.area))
    y0, x0, y1, x1 = (int(v) for v in props.bbox)
    return slice(max(0, y0 - margin), y1 + margin), slice(max(0, x0 - margin), x1 + margin)


def _measure_region(
    props: Any,
    labels: np.ndarray,
    anomaly_map: np.ndarray,
    anomalous: np.ndarray,
    pixels: tuple[np.ndarray, np.ndarray] | None,
    threshold: float,
) -> Region:
    """Measure the region ``props`` of ``labels``: place, size, shape, score against the image ``threshold``,
    and appearance next to its normal surroundings (``anomalous`` is the whole mask). Its ``index`` is left 0."""
    shape = anomaly_map.shape[:2]
    window = _region_window(props)
    region = labels[window] == props.label
    scores = anomaly_map[window][region]
    peak = float(scores.max())
    relative = peak / threshold if threshold > 0 else math.inf
    y0, x0, y1, x1 = (int(v) for v in props.bbox)
    cy, cx = (float(v) for v in props.centroid)
    centre_cell = grid_cell(cx, cy, shape)
    kind, ratio, degrees = _shape(props)
    brightness, cues, inside, around, difference, colour = _appearance(region, window, anomalous, pixels)
    return Region(
        index=0,
        label=int(props.label),
        parts=int(measure.label(labels[y0:y1, x0:x1] == props.label, connectivity=2).max()),
        box=(x0, y0, x1, y1),
        area_pixels=int(props.area),
        area_fraction=float(props.area) / float(shape[0] * shape[1]),
        centroid=(cx, cy),
        peak_score=peak,
        mean_score=float(scores.mean()),
        relative_peak=relative,
        severity=severity_for(relative),
        positions=_positions(props.coords, centre_cell, *_cells(shape)),
        position=centre_cell,
        shape=kind,
        elongation=ratio,
        orientation_degrees=degrees,
        brightness=brightness,
        appearance=cues,
        mean_intensity=inside,
        surround_intensity=around,
        intensity_difference=difference,
        colour_difference=colour,
    )


def extract_findings(
    prediction: Prediction,
    image: np.ndarray | None = None,
    min_area_fraction: float = 0.0005,
    min_area_pixels: int = 16,
    merge_distance: float = MERGE_DISTANCE,
) -> Findings:
    """Regions of ``prediction.mask`` with their place, size, shape, score, severity and appearance.

    ``image`` is the inspected image (float32 HxWx3 in [0, 1]; resized to the map when its size differs, and
    optional: without it the appearance is "unknown"). Parts of the mask closer than ``merge_distance`` x the
    short side form one region (``parts`` says how many; see ``MERGE_DISTANCE``). Regions smaller than
    ``max(min_area_pixels, min_area_fraction * H * W)`` are dropped, except that an anomalous verdict always
    keeps at least its largest region (and, should the mask be empty, the half-maximum blob around the anomaly
    map's maximum), so that "anomalous" never comes without a place. A normal verdict has no regions.
    """
    findings = Findings(
        verdict="anomalous" if prediction.is_anomalous else "normal",
        is_anomalous=bool(prediction.is_anomalous),
        image_score=float(prediction.image_score),
        normalized_score=float(prediction.normalized_score),
    )
    if not prediction.is_anomalous:
        return findings
    anomaly_map = np.asarray(prediction.anomaly_map, dtype=np.float32)
    mask = np.asarray(prediction.mask, dtype=bool)
    if not mask.any():
        mask = _fallback_mask(anomaly_map)
    labels, kept = _kept_regions(mask, merge_distance, min_area_pixels, min_area_fraction)
    findings.labels = np.where(np.isin(labels, [p.label for p in kept]), labels, 0)
    pixels = _gray_and_rgb(image, anomaly_map.shape[:2])
    threshold = float(prediction.thresholds.image)
    regions = [_measure_region(p, labels, anomaly_map, mask, pixels, threshold) for p in kept]
    regions.sort(key=lambda r: (-r.peak_score, -r.area_pixels))
    for i, r in enumerate(regions):
        r.index = i
    findings.regions = regions
    return findings
