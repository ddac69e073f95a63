"""Which pixels of an anomalous image are outlined as defect: :func:`outline_mask`.

A pixel is outlined when its score reaches the pixel threshold *and* lies in the upper part of the image's own
range, at or above ``median + level * (peak - median)`` (``level`` 0.75: the upper quarter between the image's
typical level and its peak). The pixel threshold alone outlines too much wherever a whole image scores a little
higher than the normal images did (lighting, another batch): on magnetic tile it outlined wide areas around
small blowholes, so regions merged, and their count, places and shapes said little. The relative bound keeps
the cores that make the verdict. The level was chosen on the validation halves of the suite's categories with
masks (``bench/outline_validation.py``, ``bench/results/outline_validation.md``).
"""

from __future__ import annotations

import numpy as np

OUTLINE_LEVEL = 0.75
_MEDIAN_STRIDE = 4  # the image's typical level from every 4th pixel in each direction: same value, 16x cheaper


def outline_mask(anomaly_map: np.ndarray, pixel_threshold: float = -np.inf, level: float = OUTLINE_LEVEL) -> np.ndarray:
    """Boolean mask of the outlined pixels of ``anomaly_map`` (see the module docstring); ``level`` 0 gives the
    plain ``anomaly_map >= pixel_threshold``. Never empty for a map with a finite maximum at or above the
    pixel threshold."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if level <= 0:
        return amap >= pixel_threshold
    peak = float(amap.max())
    typical = float(np.median(amap[::_MEDIAN_STRIDE, ::_MEDIAN_STRIDE]))
    return amap >= max(float(pixel_threshold), typical + level * (peak - typical))


__all__ = ["OUTLINE_LEVEL", "outline_mask"]
