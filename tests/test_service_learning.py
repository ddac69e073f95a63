"""Feedback that teaches, over the service: a false alarm judged by the model's current version is learned as
normal (a new version that inspects from then on), the guard refuses a real defect, a mark is undone over the API,
and a service with learning off learns nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalens.data import read_image
from anomalens.models import PatchCore
from conftest import plant_defect

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from anomalens.service import ServiceSettings, create_app  # noqa: E402

# Fitted on 8 demo tiles at image_size 96, the model flags this good tile just above its threshold (about 1.07
# times it): a false alarm. The same tile with a large dark stain scores about 1.7 times it: a real defect.
FALSE_ALARM, GOOD = "test/good/exp2_num_283218.jpg", "test/good/exp4_num_332730.jpg"
MODEL = "tiles"


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(np.rint(image * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))[1].tobytes()


def photographed_again(image: np.ndarray) -> bytes:
    """A near-duplicate of ``image``: 3 % brighter, shifted by 2 pixels, saved as a JPEG of quality 80."""
    shifted = np.roll(np.rint(np.clip(image * 1.03, 0, 1) * 255).astype(np.uint8), 2, axis=1)
    return cv2.imencode(".jpg", cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


@pytest.fixture(scope="module")
def fitted(demo_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("learning") / MODEL
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:8]
    PatchCore(image_size=96, seed=0).fit([read_image(path) for path in train]).save(folder)
    return folder


@pytest.fixture
def models(fitted, tmp_path) -> Path:
    """A fresh copy of the fitted model (version 1) in a folder of models, for a test to change."""
    shutil.copytree(fitted, tmp_path / "models" / MODEL)
    return tmp_path / "models"


@pytest.fixture(scope="module")
def images(demo_data) -> dict[str, bytes]:
    tiles = demo_data / "magnetic_tile"
    stained, _ = plant_defect(read_image(tiles / GOOD), "blob", size=60, seed=0)
    return {
        "false_alarm": (tiles / FALSE_ALARM).read_bytes(),
        "near_duplicate": photographed_again(read_image(tiles / FALSE_ALARM)),
        "defect": png(stained),
    }


def service(models: Path, tmp_path: Path, **options) -> TestClient:
    return TestClient(create_app(ServiceSettings.create(models, tmp_path / "data", api_key=None, **options)))


def inspect(client: TestClient, data: bytes) -> dict:
    answer = client.post("/inspect", files={"file": ("part.png", data, "application/octet-stream")})
    assert answer.status_code == 200, answer.text
    return answer.json()


def false_alarm(client: TestClient, result: dict, **judgement) -> dict:
    answer = client.post(f"/results/{result['id']}/feedback", json={"status": "false_alarm", **judgement})
    assert answer.status_code == 200, answer.text
    return answer.json()


def versions(client: TestClient, model: str = MODEL) -> list[tuple[int, int | None, str, str]]:
    return [(v["version"], v["parent"], v["cause"], v["by"]) for v in client.get(f"/models/{model}/versions").json()]


def test_a_false_alarm_is_learned_and_the_part_and_its_near_duplicate_pass_next_time(models, tmp_path, images):
    with service(models, tmp_path) as client:
        flagged = inspect(client, images["false_alarm"])
        assert flagged["anomalous"] is True and flagged["model_version"] == 1
        assert inspect(client, images["near_duplicate"])["anomalous"] is True

        receipt = false_alarm(client, flagged, operator="ann")
        learning = receipt["learning"]
        assert (learning["model"], learning["outcome"], learning["reason"]) == (MODEL, "learned", None)
        report = learning["report"]
        [mark] = report["learned"]
        assert (mark["mark"], mark["by"], report["version"]) == (1, "ann", 2)
        assert flagged["id"] in mark["image"] and mark["patches"] > 0
        assert mark["score"] == pytest.approx(flagged["score"], rel=1e-4) and mark["score"] > report["threshold_before"]
        assert report["threshold_before"] == pytest.approx(flagged["image_threshold"])
        # the threshold may rise, but never beyond the cap above the fit's
        assert report["threshold_before"] <= report["threshold_after"] <= 1.1 * report["fitted_threshold"] + 1e-9
        assert versions(client) == [(1, None, "fit", "unknown"), (2, 1, "learn", "ann")]
        assert [m["mark"] for m in client.get(f"/models/{MODEL}/marks").json()] == [1]

        again = inspect(client, images["false_alarm"])
        assert again["anomalous"] is False and again["model_version"] == 2
        assert again["image_threshold"] == pytest.approx(report["threshold_after"])
        near = inspect(client, images["near_duplicate"])
        assert near["anomalous"] is False and near["model_version"] == 2
        scraped = client.get("/metrics").text
        assert f'anomalens_false_alarm_marks_total{{model="{MODEL}",outcome="learned"}} 1.0' in scraped
        assert f'anomalens_model_info{{name="{MODEL}",version="2"}} 1.0' in scraped
        # the new version's scores start a drift baseline of their own
        watched = {(d["model"], d["version"]): d["images_seen"] for d in client.get("/drift").json()}
        assert watched == {(MODEL, 1): 2, (MODEL, 2): 2}

        # the first result was judged by version 1, which is gone: judging it again teaches nothing
        stale = false_alarm(client, flagged)["learning"]
        assert stale["outcome"] == "not_learned" and "version 1" in stale["reason"] and stale["report"] is None
        passed = false_alarm(client, again)["learning"]
        assert passed["outcome"] == "not_learned" and passed["reason"].startswith("the model passed this image")
        assert len(versions(client)) == 2
    with service(models, tmp_path) as client:  # the learned version is the one a restarted service loads
        assert inspect(client, images["false_alarm"])["model_version"] == 2


def test_a_real_defect_marked_false_alarm_is_refused_and_changes_nothing(models, tmp_path, images):
    with service(models, tmp_path) as client:
        defect = inspect(client, images["defect"])
        assert defect["anomalous"] is True and defect["score"] > 1.5 * defect["image_threshold"]
        learning = false_alarm(client, defect)["learning"]
        assert learning["outcome"] == "refused" and "real defect" in learning["reason"]
        assert learning["report"]["learned"] == [] and learning["report"]["version"] is None
        assert learning["report"]["threshold_after"] == learning["report"]["threshold_before"]
        assert versions(client) == [(1, None, "fit", "unknown")]
        assert client.get(f"/models/{MODEL}/marks").json() == []
        assert (
            f'anomalens_false_alarm_marks_total{{model="{MODEL}",outcome="refused"}} 1.0' in client.get("/metrics").text
        )
        still = inspect(client, images["defect"])
        assert still["anomalous"] is True and still["model_version"] == 1
        # the judgement itself is kept all the same
        assert client.get(f"/results/{defect['id']}").json()["feedback_status"] == "false_alarm"


def test_undoing_a_mark_is_a_new_version_and_the_part_is_flagged_again(models, tmp_path, images):
    with service(models, tmp_path) as client:
        flagged = inspect(client, images["false_alarm"])
        assert false_alarm(client, flagged)["learning"]["report"]["version"] == 2
        assert inspect(client, images["false_alarm"])["anomalous"] is False

        undone = client.delete(f"/models/{MODEL}/marks/1", params={"operator": "bob"})
        assert undone.status_code == 200, undone.text
        report = undone.json()
        assert (report["forgotten"], report["version"]) == ([1], 3)
        assert report["threshold_after"] == pytest.approx(report["fitted_threshold"])
        assert versions(client)[1:] == [(2, 1, "learn", "service"), (3, 2, "undo", "bob")]
        assert client.get(f"/models/{MODEL}/marks").json() == []
        again = inspect(client, images["false_alarm"])
        assert again["anomalous"] is True and again["model_version"] == 3
        assert again["score"] == pytest.approx(flagged["score"], rel=1e-4)

        assert client.delete(f"/models/{MODEL}/marks/1").status_code == 404  # undone already
        assert client.delete(f"/models/{MODEL}/marks/7").json()["detail"].startswith("no learned mark 7")
        assert client.delete("/models/other/marks/1").status_code == 404
        assert client.get("/models/other/marks").status_code == 404
        assert client.delete(f"/models/{MODEL}/marks/0").status_code == 422
        assert len(versions(client)) == 3


def test_a_false_alarm_teaches_its_model_while_another_one_inspects(models, tmp_path, images):
    shutil.copytree(models / MODEL, models / "other")
    with service(models, tmp_path) as client:
        assert [(m["name"], m["active"]) for m in client.get("/models").json()] == [("other", True), (MODEL, False)]
        client.post(f"/models/{MODEL}/load").raise_for_status()
        flagged = inspect(client, images["false_alarm"])
        client.post("/models/other/load").raise_for_status()

        assert false_alarm(client, flagged)["learning"]["report"]["version"] == 2
        assert versions(client) == [(1, None, "fit", "unknown"), (2, 1, "learn", "service")]
        assert versions(client, "other") == [(1, None, "fit", "unknown")]
        assert [m["mark"] for m in client.get(f"/models/{MODEL}/marks").json()] == [1]
        assert inspect(client, images["false_alarm"])["anomalous"] is True  # "other" learned nothing
        client.post(f"/models/{MODEL}/load").raise_for_status()
        learned = inspect(client, images["false_alarm"])
        assert learned["anomalous"] is False and learned["model_version"] == 2


def test_with_learning_off_a_false_alarm_is_stored_and_nothing_is_learned(models, tmp_path, images):
    with service(models, tmp_path, learn_from_feedback=False) as client:
        flagged = inspect(client, images["false_alarm"])
        learning = false_alarm(client, flagged)["learning"]
        assert learning["outcome"] == "not_learned" and "learn_from_feedback" in learning["reason"]
        assert versions(client) == [(1, None, "fit", "unknown")]
        assert inspect(client, images["false_alarm"])["anomalous"] is True
        confirmed = client.post(f"/results/{flagged['id']}/feedback", json={"status": "confirmed"}).json()
        assert confirmed["learning"] is None
