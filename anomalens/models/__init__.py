"""Detectors: every model follows the ``Detector`` protocol of ``base.py``.

``create_detector`` builds one by name; ``load_detector`` reads any saved model directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalens.models.base import BaseDetector, Detector, NotFittedError, read_config
from anomalens.models.efficientad import EfficientAD
from anomalens.models.patchcore import PatchCore

RUNTIMES = ("torch", "fp16", "onnx")
DETECTORS: dict[str, type[BaseDetector]] = {PatchCore.name: PatchCore, EfficientAD.name: EfficientAD}


def create_detector(name: str, **params: Any) -> BaseDetector:
    if name not in DETECTORS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**params)


def load_detector(directory: str | Path, device: str | None = None, runtime: str = "torch") -> BaseDetector:
    """Load a saved model of any registered kind (on ``device`` when given). ``runtime="onnx"`` runs its
    network through ONNX Runtime (exported to ``directory/model.onnx`` on first use); ``"fp16"`` in float16
    autocast on a CUDA device."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    name = read_config(directory)["detector"]
    if name not in DETECTORS:
        raise ValueError(f"{directory}: unknown model kind {name!r}")
    detector = DETECTORS[name].load(directory, device)
    if runtime == "onnx":
        return detector.use_onnx(directory)
    return detector.use_half_precision() if runtime == "fp16" else detector


__all__ = [
    "BaseDetector",
    "DETECTORS",
    "Detector",
    "EfficientAD",
    "NotFittedError",
    "PatchCore",
    "create_detector",
    "load_detector",
]
