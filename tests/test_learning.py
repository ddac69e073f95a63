"""Feedback that teaches: an image declared normal joins PatchCore's bank and passes afterwards (so do near-duplicates
of it), real defects stay detected, the guard refuses what looks like a real defect, the threshold re-check stays
under its cap, an undo restores the fit, and every change is a model version (API and ``anomalens learn``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from anomalens import api
from anomalens.cli.main import main
from anomalens.data import read_image
from anomalens.learning import active_marks, forget_marks, learn_normal_images
from anomalens.models import PatchCore, load_detector
from anomalens.models.versions import ModelVersions
from anomalens.postprocessing.thresholds import recheck_image_threshold

SHAPE = (96, 112)


def faint_spot(textures, seed: int, depth: float = 0.3, y: int = 30, x: int = 40) -> np.ndarray:
    """A normal surface with a faint, smooth dark spot: unlike the training images, yet no defect (a false alarm)."""
    image = textures.normal(*SHAPE, seed=seed)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    spot = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 14.0**2))
    return np.clip(image * (1 - depth * spot[..., None]), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(textures) -> PatchCore:
    return PatchCore(image_size=96, seed=0).fit(textures.normals([SHAPE] * 8, first_seed=100))


@pytest.fixture
def model(fitted) -> PatchCore:
    return copy.deepcopy(fitted)


def ratio(model: PatchCore, image: np.ndarray) -> float:
    return model.score_and_map(image)[0] / model.thresholds_.image


def test_a_learned_false_alarm_and_its_near_duplicates_pass_while_real_defects_stay_flagged(model, textures):
    false_alarm = faint_spot(textures, seed=300)
    near_duplicate = np.clip(false_alarm + np.random.default_rng(1).normal(0, 0.01, (*SHAPE, 1)), 0, 1)
    defects = [textures.defect(textures.normal(*SHAPE, seed=400 + s), "blob", size=14, seed=s)[0] for s in range(3)]
    assert ratio(model, false_alarm) >= 1.0 and ratio(model, near_duplicate.astype(np.float32)) >= 1.0
    bank = model.model_.memory_bank.clone()

    report = learn_normal_images(model, [("spot.png", false_alarm)], by="operator ann")

    [mark] = report.learned
    assert (mark.mark, mark.image, mark.by) == (1, "spot.png", "operator ann") and mark.patches > 0
    assert len(model.model_.learned_bank) == mark.patches and torch.equal(model.model_.memory_bank, bank)
    assert mark.score_after < report.threshold_after  # the same part passes next time
    assert ratio(model, near_duplicate.astype(np.float32)) < 1.0
    assert all(ratio(model, defect) >= 1.0 for defect in defects)
    assert active_marks(model) == [mark]


def test_the_threshold_recheck_never_lowers_it_and_stops_at_its_cap(model, textures):
    fitted = model.thresholds_.image
    report = learn_normal_images(model, [("spot.png", faint_spot(textures, seed=300))], "ann", max_threshold_rise=0.02)
    assert fitted <= report.threshold_after <= fitted * 1.02 + 1e-9
    assert report.fitted_threshold == fitted
    # scores far above every normal would raise it without limit; the cap holds it
    capped = recheck_image_threshold(model.thresholds_, [50 * fitted] * 5, max_rise=0.1)
    assert capped.image == pytest.approx(fitted * 1.1) and capped.details["threshold_rise_capped"]
    assert capped.pixel <= capped.image
    assert capped.expected["n_normal"] == len(model.thresholds_.details["normal_scores"]) + 5


def test_an_image_far_above_the_threshold_is_refused_unless_forced(model, textures):
    defect, _ = textures.defect(textures.normal(*SHAPE, seed=400), "blob", size=14, seed=0)
    report = learn_normal_images(model, [("blob.png", defect)], "ann")
    assert not report.learned and [r.image for r in report.refused] == ["blob.png"]
    assert "real defect" in report.refused[0].reason
    assert len(model.model_.learned_bank) == 0 and report.threshold_after == report.threshold_before

    forced = learn_normal_images(model, [("blob.png", defect)], "engineer", force=True)
    assert [m.image for m in forced.learned] == ["blob.png"] and ratio(model, defect) < 1.0


def test_a_defect_learned_by_mistake_is_still_found_elsewhere_on_the_part(model, textures):
    def blob(seed: int, center: tuple[int, int]) -> np.ndarray:
        return textures.defect(textures.normal(*SHAPE, seed=seed), "blob", center=center, size=12, seed=0)[0]

    learned = blob(400, (30, 35))
    learn_normal_images(model, [("blob.png", learned)], "ann", force=True)
    again = np.clip(learned + np.random.default_rng(2).normal(0, 0.01, (*SHAPE, 1)), 0, 1).astype(np.float32)
    assert ratio(model, again) < 1.0  # the same part again: learned
    assert ratio(model, blob(401, (66, 80))) >= 1.5  # elsewhere: as flagged as before


def test_forgetting_a_mark_restores_the_fit(model, fitted, textures):
    false_alarm = faint_spot(textures, seed=300)
    learn_normal_images(model, [("a.png", false_alarm), ("b.png", faint_spot(textures, seed=301))], "ann")
    assert [m.mark for m in active_marks(model)] == [1, 2]

    report = forget_marks(model, [1, 2])
    assert report.forgotten == [1, 2] and active_marks(model) == []
    assert len(model.model_.learned_bank) == 0 and len(model.learned_marks_) == 0
    assert model.thresholds_.image == pytest.approx(fitted.thresholds_.image)
    assert ratio(model, false_alarm) >= 1.0
    with pytest.raises(LookupError, match="no learned mark 1"):
        forget_marks(model, [1])
    # ids are not reused after an undo
    assert learn_normal_images(model, [("a.png", false_alarm)], "ann").learned[0].mark == 3


def test_learning_and_undo_are_versions_that_load_with_their_marks(fitted, textures, png_writer, tmp_path):
    folder = tmp_path / "model"
    fitted.save(folder)
    png_writer(tmp_path / "spot.png", faint_spot(textures, seed=300))

    learned = api.learn(folder, [tmp_path / "spot.png"], by="operator ann")
    assert learned.version == 2
    reloaded = load_detector(folder)
    assert [m.image for m in active_marks(reloaded)] == ["spot.png"]
    assert ratio(reloaded, read_image(tmp_path / "spot.png")) < 1.0
    assert int((reloaded.learned_marks_ == 1).sum()) == learned.learned[0].patches

    undone = api.forget(folder, [1], by="operator bob")
    versions = ModelVersions(folder).list()
    assert [(v.version, v.cause, v.by) for v in versions] == [
        (1, "fit", "unknown"),
        (2, "learn", "operator ann"),
        (3, "undo", "operator bob"),
    ]
    assert "marks 1" in versions[1].note and undone.version == 3
    assert ratio(load_detector(folder), read_image(tmp_path / "spot.png")) >= 1.0


def test_the_learn_command_learns_lists_refuses_and_undoes(fitted, textures, png_writer, tmp_path, capsys):
    folder = tmp_path / "model"
    fitted.save(folder)
    png_writer(tmp_path / "ok" / "spot.png", faint_spot(textures, seed=300))
    png_writer(tmp_path / "bad" / "blob.png", textures.defect(textures.normal(*SHAPE, seed=400), "blob", size=14)[0])

    assert main(["learn", str(folder), str(tmp_path / "ok"), "--by", "ann"]) == 0
    out = capsys.readouterr().out
    assert "learned spot.png as mark 1" in out and "saved as version 2" in out
    assert main(["learn", str(folder), "--list"]) == 0
    assert "spot.png" in capsys.readouterr().out
    assert main(["learn", str(folder), str(tmp_path / "bad")]) == 1  # nothing learned, one refused
    out = capsys.readouterr().out
    assert "refused" in out and "unchanged" in out and ModelVersions(folder).current == 2
    assert main(["learn", str(folder), "--undo", "1", "--by", "bob"]) == 0
    assert "undid marks 1" in capsys.readouterr().out and ModelVersions(folder).current == 3
