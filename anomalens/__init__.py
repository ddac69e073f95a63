"""anomalens: learn what a good product looks like from defect-free images, then find and outline defects.

Quick start::

    from anomalens import PatchCore, read_image
    detector = PatchCore().fit([read_image(p) for p in good_paths])
    prediction = detector.predict(read_image("part.png"))
    prediction.is_anomalous, prediction.image_score, prediction.anomaly_map
"""
from anomalens.data import read_image
from anomalens.models import PatchCore, create_detector, load_detector
from anomalens.types import Prediction, Thresholds

__version__ = "0.1.0"
__all__ = ["PatchCore", "Prediction", "Thresholds", "create_detector", "load_detector", "read_image"]
