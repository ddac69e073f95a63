"""Versioned models: every save after the first is a new version with its parent, cause and calibration; rollback;
the service records the version that judged each result and rolls back over the API; ``anomalens models``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from anomalens.cli.main import main
from anomalens.models import load_detector
from anomalens.models.versions import MANIFEST_FILE, ModelVersions, UnknownVersion

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from anomalens.service import ServiceSettings, create_app  # noqa: E402

GOOD = "test/good/exp4_num_332730.jpg"


def test_a_plain_model_directory_is_version_1(demo_patchcores, tmp_path):
    first, _ = demo_patchcores
    first.save(tmp_path / "model")
    assert not (tmp_path / "model" / MANIFEST_FILE).exists()  # the first save writes what it always wrote
    versions = ModelVersions(tmp_path / "model")
    [entry] = versions.list()
    assert (entry.version, entry.parent, entry.cause, versions.current) == (1, None, "fit", 1)
    assert entry.expected == first.thresholds_.expected
    assert load_detector(versions.path_of(1)).thresholds_ == first.thresholds_


def test_saving_twice_keeps_two_linked_versions_and_loads_the_current(demo_patchcores, tmp_path):
    first, second = demo_patchcores
    folder = tmp_path / "model"
    first.save(folder)
    second.save(folder, cause="learn", by="operator ann")
    versions = ModelVersions(folder)
    listed = versions.list()
    assert [(v.version, v.parent, v.cause, v.by) for v in listed] == [
        (1, None, "fit", "unknown"),
        (2, 1, "learn", "operator ann"),
    ]
    assert listed[1].expected == second.thresholds_.expected and versions.current == 2
    assert load_detector(folder).thresholds_ == second.thresholds_
    assert load_detector(versions.path_of(1)).thresholds_ == first.thresholds_
    assert load_detector(versions.path_of(2)).thresholds_ == second.thresholds_


def test_rollback_makes_an_old_version_current_as_a_new_version(demo_patchcores, tmp_path):
    first, second = demo_patchcores
    folder = tmp_path / "model"
    first.save(folder)
    second.save(folder)
    versions = ModelVersions(folder)
    entry = versions.rollback(1, by="operator ann")
    assert (entry.version, entry.parent, entry.cause, entry.files, versions.current) == (3, 2, "rollback", 1, 3)
    assert versions.path_of(3) == versions.path_of(1)  # a reference to version 1's files, not a copy
    assert load_detector(folder).thresholds_ == first.thresholds_
    assert json.loads((folder / "config.json").read_text()) == json.loads(
        (versions.path_of(1) / "config.json").read_text()
    )
    with pytest.raises(UnknownVersion, match="no version 7"):
        versions.rollback(7)
    assert versions.current == 3


def test_the_service_records_the_judging_version_and_rolls_back(demo_patchcores, demo_data, tmp_path):
    first, second = demo_patchcores
    folder = tmp_path / "models" / "tiles"
    first.save(folder)
    second.save(folder, cause="recalibrate", by="test")
    image = (demo_data / "magnetic_tile" / GOOD).read_bytes()
    settings = ServiceSettings.create(tmp_path / "models", tmp_path / "data", api_key=None)

    def inspect(client: TestClient) -> dict:
        answer = client.post("/inspect", files={"file": ("part.png", image, "application/octet-stream")})
        assert answer.status_code == 200, answer.text
        return answer.json()

    with TestClient(create_app(settings)) as client:
        assert client.get("/models").json()[0]["version"] == 2
        before = inspect(client)
        assert before["model_version"] == 2 and before["image_threshold"] == pytest.approx(second.thresholds_.image)
        rolled = client.post("/models/tiles/rollback", json={"version": 1})
        assert rolled.status_code == 200 and rolled.json()["version"] == 3
        after = inspect(client)
        assert after["model_version"] == 3 and after["image_threshold"] == pytest.approx(first.thresholds_.image)
        listed = client.get("/models/tiles/versions").json()
        assert [(v["version"], v["parent"], v["cause"], v["files"]) for v in listed] == [
            (1, None, "fit", 1),
            (2, 1, "recalibrate", 2),
            (3, 2, "rollback", 1),
        ]
        assert client.post("/models/tiles/rollback", json={"version": 9}).status_code == 404
        assert client.post("/models/other/rollback", json={"version": 1}).status_code == 404
        assert client.get("/models/other/versions").status_code == 404
        assert client.post("/models/tiles/rollback", json={"version": "one"}).status_code == 422
        assert client.post("/models/tiles/rollback", json={"version": 0}).status_code == 422
    with TestClient(create_app(settings)) as client:  # stored with the result, and current after a restart
        assert client.get(f"/results/{before['id']}").json()["model_version"] == 2
        assert inspect(client)["model_version"] == 3


def test_cli_fit_writes_version_1_and_models_lists_and_rolls_back(tiny_mvtec, tmp_path, capsys):
    model = tmp_path / "model"
    fit = ["fit", str(tiny_mvtec.root), "--category", tiny_mvtec.category, "-o", str(model), "--image-size", "64"]
    assert main(fit) == 0
    assert [(v.version, v.cause, v.by) for v in ModelVersions(model).list()] == [(1, "fit", "anomalens fit")]
    assert main([*fit, "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["models", str(model)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"1\s.*fit\s.*anomalens fit", out) and re.search(r"2 \(current\)\s.*1\s.*fit", out), out
    assert main(["models", str(model), "--rollback", "1"]) == 0
    out = capsys.readouterr().out
    assert "version 1 is current again, as version 3" in out and re.search(r"3 \(current\)\s.*2\s.*rollback", out)
    assert ModelVersions(model).current == 3
    assert load_detector(model).thresholds_ == load_detector(Path(model) / "versions" / "1").thresholds_
    assert main(["models", str(model), "--rollback", "5"]) == 2
    assert "no version 5" in capsys.readouterr().err
