"""anomalens: learn what a good product looks like from defect-free images, then find and outline defects.

Quick start::

    from anomalens import PatchCore, read_image
    detector = PatchCore().fit([read_image(p) for p in good_paths])
    prediction = detector.predict(read_image("part.png"))
    prediction.is_anomalous, prediction.image_score, prediction.anomaly_map
"""

import os

# The one process-wide setting made at import (README, "Process settings"): line PCs share their few cores with
# cameras and PLC software, and OpenMP threads that spin while waiting then slow inference many times over
# (bench/README.md, "Notes on measuring"); passive waiting costs little on an idle machine. It must be here,
# before torch loads the OpenMP runtime, which reads it once; it is only a default, and has no effect when torch
# was imported first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from anomalens.data import read_image  # noqa: E402
from anomalens.models import EfficientAD, PatchCore, create_detector, load_detector  # noqa: E402
from anomalens.types import Prediction, Thresholds  # noqa: E402

__version__ = "0.1.0"
__all__ = ["EfficientAD", "PatchCore", "Prediction", "Thresholds", "create_detector", "load_detector", "read_image"]
