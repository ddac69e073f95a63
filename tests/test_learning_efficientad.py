"""EfficientAD learns by training: images declared normal wait in the model's fine-tuning queue (guarded like
PatchCore's instant learning) until the queue is applied as a short fine-tune, saved as a new version."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from anomalens import api
from anomalens.cli.main import main
from anomalens.data import read_image
from anomalens.learning import DEFAULT_MAX_MARK_RATIO, active_marks
from anomalens.learning.finetune import FINETUNE_DIR, QUEUE_FILE, FineTuneQueue, QueueManifest
from anomalens.models import load_detector
from anomalens.models.versions import ModelVersions

SIDE = 64  # one training crop covers the whole view, so every step sees a queued image's whole flaw
TINY = {"image_size": SIDE, "size": "cpu", "train_steps": 150, "train_batch_size": 4, "train_crop": SIDE}
FINE_TUNE_STEPS = 60


@dataclass(frozen=True)
class Station:
    model: Path  # fitted once; tests that change it work on a copy
    normals: Path
    false_alarm: Path  # a faint stain scoring a little above the threshold
    look_alike: Path  # another faint stain, on another image, that nobody declares normal
    defect: Path  # a dark stain far above the threshold


def faint_stain(textures, seed: int, darkening: float) -> np.ndarray:
    image = textures.normal(SIDE, SIDE, seed)
    _, mask = textures.defect(image, "blob", size=SIDE // 10, seed=seed - 50)
    image[mask] *= darkening
    return image


@pytest.fixture(scope="module")
def station(tmp_path_factory, textures, png_writer) -> Station:
    root = tmp_path_factory.mktemp("efficientad-learning")
    for i, image in enumerate(textures.normals([(SIDE, SIDE)] * 8, first_seed=0)):
        png_writer(root / "normals" / f"{i:03d}.png", image)
    png_writer(root / "false_alarm.png", faint_stain(textures, 53, 0.85))
    png_writer(root / "look_alike.png", faint_stain(textures, 50, 0.9))
    png_writer(root / "defect.png", textures.defect(textures.normal(SIDE, SIDE, 60), "blob", size=8, seed=1)[0])
    detector, _ = api.fit(root / "normals", model="efficientad", **TINY)
    detector.save(root / "model")
    return Station(
        root / "model", root / "normals", root / "false_alarm.png", root / "look_alike.png", root / "defect.png"
    )


@pytest.fixture
def model(station, tmp_path) -> Path:
    return Path(shutil.copytree(station.model, tmp_path / "model"))


def ratio(detector, path: Path) -> float:
    """An image's score over the model's image threshold."""
    return detector.score_and_map(read_image(path))[0] / detector.thresholds_.image


def test_learning_queues_the_image_in_the_model_directory_and_leaves_the_model_as_it_was(station, model):
    report = api.learn(model, [station.false_alarm], by="ann")
    assert report.learned == [] and report.refused == [] and report.version is None
    [entry] = report.queued
    assert (entry.entry, entry.image, entry.by, entry.version) == (1, "false_alarm.png", "ann", 1)
    assert 1.0 < entry.score / entry.threshold <= DEFAULT_MAX_MARK_RATIO  # a false alarm the guard lets through
    manifest = QueueManifest.model_validate_json((model / FINETUNE_DIR / QUEUE_FILE).read_text())
    assert manifest.images == [entry] and manifest.next_entry == 2
    stored = read_image(model / FINETUNE_DIR / entry.file)
    np.testing.assert_array_equal(stored, read_image(station.false_alarm))
    assert [v.version for v in ModelVersions(model).list()] == [1]
    assert active_marks(load_detector(model)) == []


def test_the_queue_refuses_a_real_defect_unless_forced(station, model):
    report = api.learn(model, [station.defect], by="ann")
    [refusal] = report.refused
    assert report.queued == [] and refusal.image == "defect.png"
    assert refusal.score > DEFAULT_MAX_MARK_RATIO * report.threshold_before and "real defect" in refusal.reason
    assert FineTuneQueue(model).entries() == []
    forced = api.learn(model, [station.defect], by="engineer", force=True)
    assert forced.refused == [] and [entry.image for entry in forced.queued] == ["defect.png"]


def test_dropping_entries_removes_them_and_their_images(station, model):
    api.learn(model, [station.false_alarm, station.look_alike], by="ann")
    [dropped] = api.drop_queued(model, [1])
    assert dropped.image == "false_alarm.png" and not (model / FINETUNE_DIR / dropped.file).exists()
    assert [entry.entry for entry in FineTuneQueue(model).entries()] == [2]
    with pytest.raises(LookupError, match="no queued entry 1; the queue holds: 2"):
        api.drop_queued(model, [1])


def test_applying_the_queue_fine_tunes_a_new_version_that_accepts_the_queued_image(station, model):
    before = load_detector(model)
    false_alarm_before, look_alike_before = ratio(before, station.false_alarm), ratio(before, station.look_alike)
    api.learn(model, [station.false_alarm], by="ann")
    report = api.apply_fine_tuning(model, station.normals, by="lead", steps=FINE_TUNE_STEPS, seconds=600)

    assert report.version == 2 and report.fine_tuning is not None and report.fine_tuning.steps == FINE_TUNE_STEPS
    latest = ModelVersions(model).list()[-1]
    assert (latest.version, latest.parent, latest.cause, latest.by) == (2, 1, "learn", "lead")
    assert "learned 1 image(s) as normal" in latest.note
    assert FineTuneQueue(model).entries() == [] and not list((model / FINETUNE_DIR).glob("*.png"))

    after = load_detector(model)
    [mark] = active_marks(after)
    assert (mark.mark, mark.image, mark.by, mark.patches) == (1, "false_alarm.png", "ann", 0)
    # score_after was scored in PyTorch as the model changed; the loaded model runs in the default runtime (ONNX
    # Runtime where installed): the same score up to float32 rounding
    assert mark.score_after == pytest.approx(after.score_and_map(read_image(station.false_alarm))[0], rel=1e-5)
    assert after.thresholds_.image == report.threshold_after != before.thresholds_.image  # recalibrated
    # the queued image fell relative to the threshold, and by more than a look-alike that was not queued: the
    # student learned that image, not merely a new normalisation
    false_alarm_after, look_alike_after = ratio(after, station.false_alarm), ratio(after, station.look_alike)
    assert false_alarm_after < false_alarm_before
    assert false_alarm_after / false_alarm_before < look_alike_after / look_alike_before


def test_applying_an_empty_queue_is_refused(station, model):
    with pytest.raises(ValueError, match="no images are queued"):
        api.apply_fine_tuning(model, station.normals, by="lead", steps=1)
    assert [v.version for v in ModelVersions(model).list()] == [1]


def test_cli_queues_lists_and_applies(station, model, capsys):
    assert main(["learn", str(model), str(station.false_alarm), "--by", "ann"]) == 0
    out = capsys.readouterr().out
    assert "queued false_alarm.png for fine-tuning as entry 1" in out and "--normals TRAINING_FOLDER" in out
    assert main(["learn", str(model), "--list"]) == 0
    assert "queued for fine-tuning" in capsys.readouterr().out
    assert main(["learn", str(model), "--apply", "--normals", str(station.normals), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "learned false_alarm.png as mark 1" in out and "fine-tuned for 3 steps" in out
    assert "saved as version 2" in out
    assert main(["learn", str(model), "--list"]) == 0
    out = capsys.readouterr().out
    assert "ann" in out and "queued for fine-tuning" not in out  # the mark's row (its name may wrap)
    assert main(["learn", str(model), "--apply", "--normals", str(station.normals)]) == 2
    assert "no images are queued" in capsys.readouterr().err


def test_a_false_alarm_marked_in_the_service_joins_the_queue(station, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from anomalens.service import ServiceSettings, create_app

    folder = Path(shutil.copytree(station.model, tmp_path / "models" / "stains"))
    settings = ServiceSettings.create(folder.parent, tmp_path / "data", api_key=None)
    with TestClient(create_app(settings)) as client:
        data = station.false_alarm.read_bytes()
        result = client.post("/inspect", files={"file": ("part.png", data, "image/png")}).json()
        assert result["anomalous"]
        receipt = client.post(f"/results/{result['id']}/feedback", json={"status": "false_alarm"}).json()
    assert receipt["learning"]["outcome"] == "queued" and "--apply" in receipt["learning"]["reason"]
    [entry] = FineTuneQueue(folder).entries()
    assert entry.version == 1 and ModelVersions(folder).current == 1
