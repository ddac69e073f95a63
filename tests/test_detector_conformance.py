"""Every registered detector must honour the ``Detector`` contract that the CLI, evaluation and service rely on.

The module is parametrised over ``anomalens.models.DETECTORS``, so a newly registered detector is checked
automatically. ``FAST_PARAMS`` holds small settings per detector name (to keep the suite quick); a detector
not listed there is built with ``image_size=128`` (if it takes one) and otherwise its defaults.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalens.models import DETECTORS, BaseDetector, Detector, NotFittedError, create_detector, load_detector
from anomalens.postprocessing.outline import outline_mask
from anomalens.types import Prediction, Thresholds

FAST_PARAMS: dict[str, dict] = {
    "patchcore": {"image_size": 128, "min_bank_size": 256, "coreset_ratio": 0.1, "augment_below": 4},
    # 150 steps instead of thousands: the maximum of so young a student's map (the default image score) is too
    # noisy for the held-out-normal checks, so the top-5 % mean is used here; test_efficientad covers the max
    "efficientad": {
        "image_size": 128,
        "size": "cpu",
        "train_steps": 150,
        "train_batch_size": 4,
        "train_crop": 64,
        "score_top_fraction": 0.05,
    },
}
NAMES = sorted(DETECTORS)
TRAIN_SHAPES = [(96, 128), (112, 96), (128, 128), (80, 120), (100, 100)]
HELD_OUT_SHAPE = (104, 136)
# non-square sizes, larger and smaller than the network input, portrait and landscape
ODD_SHAPES = [(72, 200), (150, 90), (33, 47), (131, 129)]


def fast_params(name: str) -> dict:
    if name in FAST_PARAMS:
        return dict(FAST_PARAMS[name])
    return {"image_size": 128} if "image_size" in DETECTORS[name]._param_names() else {}


def argmax_distance(anomaly_map: np.ndarray, mask: np.ndarray) -> float:
    """Pixel distance from the map's maximum to the nearest defect pixel (0 when it lies inside)."""
    ay, ax = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
    ys, xs = np.nonzero(mask)
    return float(np.sqrt(((ys - ay) ** 2 + (xs - ax) ** 2).min()))


@pytest.fixture(scope="module", params=NAMES)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def train_images(textures) -> list[np.ndarray]:
    return textures.normals(TRAIN_SHAPES, first_seed=0)


@pytest.fixture(scope="module")
def held_out_normals(textures) -> list[np.ndarray]:
    return textures.normals([HELD_OUT_SHAPE] * 4, first_seed=50)


@pytest.fixture(scope="module")
def fitted(name, train_images):
    """(detector, what fit returned), fitted once per detector kind for the whole module."""
    detector = create_detector(name, **fast_params(name))
    returned = detector.fit(train_images)
    return detector, returned


# -- the contract ----------------------------------------------------------------------------------------------
def test_registry_entry_builds_a_detector(name):
    detector = create_detector(name, **fast_params(name))
    assert isinstance(detector, Detector)
    assert isinstance(detector, BaseDetector)
    assert type(detector) is DETECTORS[name]
    assert type(detector).name == name  # load_detector finds the class by this name


def test_fit_returns_self(fitted):
    detector, returned = fitted
    assert returned is detector


def test_predict_before_fit_raises_not_fitted(name, textures, tmp_path):
    detector = create_detector(name, **fast_params(name))
    image = textures.normal(64, 80, seed=1)
    with pytest.raises(NotFittedError):
        detector.predict(image)
    with pytest.raises(NotFittedError):
        detector.anomaly_map(image)
    with pytest.raises(NotFittedError):
        detector.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=[f"{h}x{w}" for h, w in ODD_SHAPES])
def test_prediction_has_input_shape_and_types(fitted, textures, shape):
    detector, _ = fitted
    image = textures.normal(*shape, seed=7)
    prediction = detector.predict(image)
    assert isinstance(prediction, Prediction)
    amap = prediction.anomaly_map
    assert amap.shape == shape
    assert amap.dtype == np.float32
    assert np.isfinite(amap).all()
    assert amap.std() > 0  # a real map, not a constant fill
    assert prediction.mask.dtype == np.bool_ and prediction.mask.shape == shape
    # the score summarises the map's highest values: at most its maximum, above its typical level
    assert float(np.median(amap)) < prediction.image_score <= float(amap.max()) + 1e-5
    assert isinstance(prediction.is_anomalous, bool)


def test_constant_image_gives_finite_map(fitted):
    detector, _ = fitted
    prediction = detector.predict(np.full((90, 70, 3), 0.5, dtype=np.float32))
    assert prediction.anomaly_map.shape == (90, 70)
    assert np.isfinite(prediction.anomaly_map).all() and np.isfinite(prediction.image_score)


def test_thresholds_are_set_and_ordered(fitted):
    detector, _ = fitted
    thresholds = detector.thresholds_
    assert isinstance(thresholds, Thresholds)
    assert np.isfinite(thresholds.image) and thresholds.image > 0
    assert np.isfinite(thresholds.pixel) and thresholds.pixel <= thresholds.image
    json.dumps(thresholds.to_dict())  # JSON-ready, it goes into config.json


def test_mask_agrees_with_verdict(fitted, held_out_normals, textures):
    detector, _ = fitted
    normal_predictions = [detector.predict(image) for image in held_out_normals]
    # held-out normals are mostly judged normal, and a normal verdict never comes with regions
    assert sum(not p.is_anomalous for p in normal_predictions) >= len(normal_predictions) - 1
    for p in normal_predictions:
        assert p.is_anomalous == (p.image_score >= p.thresholds.image)
        if not p.is_anomalous:
            assert not p.mask.any()
    image, truth = textures.defect(textures.normal(*HELD_OUT_SHAPE, seed=60), "blob", size=14, seed=3)
    defective = detector.predict(image)
    assert defective.is_anomalous
    assert defective.mask.any()
    np.testing.assert_array_equal(
        defective.mask, outline_mask(defective.anomaly_map, defective.thresholds.pixel, detector.outline_level)
    )
    assert (defective.mask & truth).sum() >= 0.5 * truth.sum()  # the outline covers the defect


@pytest.mark.parametrize("kind", ["blob", "scratch"])
def test_planted_defect_scores_higher_and_is_localised(fitted, held_out_normals, textures, kind):
    detector, _ = fitted
    normal_scores = [detector.predict(image).image_score for image in held_out_normals]
    for seed in range(3):
        base = textures.normal(*HELD_OUT_SHAPE, seed=60 + seed)
        # keep the defect clear of the border: see test_patchcore for what happens near corners
        center = (
            int(np.random.default_rng(seed).integers(35, 70)),
            int(np.random.default_rng(seed + 9).integers(35, 100)),
        )
        image, truth = textures.defect(base, kind, center=center, size=14, seed=seed)
        prediction = detector.predict(image)
        assert prediction.image_score > max(normal_scores), (kind, seed, prediction.image_score, normal_scores)
        assert detector.predict(base).image_score < prediction.image_score
        assert argmax_distance(prediction.anomaly_map, truth) <= 4.0, (kind, seed)


# -- persistence -------------------------------------------------------------------------------------------------
def test_save_load_gives_identical_predictions(fitted, textures, tmp_path):
    detector, _ = fitted
    returned = detector.save(tmp_path / "model")
    assert Path(returned) == tmp_path / "model"
    # in PyTorch, as the fitted detector runs: saving and loading lose nothing (ONNX Runtime: test_runtimes.py)
    loaded = load_detector(tmp_path / "model", runtime="torch")
    assert type(loaded) is type(detector)
    assert loaded.get_params() == detector.get_params()
    assert loaded.thresholds_ == detector.thresholds_
    images = [textures.normal(*shape, seed=20 + i) for i, shape in enumerate(ODD_SHAPES[:2])]
    images.append(textures.defect(textures.normal(*HELD_OUT_SHAPE, seed=61), "scratch", seed=1)[0])
    for image in images:
        before, after = detector.predict(image), loaded.predict(image)
        assert np.array_equal(before.anomaly_map, after.anomaly_map)
        assert np.array_equal(before.mask, after.mask)
        assert before.image_score == after.image_score and before.is_anomalous == after.is_anomalous


def _is_safetensors(path: Path) -> bool:
    """safetensors layout: 8-byte little-endian header length, then a JSON header describing the tensors."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    if not 0 < header_len <= len(data) - 8:
        return False
    header = json.loads(data[8 : 8 + header_len])
    return all("dtype" in v and "shape" in v and "data_offsets" in v for k, v in header.items() if k != "__metadata__")


def test_saved_directory_is_json_and_safetensors_only(fitted, tmp_path):
    detector, _ = fitted
    detector.save(tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert len(files) == 2 and "config.json" in files, files
    state = [f for f in files if f != "config.json"]
    assert state[0].endswith(".safetensors"), files
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["detector"] == type(detector).name
    assert _is_safetensors(tmp_path / "model" / state[0])
    for f in files:  # no pickle stream anywhere (protocol 2+ starts with 0x80, zip archives with PK)
        head = (tmp_path / "model" / f).read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK"


def test_load_never_unpickles(fitted, tmp_path, monkeypatch):
    """Loading reads JSON and safetensors only.

    pickle is blocked outright. torch.load stays allowed for the frozen backbone's own packaged weights, but
    only in ``weights_only`` mode, and never for a file of the model directory.
    """
    detector, _ = fitted
    model_dir = (tmp_path / "model").resolve()
    detector.save(model_dir)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a model")

    real_torch_load = torch.load

    def guarded_torch_load(f, *args, **kwargs):
        if isinstance(f, (str, Path)) and model_dir in Path(f).resolve().parents:
            raise AssertionError(f"torch.load of a model file {f}")
        if kwargs.get("weights_only") is not True:
            raise AssertionError(f"torch.load without weights_only=True: {f}")
        return real_torch_load(f, *args, **kwargs)

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", guarded_torch_load)
    load_detector(model_dir)  # the default runtime, which may export the network, unpickles nothing either
    loaded = load_detector(model_dir, runtime="torch")
    monkeypatch.undo()
    assert loaded.thresholds_ == detector.thresholds_
    image = np.full((40, 50, 3), 0.3, dtype=np.float32)
    assert np.array_equal(loaded.anomaly_map(image), detector.anomaly_map(image))


def test_get_params_round_trip_through_json(fitted, name, tmp_path):
    detector, _ = fitted
    params = detector.get_params()
    assert set(fast_params(name)) <= set(params)
    for key, value in fast_params(name).items():
        assert params[key] == value
    decoded = json.loads(json.dumps(params))
    rebuilt = DETECTORS[name](**decoded)
    assert json.loads(json.dumps(rebuilt.get_params())) == decoded
    detector.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["params"] == decoded


# -- behaviour -----------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_maps(fitted, name, train_images, textures):
    detector, _ = fitted
    again = create_detector(name, **fast_params(name)).fit(train_images)
    assert again.thresholds_ == detector.thresholds_
    for image in (textures.normal(*HELD_OUT_SHAPE, seed=51), textures.normal(77, 140, seed=52)):
        assert np.array_equal(again.anomaly_map(image), detector.anomaly_map(image))


def test_fit_on_a_single_image(name, textures):
    """Few-shot: one normal image (passed as a one-pass iterator) is enough to fit and predict."""
    detector = create_detector(name, **fast_params(name))
    assert detector.fit(iter([textures.normal(96, 128, seed=0)])) is detector
    thresholds = detector.thresholds_
    assert thresholds is not None and thresholds.image > 0 and thresholds.pixel <= thresholds.image
    normal = detector.predict(textures.normal(*HELD_OUT_SHAPE, seed=50))
    image, truth = textures.defect(textures.normal(*HELD_OUT_SHAPE, seed=60), "blob", center=(50, 70), size=14)
    defective = detector.predict(image)
    assert normal.anomaly_map.shape == defective.anomaly_map.shape == HELD_OUT_SHAPE
    assert np.isfinite(defective.anomaly_map).all()
    assert defective.is_anomalous and defective.image_score > normal.image_score
    assert argmax_distance(defective.anomaly_map, truth) <= 4.0


def test_tiling_large_frame(name, textures):
    """With tile_size set, a 300x500 frame gets a full-resolution map and a small defect in the far corner
    (bottom-right, covered by the last tile only) is found."""
    params = {**fast_params(name), "tile_size": 160, "tile_overlap": 32}
    params["image_size"] = 128
    detector = create_detector(name, **params).fit(textures.normals([(300, 500)] * 4, first_seed=0))
    normal = detector.predict(textures.normal(300, 500, seed=50))
    image, truth = textures.defect(textures.normal(300, 500, seed=70), "blob", center=(270, 470), size=12)
    prediction = detector.predict(image)
    assert prediction.anomaly_map.shape == (300, 500) and prediction.mask.shape == (300, 500)
    assert prediction.anomaly_map.dtype == np.float32 and np.isfinite(prediction.anomaly_map).all()
    assert not normal.is_anomalous
    assert prediction.is_anomalous and prediction.image_score > normal.image_score
    assert (prediction.mask & truth).sum() >= 0.5 * truth.sum()
    assert argmax_distance(prediction.anomaly_map, truth) <= 4.0
