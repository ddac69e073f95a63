"""EfficientAD: network shapes, the crop training, checkpoints, map normalisation and ONNX parity.

The shared contract (fit/predict/save/load) is checked in ``test_detector_conformance.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anomalens.cli.main import main as cli_main
from anomalens.data.generic import generic_images, random_generic_crops
from anomalens.models import EfficientAD, load_detector
from anomalens.models.efficientad.detector import MAP_QUANTILES
from anomalens.models.efficientad.pdn import BORDER_CELLS, PDN_WIDTHS, STRIDE, Autoencoder, pdn, pdn_grid
from anomalens.models.efficientad.torch_model import EfficientADModel
from anomalens.models.efficientad.training import Trainer, TrainingSettings, crop_offset, hard_feature_loss

ONNX_TOLERANCE = 1e-5  # README: ONNX Runtime gives PyTorch's maps within this (float32 rounding of maps up to ~3)
FAST = {"image_size": 128, "size": "cpu", "train_steps": 60, "train_batch_size": 4, "train_crop": 64}


@pytest.fixture(scope="module")
def normals(textures) -> list[np.ndarray]:
    return textures.normals([(128, 128)] * 8, first_seed=0)


@pytest.fixture(scope="module")
def fitted(normals) -> EfficientAD:
    return EfficientAD(**{**FAST, "autoencoder": True}).fit(normals)


@pytest.mark.parametrize("size", sorted(PDN_WIDTHS))
@pytest.mark.parametrize("image_size", [64, 128, 256])
def test_pdn_output_grid_is_the_valid_centre_of_the_stride_4_grid(size, image_size):
    network = pdn(size, 24)
    with torch.no_grad():
        out = network(torch.zeros(1, 3, image_size, image_size))
    side = image_size // STRIDE - 2 * BORDER_CELLS  # 56 cells for 256 pixels, as in the paper
    assert out.shape == (1, 24, pdn_grid(image_size), pdn_grid(image_size)) == (1, 24, side, side)


def test_pdn_sizes_follow_the_paper_widths():
    convs = {size: [m for m in pdn(size, 384) if isinstance(m, torch.nn.Conv2d)] for size in PDN_WIDTHS}
    assert [c.out_channels for c in convs["small"]] == [128, 256, 256, 384]
    assert [c.out_channels for c in convs["medium"]] == [256, 512, 512, 512, 384, 384]
    assert [c.out_channels for c in convs["cpu"]] == [64, 128, 128, 384]
    assert [c.kernel_size[0] for c in convs["small"]] == [4, 4, 3, 4]


def test_student_on_a_crop_equals_the_full_image_over_the_crop():
    """What the crop training relies on: an unpadded PDN on a crop starting on its 4-pixel grid computes
    exactly the whole image's output cells over that crop."""
    torch.manual_seed(0)
    network = pdn("cpu", 8).eval()
    image = torch.rand(1, 3, 128, 128)
    y0, x0, crop = 32, 48, 64
    with torch.no_grad():
        full = network(image)
        part = network(image[..., y0 : y0 + crop, x0 : x0 + crop])
    cells = pdn_grid(crop)
    expected = full[..., y0 // STRIDE : y0 // STRIDE + cells, x0 // STRIDE : x0 // STRIDE + cells]
    torch.testing.assert_close(part, expected, atol=1e-5, rtol=1e-5)


def test_crop_offsets_lie_on_the_grid_and_cover_the_view():
    rng = np.random.default_rng(0)
    offsets = [crop_offset(rng, 256, 128) for _ in range(400)]
    assert all(o % STRIDE == 0 and 0 <= o <= 128 for o in offsets)
    assert 0 in offsets and 128 in offsets and len(set(offsets)) == 33


@pytest.mark.parametrize("shape", [(33, 47), (128, 128), (300, 170)])
def test_default_image_score_is_the_maximum_of_the_returned_map(fitted, textures, shape):
    assert fitted.score_top_fraction == 0
    prediction = fitted.predict(textures.normal(*shape, seed=5))
    assert prediction.anomaly_map.shape == shape
    assert prediction.image_score == pytest.approx(float(prediction.anomaly_map.max()))


def test_map_reaches_the_image_edge(fitted, textures):
    """The PDN leaves 4 cells out at each edge; the map is extended there, so a defect at the edge shows."""
    base = textures.normal(128, 128, seed=44)
    image, truth = textures.defect(base, "blob", center=(64, 6), size=10, seed=2)
    amap = fitted.anomaly_map(image)
    assert amap[:, :8].max() > fitted.anomaly_map(base)[:, :8].max()


def test_hard_feature_loss_averages_only_the_largest_distances():
    teacher = torch.zeros(1, 1, 10, 100)
    student = torch.zeros(1, 1, 10, 100)
    student.view(-1)[:10] = torch.arange(1.0, 11.0)  # squared distances 1, 4, ..., 100; the rest 0
    loss = hard_feature_loss(teacher, student, 0.995)  # the top 0.5 % of 1000 values: the 5 largest
    cut = torch.quantile(torch.tensor([0.0] * 990 + [float(v * v) for v in range(1, 11)]), 0.995)
    expected = np.mean([v * v for v in range(1, 11) if v * v >= float(cut)])
    assert loss.item() == pytest.approx(expected)
    assert loss.item() > (student - teacher).pow(2).mean().item() * 10


def test_autoencoder_output_matches_the_student_grid():
    autoencoder = Autoencoder(16, pdn_grid(128))
    with torch.no_grad():
        assert autoencoder(torch.rand(2, 3, 128, 128)).shape == (2, 16, 24, 24)


def test_generic_images_ship_with_scikit_image():
    images = generic_images()
    assert len(images) >= 20 and all(i.ndim == 3 and i.shape[2] == 3 and i.dtype == np.float32 for i in images)
    crops = random_generic_crops(np.random.default_rng(1), 6, 64)
    assert crops.shape == (6, 64, 64, 3) and 0.0 <= crops.min() and crops.max() <= 1.0
    assert crops.reshape(6, -1).std(axis=1).min() > 0.01  # real picture content, not blank


def _trainer(tmp_path, steps: int, checkpoint: bool) -> Trainer:
    torch.manual_seed(0)
    model = EfficientADModel("cpu", image_size=64, autoencoder=True)
    settings = TrainingSettings(steps=steps, batch_size=2, crop=48, checkpoint_every=2, seed=3)
    return Trainer(model, settings, torch.device("cpu"), tmp_path / "ckpt" if checkpoint else None)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path, textures, monkeypatch):
    views = np.stack(textures.normals([(64, 64)] * 4, first_seed=0))
    straight = _trainer(tmp_path / "a", 4, checkpoint=False)
    straight.train(views, views[:1])

    killed = _trainer(tmp_path / "b", 4, checkpoint=True)
    real_step = Trainer._step

    def dies_at_step_3(self, images, teacher_maps, step, *draw_weights):
        if step == 3:
            raise KeyboardInterrupt  # the run is killed after the checkpoint of step 2
        return real_step(self, images, teacher_maps, step, *draw_weights)

    monkeypatch.setattr(Trainer, "_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        killed.train(views, views[:1])
    monkeypatch.undo()
    assert json.loads((tmp_path / "b" / "ckpt" / "checkpoint.json").read_text())["step"] == 2

    resumed = _trainer(tmp_path / "b", 4, checkpoint=True)
    report = resumed.train(views, views[:1])
    assert report.resumed_from == 2 and report.steps == 4
    for name, value in straight.model.student.state_dict().items():
        torch.testing.assert_close(resumed.model.student.state_dict()[name], value, atol=1e-6, rtol=1e-5)
    fresh = _trainer(tmp_path / "c", 4, checkpoint=False)
    assert not torch.allclose(fresh.model.student[0].weight, straight.model.student[0].weight)


def test_checkpoint_from_other_settings_is_refused(tmp_path, textures):
    views = np.stack(textures.normals([(64, 64)] * 2, first_seed=0))
    _trainer(tmp_path, 2, checkpoint=True).train(views, views[:1])
    other = _trainer(tmp_path, 4, checkpoint=True)
    other.settings.crop = 40
    with pytest.raises(ValueError, match="other training settings"):
        other.train(views, views[:1])


def test_training_lowers_the_student_teacher_distance(textures):
    views = np.stack(textures.normals([(64, 64)] * 4, first_seed=0))
    model = EfficientADModel("cpu", image_size=64, autoencoder=False)
    trainer = Trainer(model, TrainingSettings(steps=40, batch_size=4, crop=48, learning_rate=2e-3), torch.device("cpu"))
    before = trainer.validation_loss(views)
    trainer.train(views, views)
    assert trainer.validation_loss(views) < 0.7 * before


def test_time_budget_stops_training(textures):
    detector = EfficientAD(**{**FAST, "train_steps": 10_000, "max_train_seconds": 2.0})
    detector.fit(textures.normals([(128, 128)] * 5, first_seed=0))
    training = detector.info_["training"]
    assert training["stopped_early"] and training["steps"] < 10_000 and training["seconds"] < 20


def test_maps_are_normalised_by_held_back_quantiles(fitted, normals):
    """On the held-back normal images, the 0.9 and 0.995 quantiles of each raw map land on 0 and 0.1."""
    model = fitted.model_
    held_back = sorted(fitted._held_back(len(normals)))
    assert held_back and fitted.info_["n_validation_images"] == len(held_back)
    batch = torch.from_numpy(np.stack([normals[i] for i in held_back])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        local, global_ = model.raw_maps(batch)
    for raw, quantiles in ((local, model.local_quantiles), (global_, model.global_quantiles)):
        normalised = model._normalise(raw, quantiles).numpy().ravel()
        low, high = np.quantile(normalised, MAP_QUANTILES)
        assert low == pytest.approx(0.0, abs=1e-6) and high == pytest.approx(0.1, abs=1e-6)


def test_onnx_runtime_gives_the_pytorch_maps(fitted, textures, tmp_path):
    image, _ = textures.defect(textures.normal(128, 128, seed=40), "blob", size=12, seed=1)
    reference = fitted.predict(image)
    batch = torch.rand(3, 3, 128, 128)
    with torch.inference_mode():
        torch_maps = fitted.model_(batch)
    onnx_detector = load_detector(fitted.save(tmp_path / "model")).use_onnx(tmp_path / "model")
    assert (tmp_path / "model" / "model.onnx").is_file()
    difference = float((onnx_detector.onnx_scorer_(batch) - torch_maps).abs().max())
    print(f"ONNX Runtime vs PyTorch, max abs map difference: {difference:.2e}")
    assert difference < ONNX_TOLERANCE  # what the README promises
    through_onnx = onnx_detector.predict(image)
    assert np.abs(through_onnx.anomaly_map - reference.anomaly_map).max() < ONNX_TOLERANCE
    assert abs(through_onnx.image_score - reference.image_score) < ONNX_TOLERANCE
    assert through_onnx.is_anomalous == reference.is_anomalous


def test_no_autoencoder_has_a_local_map_only(textures, tmp_path):
    detector = EfficientAD(**{**FAST, "autoencoder": False}).fit(textures.normals([(128, 128)] * 5, first_seed=0))
    assert detector.model_.autoencoder is None
    assert detector.model_.student[-1].out_channels == detector.model_.channels
    detector.save(tmp_path / "m")
    assert not any(k.startswith("autoencoder") for k in detector._state_tensors())
    assert load_detector(tmp_path / "m").model_.autoencoder is None


def test_cli_fits_efficientad_with_its_options(tiny_mvtec, tmp_path, capsys):
    out = tmp_path / "model"
    code = cli_main(
        [
            "fit",
            str(tiny_mvtec.root),
            "--category",
            tiny_mvtec.category,
            "--model",
            "efficientad",
            "--size",
            "cpu",
            "--no-autoencoder",
            "--train-steps",
            "5",
            "--image-size",
            "64",
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
            "-o",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    params = json.loads((out / "config.json").read_text())["params"]
    assert params["size"] == "cpu" and params["autoencoder"] is False and params["train_steps"] == 5
    assert (tmp_path / "ckpt" / "checkpoint.json").is_file()
    code = cli_main(
        ["evaluate", str(out), str(tiny_mvtec.root), "--category", tiny_mvtec.category, "--runtime", "onnx"]
    )
    assert code == 0 and (out / "model.onnx").is_file()
    for runtime in ("torch", "onnx"):
        assert (
            cli_main(
                [
                    "predict",
                    str(out),
                    *map(str, tiny_mvtec.test_good + tiny_mvtec.test_spot),
                    "-o",
                    str(tmp_path / runtime),
                    "--runtime",
                    runtime,
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    by_runtime = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("torch", "onnx")]
    assert len(by_runtime[0]) == len(by_runtime[1]) > 0
    for a, b in zip(*by_runtime):
        assert a["image"] == b["image"] and a["anomalous"] == b["anomalous"]
        assert abs(a["score"] - b["score"]) < ONNX_TOLERANCE
    assert (
        cli_main(
            [
                "fit",
                str(tiny_mvtec.root),
                "--category",
                tiny_mvtec.category,
                "--size",
                "small",
                "-o",
                str(tmp_path / "pc"),
            ]
        )
        == 2
    )
    assert "does not apply to --model patchcore" in capsys.readouterr().err


def test_half_precision_is_refused_without_a_gpu(fitted, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: half precision is allowed here")
    fitted.save(tmp_path / "m")
    with pytest.raises(ValueError, match="CUDA"):
        load_detector(tmp_path / "m", "cpu", "fp16")
    with pytest.raises(ValueError, match="unknown runtime"):
        load_detector(tmp_path / "m", "cpu", "tensorrt")
