"""Generic natural images that ship inside scikit-image: the offline stand-in for ImageNet.

EfficientAD's penalty term shows the student images unlike the product so that it learns not to imitate the
teacher everywhere; the paper draws them from ImageNet. These two dozen photographs, textures and micrographs
are installed with scikit-image (no download), and random crops, flips and colour changes of them serve the
same purpose.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# every image that skimage.data holds locally (the others need a download)
GENERIC_IMAGE_NAMES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "checkerboard",
    "stereo_motorcycle",
)


@lru_cache(maxsize=1)
def generic_images() -> tuple[np.ndarray, ...]:
    """The generic images as float32 RGB in [0, 1]."""
    from skimage import data

    images = []
    for name in GENERIC_IMAGE_NAMES:
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append(image[..., :3].astype(np.float32) / 255.0)
    return tuple(images)


def random_generic_crops(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` random ``size``-pixel crops (random scale, flip, brightness) as [count, size, size, 3]."""
    images = generic_images()
    crops = np.empty((count, size, size, 3), dtype=np.float32)
    for i in range(count):
        image = images[rng.integers(len(images))]
        scale = rng.uniform(0.5, 1.5) * size / min(image.shape[:2])
        side = max(size, int(round(min(image.shape[:2]) * scale)))
        height = max(size, int(round(image.shape[0] * side / min(image.shape[:2]))))
        width = max(size, int(round(image.shape[1] * side / min(image.shape[:2]))))
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        y, x = rng.integers(height - size + 1), rng.integers(width - size + 1)
        crop = resized[y : y + size, x : x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops[i] = np.clip(crop * rng.uniform(0.7, 1.3), 0.0, 1.0)
    return crops
