"""Detectors: every model follows the ``Detector`` protocol of ``base.py``.

``create_detector`` builds one by name; ``load_detector`` reads any saved model directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalens.models.base import BaseDetector, Detector, NotFittedError, read_config
from anomalens.models.efficientad import EfficientAD
from anomalens.models.patchcore import PatchCore

RUNTIMES = ("auto", "torch", "fp16", "onnx")
DEFAULT_RUNTIME = "auto"
# A model loaded to be changed (learned from, fine-tuned) or only read runs in PyTorch: a graph exported for it
# would compute the state before the change, and exporting one costs seconds that nothing wins back.
CHANGING_RUNTIME = "torch"
DETECTORS: dict[str, type[BaseDetector]] = {PatchCore.name: PatchCore, EfficientAD.name: EfficientAD}


def create_detector(name: str, **params: Any) -> BaseDetector:
    if name not in DETECTORS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**params)


def load_detector(directory: str | Path, device: str | None = None, runtime: str = DEFAULT_RUNTIME) -> BaseDetector:
    """Load a saved model of any registered kind (on ``device`` when given). ``runtime="onnx"`` runs its
    network through ONNX Runtime (exported to ``directory/model.onnx``, and again whenever the model has changed
    since); ``"fp16"`` in float16 autocast on a CUDA device; ``"torch"`` in PyTorch; ``"auto"`` (the default)
    through ONNX Runtime where it is installed and the network runs on the CPU, else PyTorch
    (:meth:`BaseDetector.use_fast_runtime`). ``detector.runtime`` says which one computes its maps."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    name = read_config(directory)["detector"]
    if name not in DETECTORS:
        raise ValueError(f"{directory}: unknown model kind {name!r}")
    detector = DETECTORS[name].load(directory, device)
    if runtime == "auto":
        return detector.use_fast_runtime(directory)
    if runtime == "onnx":
        return detector.use_onnx(directory)
    return detector.use_half_precision() if runtime == "fp16" else detector


__all__ = [
    "BaseDetector",
    "CHANGING_RUNTIME",
    "DEFAULT_RUNTIME",
    "DETECTORS",
    "Detector",
    "EfficientAD",
    "NotFittedError",
    "PatchCore",
    "RUNTIMES",
    "create_detector",
    "load_detector",
]
