"""Shared fixtures: synthetic normal textures, planted defects, a tiny MVTec-layout data set, the demo data.

Everything here is small on purpose (64-160 px images) so that the detector tests stay fast on a busy CPU.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch

import anomalens
from anomalens.data import read_image
from anomalens.models import PatchCore
from anomalens.postprocessing.findings import SEVERITY_ORDER
from anomalens.results.record import InspectionRecord

# The test machine's two cores are shared with other jobs: torch's intra-op thread pool then spins against
# them and runs >10x slower than on one thread. One thread changes no result, only the wall time.
torch.set_num_threads(1)
cv2.setNumThreads(1)

DEMO_DATA = Path(anomalens.__file__).resolve().parent / "demo_data"
TINT = np.array([1.0, 0.92, 0.82], dtype=np.float32)  # a warm grey, so the three channels differ


def make_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A stationary "normal" surface: smooth blotches + regular fine stripes + sensor noise.

    float32 HxWx3 in [0, 1]. Different seeds give different instances of the same kind of surface.
    """
    rng = np.random.default_rng(seed)
    blotches = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 5.0)
    blotches *= 0.06 / max(float(blotches.std()), 1e-6)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.04 * np.sin(2 * np.pi * (x + 0.3 * y) / 9.0 + phase)
    grain = 0.02 * rng.standard_normal((height, width)).astype(np.float32)
    gray = 0.55 + blotches + stripes + grain
    return np.clip(gray[..., None] * TINT, 0.0, 1.0).astype(np.float32)


def plant_defect(
    image: np.ndarray, kind: str = "blob", center: tuple[int, int] | None = None, size: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return a copy of ``image`` with a defect and the defect's bool HxW mask.

    ``kind``: "blob" (a dark elliptic stain) or "scratch" (a bright straight line). ``center`` is (y, x);
    by default a random point away from the border. ``size`` is the blob radius / half the scratch length.
    """
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    size = size or max(6, min(height, width) // 8)
    if center is None:
        margin = size + 4
        center = (int(rng.integers(margin, height - margin)), int(rng.integers(margin, width - margin)))
    cy, cx = center
    canvas = np.zeros((height, width), np.uint8)
    if kind == "blob":
        cv2.ellipse(
            canvas,
            (int(cx), int(cy)),
            (size, max(3, int(size * 0.7))),
            float(rng.uniform(0, 180)),
            0,
            360,
            255,
            thickness=-1,
        )
        mask = canvas > 0
        out = image.copy()
        out[mask] *= 0.25
    elif kind == "scratch":
        angle = rng.uniform(0, np.pi)
        dy, dx = size * np.sin(angle), size * np.cos(angle)
        cv2.line(canvas, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, thickness=3)
        mask = canvas > 0
        out = image.copy()
        out[mask] = 0.98
    else:
        raise ValueError(f"unknown defect kind {kind!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32), mask


@dataclass(frozen=True)
class Textures:
    """Callable access to the generators above, handed to tests as one session fixture."""

    def normal(self, height: int, width: int, seed: int) -> np.ndarray:
        return make_texture(height, width, seed)

    def normals(self, shapes: list[tuple[int, int]], first_seed: int) -> list[np.ndarray]:
        return [make_texture(h, w, first_seed + i) for i, (h, w) in enumerate(shapes)]

    def defect(
        self,
        image: np.ndarray,
        kind: str = "blob",
        center: tuple[int, int] | None = None,
        size: int | None = None,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        return plant_defect(image, kind, center, size, seed)


@pytest.fixture(scope="session")
def textures() -> Textures:
    return Textures()


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a float RGB image in [0, 1] or a bool mask as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype == bool:
        data = image.astype(np.uint8) * 255
    else:
        data = cv2.cvtColor(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), data), path


@dataclass(frozen=True)
class TinyMVTec:
    root: Path
    category: str
    train: list[Path]
    test_good: list[Path]
    test_spot: list[Path]
    masks: list[Path]


def write_tiny_mvtec(root: Path, category: str = "tex") -> TinyMVTec:
    """root/category/{train/good (8), test/good (3), test/spot (3), ground_truth/spot (3 masks)}, 96x112 PNGs."""
    base = root / category
    shape = (96, 112)
    train = [base / "train" / "good" / f"{i:03d}.png" for i in range(8)]
    for i, path in enumerate(train):
        write_png(path, make_texture(*shape, seed=100 + i))
    test_good = [base / "test" / "good" / f"{i:03d}.png" for i in range(3)]
    for i, path in enumerate(test_good):
        write_png(path, make_texture(*shape, seed=200 + i))
    test_spot, masks = [], []
    for i in range(3):
        image, mask = plant_defect(make_texture(*shape, seed=300 + i), "blob", size=14, seed=i)
        path = base / "test" / "spot" / f"{i:03d}.png"
        mask_path = base / "ground_truth" / "spot" / f"{i:03d}_mask.png"
        write_png(path, image)
        write_png(mask_path, mask)
        test_spot.append(path)
        masks.append(mask_path)
    return TinyMVTec(root, category, train, test_good, test_spot, masks)


@pytest.fixture(scope="session")
def png_writer():
    """``write(path, image_or_mask)``: float RGB in [0, 1] or bool mask to PNG (folders created)."""
    return write_png


@pytest.fixture(scope="session")
def tiny_mvtec_factory():
    """``make(root, category="tex") -> TinyMVTec``, for tests that need the data set in their own place."""
    return write_tiny_mvtec


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> TinyMVTec:
    """A fresh tiny MVTec-layout data set under this test's tmp_path."""
    return write_tiny_mvtec(tmp_path / "data")


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """Root of the shipped demo data (MVTec layout, category ``magnetic_tile``)."""
    assert (DEMO_DATA / "magnetic_tile" / "train" / "good").is_dir()
    return DEMO_DATA


@pytest.fixture(scope="session")
def demo_patchcores(demo_data) -> tuple[PatchCore, PatchCore]:
    """Two PatchCore fits on different demo tiles, so that their thresholds and memory banks differ."""
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))
    first = PatchCore(image_size=96, seed=0).fit([read_image(path) for path in train[:8]])
    second = PatchCore(image_size=96, seed=0).fit([read_image(path) for path in train[8:16]])
    assert first.thresholds_.image != second.thresholds_.image
    return first, second


REGION_DEFAULTS = {
    "index": 0,
    "parts": 1,
    "bbox": [0, 0, 10, 10],
    "area_pixels": 100,
    "area_fraction": 0.01,
    "centroid": [5.0, 5.0],
    "peak_score": 2.0,
    "mean_score": 1.5,
    "relative_peak": 2.0,
    "severity": "high",
    "grid": ["top left"],
    "position": "top left",
    "shape": "compact",
    "elongation": 1.0,
    "orientation_degrees": 0.0,
    "brightness": "similar",
    "appearance": [],
    "mean_intensity": 0.5,
    "surround_intensity": 0.5,
    "intensity_difference": 0.0,
    "colour_difference": 0.0,
}


def build_record(
    image: str = "part.png", anomalous: bool = True, regions: list[dict] | None = None, text: str = "text", **fields
) -> InspectionRecord:
    """A hand-made inspection record: each region is REGION_DEFAULTS with the given fields replaced."""
    regions = [{**REGION_DEFAULTS, "index": i, **region} for i, region in enumerate(regions or [])]
    severities = [r["severity"] for r in regions]
    values = {
        "image": image,
        "score": 2.0 if anomalous else 0.5,
        "normalized_score": 2.0 if anomalous else 0.5,
        "anomalous": anomalous,
        "verdict": "anomalous" if anomalous else "normal",
        "anomalous_area_fraction": sum(r["area_fraction"] for r in regions),
        "height": 100,
        "width": 100,
        "image_threshold": 1.0,
        "pixel_threshold": 0.5,
        "milliseconds": 1.0,
        "region_count": len(regions),
        "severity": max(severities, key=SEVERITY_ORDER.index) if severities else "none",
        "regions": regions,
        "explanation": {"text": text, "source": "offline"},
    }
    return InspectionRecord.model_validate({**values, **fields})


def wait_for_service(url: str, process: subprocess.Popen, seconds: float = 60.0) -> None:
    """Return once the service started as ``process`` answers ``/health`` at ``url``; fail if it ends or takes
    longer than ``seconds``."""
    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the service at {url} did not start")
        time.sleep(0.1)


# A service model fitted on 8 of the shipped magnetic-tile images at the default calibration: the good test tile
# stays below the threshold, and the blowhole tile is flagged where its ground truth is.
SERVICE_MODEL = {"image_size": 128, "min_bank_size": 256, "coreset_ratio": 0.1, "augment_below": 4}
SPOT, GOOD = "test/blowhole/exp4_num_4995.jpg", "test/good/exp4_num_332730.jpg"


def fit_service_model(demo_data: Path, folder: Path) -> Path:
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:8]
    PatchCore(**SERVICE_MODEL).fit([read_image(path) for path in train]).save(folder)
    return folder


def service_uploads(demo_data: Path) -> dict[str, bytes]:
    """The blowhole tile ("spot") and the good tile ("normal") as uploaded files."""
    tiles = demo_data / "magnetic_tile"
    return {"spot": (tiles / SPOT).read_bytes(), "normal": (tiles / GOOD).read_bytes()}
