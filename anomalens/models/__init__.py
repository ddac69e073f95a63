"""Detectors: every model follows the ``Detector`` protocol of ``base.py``.

``create_detector`` builds one by name; ``load_detector`` reads any saved model directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalens.models.base import BaseDetector, Detector, NotFittedError, read_config
from anomalens.models.efficientad import EfficientAD
from anomalens.models.patchcore import PatchCore

DETECTORS: dict[str, type[BaseDetector]] = {PatchCore.name: PatchCore, EfficientAD.name: EfficientAD}


def create_detector(name: str, **params: Any) -> BaseDetector:
    if name not in DETECTORS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**params)


def load_detector(directory: str | Path, device: str | None = None) -> BaseDetector:
    """Load a saved model of any registered kind (on ``device`` when given)."""
    name = read_config(directory)["detector"]
    if name not in DETECTORS:
        raise ValueError(f"{directory}: unknown model kind {name!r}")
    return DETECTORS[name].load(directory, device)


__all__ = ["BaseDetector", "DETECTORS", "Detector", "EfficientAD", "NotFittedError", "PatchCore", "create_detector",
           "load_detector"]
