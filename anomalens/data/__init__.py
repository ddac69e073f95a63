"""Data access: image/mask reading, data set listings, tiling of large frames."""

from .datasets import Sample, collect_images, folder_samples, iter_images, mvtec_samples
from .io import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_image, read_mask, to_uint8_rgb
from .tiling import Tile, split_tiles, stitch_maps, tile_grid, tile_weight_window

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "Sample",
    "Tile",
    "collect_images",
    "folder_samples",
    "is_image_file",
    "iter_images",
    "mvtec_samples",
    "read_image",
    "read_mask",
    "split_tiles",
    "stitch_maps",
    "tile_grid",
    "tile_weight_window",
    "to_uint8_rgb",
]
