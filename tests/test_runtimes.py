"""The runtime "auto" (the default): ONNX Runtime where it is installed and the network runs on the CPU, PyTorch
otherwise; an exported graph is used only while it matches the model it sits beside."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalens import api
from anomalens.data import read_image
from anomalens.learning import learn_normal_images
from anomalens.models import BaseDetector, PatchCore, load_detector
from anomalens.models import base as detector_base
from anomalens.models.onnx_runtime import ONNX_FILE, onnx_available, onnx_graph, write_whole
from anomalens.models.versions import ModelVersions

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

# float32 sums in another order: the same maps up to rounding, relative to the map's scale
MAP_TOLERANCE = 1e-5
IMAGES = ("test/good/exp4_num_332730.jpg", "test/blowhole/exp4_num_4995.jpg")


def assert_same_predictions(got: BaseDetector, expected: BaseDetector, demo_data: Path) -> None:
    for name in IMAGES:
        image = read_image(demo_data / "magnetic_tile" / name)
        a, b = got.predict(image), expected.predict(image)
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= MAP_TOLERANCE * b.anomaly_map.max()
        assert a.image_score == pytest.approx(b.image_score, rel=MAP_TOLERANCE)
        assert a.is_anomalous == b.is_anomalous


def graph_of(directory: Path) -> str | None:
    """The state fingerprint the graph in ``directory`` was exported from."""
    return load_detector(directory, "cpu", "onnx").onnx_scorer_.fingerprint


def test_auto_runs_onnx_runtime_with_the_pytorch_maps(demo_patchcores, demo_data, tmp_path):
    assert onnx_available()
    first, _ = demo_patchcores
    folder = first.save(tmp_path / "model")
    auto = load_detector(folder)  # the default runtime, on the model's default device (this CPU)
    assert auto.runtime == "onnx" and (folder / ONNX_FILE).is_file()
    assert graph_of(folder) == first.state_fingerprint()
    torch_only = load_detector(folder, runtime="torch")
    assert torch_only.runtime == "torch" and torch_only.onnx_scorer_ is None
    assert_same_predictions(auto, torch_only, demo_data)
    assert not list(folder.glob(f".{ONNX_FILE}*"))  # no half-written export left behind


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_auto_runs_pytorch_without_the_onnx_extra(demo_patchcores, tmp_path, monkeypatch, missing):
    folder = demo_patchcores[0].save(tmp_path / "model")
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    detector = load_detector(folder)
    assert detector.runtime == "torch" and not (folder / ONNX_FILE).exists()


def test_auto_runs_pytorch_off_the_cpu(demo_patchcores, tmp_path, monkeypatch):
    folder = demo_patchcores[0].save(tmp_path / "model")
    detector = load_detector(folder, runtime="torch")
    # as on a CUDA machine: the decision only asks where the network runs
    monkeypatch.setattr(BaseDetector, "torch_device", property(lambda self: torch.device("cuda")))
    assert detector.use_fast_runtime(folder).runtime == "torch" and not (folder / ONNX_FILE).exists()


def test_a_failed_export_leaves_auto_on_pytorch_and_stops_explicit_onnx(demo_patchcores, tmp_path, monkeypatch, caplog):
    folder = demo_patchcores[0].save(tmp_path / "model")

    def failing_export(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(detector_base, "onnx_graph", failing_export)
    with caplog.at_level(logging.WARNING, logger="anomalens.models.base"):
        assert load_detector(folder).runtime == "torch"
    assert "runs in PyTorch" in caplog.text and "exporter broke" in caplog.text
    with pytest.raises(RuntimeError, match="exporter broke"):
        load_detector(folder, runtime="onnx")
    assert not (folder / ONNX_FILE).exists()


def test_a_graph_of_another_state_is_exported_again_not_used(demo_patchcores, demo_data, tmp_path):
    first, second = demo_patchcores
    folder = tmp_path / "model"
    first.write_files(folder)
    load_detector(folder)  # exports the first fit's graph
    first_graph = (folder / ONNX_FILE).read_bytes()
    second.write_files(folder)  # a refit written over the same files; the old graph stays beside them
    assert (folder / ONNX_FILE).read_bytes() == first_graph
    refit = load_detector(folder)
    assert refit.runtime == "onnx" and graph_of(folder) == second.state_fingerprint() != first.state_fingerprint()
    assert_same_predictions(refit, load_detector(folder, runtime="torch"), demo_data)


def test_each_version_runs_its_own_graph(demo_patchcores, tmp_path):
    first, second = demo_patchcores
    folder = tmp_path / "model"
    first.save(folder)
    load_detector(folder)
    second.save(folder)  # version 2
    assert graph_of(folder) == second.state_fingerprint()
    ModelVersions(folder).rollback(1)  # version 3: version 1's files again
    assert graph_of(folder) == first.state_fingerprint()
    assert graph_of(ModelVersions(folder).path_of(2)) == second.state_fingerprint()


@pytest.mark.parametrize("left", ["unreadable", "unmarked"])
def test_an_unreadable_or_unmarked_graph_is_exported_again(demo_patchcores, tmp_path, caplog, left):
    first, _ = demo_patchcores
    folder = first.save(tmp_path / "model")
    if left == "unreadable":
        (folder / ONNX_FILE).write_bytes(b"not a graph")
    else:  # as exported before graphs carried the state they were made from
        loaded = load_detector(folder, runtime="torch")
        write_whole(onnx_graph(loaded.inference_module(), loaded.input_size), folder / ONNX_FILE)
    with caplog.at_level(logging.INFO, logger="anomalens.models.onnx_runtime"):
        assert load_detector(folder, runtime="onnx").runtime == "onnx"
    assert ("cannot be read" if left == "unreadable" else "another state") in caplog.text
    assert graph_of(folder) == first.state_fingerprint()


def test_learned_patches_count_under_auto_after_saving_and_loading(demo_patchcores, demo_data, tmp_path):
    folder = demo_patchcores[0].save(tmp_path / "model")
    detector = load_detector(folder)
    image = read_image(demo_data / "magnetic_tile" / IMAGES[1])
    assert detector.predict(image).is_anomalous
    api.save_change(
        folder, detector, learn_normal_images(detector, [("blowhole.jpg", image)], "ann", force=True), "ann"
    )
    # learned patches count by place, which the graph does not know: PyTorch scores them, whatever was chosen
    assert detector.predict(image).is_anomalous is False
    assert load_detector(folder).predict(image).is_anomalous is False


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = write_whole(b"old graph", tmp_path / ONNX_FILE)

    def half_then_fail(self, data):
        with open(self, "wb") as file:
            file.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_whole(b"new graph, longer", target)
    assert target.read_bytes() == b"old graph" and list(tmp_path.iterdir()) == [target]


def test_a_folder_that_cannot_be_written_to_runs_the_graph_from_memory(demo_patchcores, tmp_path, monkeypatch, caplog):
    folder = demo_patchcores[0].save(tmp_path / "model")

    def read_only(data, path):
        raise PermissionError(f"read-only file system: '{path}'")

    monkeypatch.setattr(detector_base, "write_whole", read_only)
    with caplog.at_level(logging.WARNING, logger="anomalens.models.base"):
        assert load_detector(folder).runtime == "onnx"
    assert "runs from memory" in caplog.text and not (folder / ONNX_FILE).exists()


# -- the fit's patch features ---------------------------------------------------------------------------------
def demo_training(demo_data: Path, count: int = 8) -> list[np.ndarray]:
    return [read_image(path) for path in sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:count]]


def test_the_fit_embeds_through_onnx_runtime_with_the_pytorch_features(demo_patchcores, demo_data):
    fitted = demo_patchcores[0]
    assert fitted.patch_features_.runtime == "onnx"  # the fit ran its backbone in ONNX Runtime
    batch = fitted._to_tensor([view.pixels for view in fitted._views(demo_training(demo_data, 1)[0])])
    with torch.inference_mode():
        expected = fitted.model_.embed(batch)
        got = fitted._embed(batch)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= MAP_TOLERANCE * float(expected.abs().max())


def test_a_fit_without_the_onnx_extra_or_with_a_failed_export_runs_pytorch_to_the_same_model(
    demo_patchcores, demo_data, monkeypatch, caplog
):
    onnx_fit = demo_patchcores[0]
    monkeypatch.setattr("anomalens.models.onnx_runtime.onnx_available", lambda: False)
    torch_fit = PatchCore(image_size=96, seed=0).fit(demo_training(demo_data))
    assert torch_fit.patch_features_.runtime == "torch"
    monkeypatch.undo()

    def failing_export(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr("anomalens.models.onnx_runtime.onnx_graph", failing_export)
    with caplog.at_level(logging.WARNING, logger="anomalens.models.onnx_runtime"):
        failed_fit = PatchCore(image_size=96, seed=0).fit(demo_training(demo_data))
    assert failed_fit.patch_features_.runtime == "torch" and "exporter broke" in caplog.text
    for fit in (torch_fit, failed_fit):
        # features equal up to rounding choose the same bank, so the same thresholds (the normals are held as
        # float16, so up to its rounding)
        torch.testing.assert_close(fit.model_.memory_bank, onnx_fit.model_.memory_bank, rtol=1e-4, atol=1e-4)
        assert fit.thresholds_.image == pytest.approx(onnx_fit.thresholds_.image, rel=1e-3)


def test_a_copied_detector_exports_a_graph_of_its_own(demo_patchcores, demo_data):
    fitted = demo_patchcores[0]
    copied = copy.deepcopy(fitted)  # a runtime session cannot be copied: the copy starts without one
    assert copied.patch_features_.runtime == "torch"
    image = demo_training(demo_data, 1)[0]
    copied.learn_normal(image, mark=1)  # embeds the image: the copy exports its own graph
    assert copied.patch_features_.runtime == "onnx"
    assert copied.patch_features_.scorer is not fitted.patch_features_.scorer
    assert len(fitted.model_.learned_bank) == 0  # the original is untouched
