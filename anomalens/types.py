"""Plain data types passed between the stages of the pipeline.

They hold numbers and arrays only, and each turns into JSON with ``to_dict`` so that the CLI, the service and
reports never need to know which detector produced them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

from anomalens.postprocessing.rates import expected_rates


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds a detector chose for itself at fit time (no user input)."""

    image: float
    pixel: float
    method: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        return cls(**data)

    @cached_property
    def expected(self) -> dict[str, float]:
        """What a user can expect at the image threshold, from the calibration kept in ``details`` (computed
        once: every prediction's record carries it)."""
        return expected_rates(self.image, self.details)


@dataclass
class Prediction:
    """What a detector says about one image.

    ``anomaly_map`` has the input image's height and width; ``mask`` is the map above the pixel threshold and
    in the upper quarter of the image's own range (:func:`anomalens.postprocessing.outline.outline_mask`), and is empty
    whenever the image-level verdict is normal so that verdict and regions never disagree.
    """

    image_score: float
    anomaly_map: np.ndarray
    is_anomalous: bool
    mask: np.ndarray
    thresholds: Thresholds

    @property
    def normalized_score(self) -> float:
        """Score in units of the image threshold: above 1.0 means anomalous."""
        return self.image_score / self.thresholds.image if self.thresholds.image > 0 else float("inf")

    def to_dict(self) -> dict:
        """JSON-ready summary (the maps themselves are written as images, not into JSON)."""
        return {
            "score": round(float(self.image_score), 6),
            "normalized_score": round(float(self.normalized_score), 4),
            "anomalous": bool(self.is_anomalous),
            "verdict": "anomalous" if self.is_anomalous else "normal",
            "anomalous_area_fraction": round(float(self.mask.mean()), 6) if self.mask.size else 0.0,
            "height": int(self.anomaly_map.shape[0]),
            "width": int(self.anomaly_map.shape[1]),
            "image_threshold": round(float(self.thresholds.image), 6),
            "pixel_threshold": round(float(self.thresholds.pixel), 6),
            **{
                f"expected_{name}": round(float(value), 4)
                for name, value in self.thresholds.expected.items()
                if name in ("false_alarm_rate", "simulated_detection_rate")
            },
        }
