"""outline_mask: the pixel threshold plus the upper part of the image's own range."""

from __future__ import annotations

import numpy as np

from anomalens.models import PatchCore
from anomalens.postprocessing.outline import outline_mask


def test_a_raised_background_is_not_outlined_only_the_peak_is():
    amap = np.full((64, 64), 1.2, np.float32)  # the whole image scores above the pixel threshold 1.0
    amap[30:34, 30:34] = 3.0
    assert outline_mask(amap, 1.0, level=0).all()
    outlined = outline_mask(amap, 1.0)
    assert outlined.sum() == 16 and outlined[30:34, 30:34].all()


def test_the_pixel_threshold_still_applies_and_the_peak_is_never_lost():
    amap = np.zeros((32, 32), np.float32)
    amap[5, 5], amap[20, 20] = 1.0, 0.8
    assert outline_mask(amap, 0.9).sum() == 1  # 0.8 is above the outline level, not the threshold
    assert outline_mask(amap, 0.5).sum() == 2
    assert outline_mask(amap, 0.5, level=0.85).sum() == 1  # and below a higher level
    assert outline_mask(amap, 2.0).sum() == 0  # below the pixel threshold: nothing
    flat = np.full((8, 8), 0.3, np.float32)
    assert outline_mask(flat, 0.1).all()  # no peak: every pixel is at the maximum


def test_a_detector_outlines_with_its_outline_level(tmp_path):
    rng = np.random.default_rng(0)
    normals = [np.clip(0.5 + 0.02 * rng.standard_normal((64, 64, 3)), 0, 1).astype(np.float32) for _ in range(6)]
    detector = PatchCore(image_size=64).fit(normals)
    image = normals[0].copy()
    image[20:30, 20:30] = 0.0
    image += 0.15  # brighter overall, a dark square
    prediction = detector.predict(image)
    assert prediction.is_anomalous
    detector.outline_level = 0.0
    plain = detector.predict(image)
    assert prediction.mask.sum() < plain.mask.sum()
    assert not (prediction.mask & ~plain.mask).any()
    y, x = np.unravel_index(int(np.argmax(prediction.anomaly_map)), prediction.anomaly_map.shape)
    assert prediction.mask[y, x]
