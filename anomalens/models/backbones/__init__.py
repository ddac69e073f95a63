"""Pretrained backbones used as frozen feature extractors (see ``registry`` for the names and layers)."""

from anomalens.models.backbones.efficientnet_lite import EfficientNetLite, efficientnet_lite
from anomalens.models.backbones.registry import FeatureExtractor, available_backbones, build_feature_extractor

__all__ = [
    "EfficientNetLite",
    "FeatureExtractor",
    "available_backbones",
    "build_feature_extractor",
    "efficientnet_lite",
]
