"""The regions a taxonomy names: those of a prediction's findings, or the strongest one a detector outlines."""

from __future__ import annotations

from typing import Any

import numpy as np

from anomalens.postprocessing.findings import extract_findings


def region_masks(prediction: Any, findings: Any) -> list[tuple[int, np.ndarray]]:
    """``(region index, bool mask)`` for each region of ``findings`` (all of a region's parts), from the label
    image the findings were measured on; findings read back without it fall back to each region's box."""
    out = []
    for region in findings.regions:
        if getattr(findings, "labels", None) is not None:
            out.append((region.index, findings.region_mask(region)))
            continue
        x0, y0, x1, y1 = region.box
        region_mask = np.zeros(np.asarray(prediction.mask).shape[:2], dtype=bool)
        region_mask[y0:y1, x0:x1] = True
        out.append((region.index, region_mask))
    return out


def strongest_region(detector: Any, image: np.ndarray) -> np.ndarray | None:
    """Mask of the strongest region ``detector`` outlines in ``image``, or None when it calls the image normal."""
    findings = extract_findings(detector.predict(image), image)
    return findings.region_mask(findings.regions[0]) if findings.regions else None
