"""Pictures of a prediction: heatmap overlay with outlined regions, and the binary mask."""

from __future__ import annotations

import cv2
import numpy as np

from anomalens.types import Prediction

OUTLINE_RGB = (255, 255, 255)


def heatmap_rgb(anomaly_map: np.ndarray, image_threshold: float) -> np.ndarray:
    """Colour a map on a fixed scale: 0 is blue, the image threshold is the middle, twice it is red.

    A fixed scale (rather than min-max per image) keeps colours comparable between images: a normal image
    stays blue instead of having its noise stretched to red.
    """
    scale = 2.0 * image_threshold if image_threshold > 0 else max(float(anomaly_map.max()), 1e-12)
    levels = np.clip(anomaly_map / scale, 0.0, 1.0)
    colored = cv2.applyColorMap((levels * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)


def overlay(image_rgb: np.ndarray, prediction: Prediction, alpha: float = 0.45) -> np.ndarray:
    """Image blended with its heatmap, predicted regions outlined. Input and output are uint8 RGB."""
    heat = heatmap_rgb(prediction.anomaly_map, prediction.thresholds.image)
    blended = cv2.addWeighted(image_rgb, 1.0 - alpha, heat, alpha, 0.0)
    if prediction.mask.any():
        contours, _ = cv2.findContours(prediction.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(min(image_rgb.shape[:2]) / 200))
        cv2.drawContours(blended, contours, -1, OUTLINE_RGB, thickness)
    return blended


def mask_png(prediction: Prediction) -> np.ndarray:
    return prediction.mask.astype(np.uint8) * 255
