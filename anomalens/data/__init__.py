"""Data access: image/mask reading and PNG writing, data set listings, tiling of large frames."""

from anomalens.data.datasets import NoImagesError, Sample, collect_images, folder_samples, iter_images, mvtec_samples
from anomalens.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    decode_image,
    encode_png,
    is_image_file,
    read_image,
    read_mask,
    to_uint8_rgb,
    write_png,
)
from anomalens.data.tiling import Tile, split_tiles, stitch_maps, tile_grid, tile_weight_window

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "NoImagesError",
    "Sample",
    "Tile",
    "collect_images",
    "decode_image",
    "encode_png",
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
    "write_png",
]
