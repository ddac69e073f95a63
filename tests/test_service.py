"""The inspection service over real HTTP: contract, store, chat, feedback, safety, concurrency, restart."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import tifffile

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from anomalens.data import read_mask  # noqa: E402
from anomalens.explanation.chat import ChatAnswer  # noqa: E402
from anomalens.explanation.history import DefectHistory  # noqa: E402
from anomalens.explanation.llm import LLMClient, LLMConfig, LLMExplainer  # noqa: E402
from anomalens.explanation.llm.local_server import free_port  # noqa: E402
from anomalens.models import load_detector  # noqa: E402
from anomalens.models.onnx_runtime import onnx_available  # noqa: E402
from anomalens.results.record import LLMExplanationResult  # noqa: E402
from anomalens.service import ServiceSettings, create_app  # noqa: E402
from anomalens.service.dependencies import get_explainer  # noqa: E402
from anomalens.service.export import to_csv  # noqa: E402
from anomalens.service.schemas import StoredResult  # noqa: E402
from conftest import build_record, fit_service_model, service_uploads, wait_for_service  # noqa: E402
from image_bombs import zero_png  # noqa: E402

KEY = "s3cret-key"
CONTRACT = {"id", "image", "anomalous", "score", "regions", "explanation", "urls"}
SPOT_SHAPE = (288, 120)


def png(image: np.ndarray) -> bytes:
    """Float RGB in [0, 1] -> PNG bytes."""
    return cv2.imencode(".png", cv2.cvtColor(np.rint(image * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, demo_data) -> Path:
    return fit_service_model(demo_data, tmp_path_factory.mktemp("service") / "tiles")


@pytest.fixture(scope="module")
def images(demo_data) -> dict[str, bytes]:
    return service_uploads(demo_data)


@pytest.fixture(scope="module")
def spot_truth(demo_data) -> np.ndarray:
    return read_mask(demo_data / "magnetic_tile" / "ground_truth" / "blowhole" / "exp4_num_4995_mask.png")


def settings_for(model_dir: Path, data_dir: Path, **options) -> ServiceSettings:
    return ServiceSettings.create(model_dir, data_dir, **{"api_key": None, **options})


@pytest.fixture
def client(model_dir, tmp_path):
    with TestClient(create_app(settings_for(model_dir, tmp_path / "data"))) as test_client:
        yield test_client


def upload(client, data: bytes, name: str = "part.png", **headers):
    return client.post("/inspect", files={"file": (name, data, "application/octet-stream")}, headers=headers)


def test_inspect_answers_the_result_contract_and_serves_its_images(client, images, spot_truth):
    response = upload(client, images["spot"], "spot.jpg")
    assert response.status_code == 200, response.text
    result = response.json()
    assert CONTRACT <= set(result)
    assert result["image"] == "spot.jpg" and result["anomalous"] is True and result["regions"]
    region = result["regions"][0]
    assert {"grid", "bbox", "area_fraction", "severity"} <= set(region)
    assert result["explanation"]["source"] == "offline" and region["position"] in result["explanation"]["text"]
    for kind in ("image", "overlay", "mask"):
        picture = client.get(result["urls"][kind])
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        decoded = cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.shape[:2] == SPOT_SHAPE
    mask = cv2.imdecode(np.frombuffer(client.get(result["urls"]["mask"]).content, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert (mask.astype(bool) & spot_truth).any()  # the stored mask marks the real blowhole
    assert 0 < mask.astype(bool).mean() < 0.5
    assert client.get(f"/results/{result['id']}").json() == result

    normal = upload(client, images["normal"], "good.jpg").json()
    assert normal["anomalous"] is False and normal["regions"] == []
    assert client.get("/health").json()["stored_results"] == 2


def test_results_survive_a_restart_and_can_be_filtered_and_exported(model_dir, tmp_path, images):
    settings = settings_for(model_dir, tmp_path / "data")
    with TestClient(create_app(settings)) as first:
        spot_id = upload(first, images["spot"], "spot.jpg").json()["id"]
        normal_id = upload(first, images["normal"], "good.png").json()["id"]
    with TestClient(create_app(settings)) as second:
        assert second.get(f"/results/{spot_id}").json()["anomalous"] is True
        assert second.get(f"/results/{spot_id}/images/overlay").status_code == 200
        assert [r["id"] for r in second.get("/results?anomalous=true").json()] == [spot_id]
        assert [r["id"] for r in second.get("/results?anomalous=false").json()] == [normal_id]
        assert len(second.get("/results?limit=1").json()) == 1
        rows = list(csv.DictReader(io.StringIO(second.get("/results/export?format=csv").text)))
        assert {row["id"]: row["anomalous"] for row in rows} == {spot_id: "True", normal_id: "False"}
        exported = second.get("/results/export?format=json&anomalous=true").json()
        assert [r["id"] for r in exported] == [spot_id] and exported[0]["regions"]
    assert (tmp_path / "data" / "inspections.db").is_file()


def test_chat_turns_are_answered_from_the_result_and_kept(client, images):
    result_id = upload(client, images["spot"]).json()["id"]
    position = client.get(f"/results/{result_id}").json()["regions"][0]["position"]
    where = client.post(f"/results/{result_id}/chat", json={"message": "Where is the anomaly?"}).json()
    assert where["source"] == "offline" and position in where["reply"]
    many = client.post(f"/results/{result_id}/chat", json={"message": "How many regions are there?"}).json()
    assert "region" in many["reply"]
    turns = client.get(f"/results/{result_id}/chat").json()
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == where["reply"]
    assert client.post(f"/results/{result_id}/chat", json={"message": ""}).status_code == 422
    assert client.post(f"/results/{result_id}/chat", json={"text": "hi"}).status_code == 422


def test_feedback_feeds_the_defect_history(model_dir, tmp_path, images):
    class RecordingClient(LLMClient):
        """An OpenAI-compatible client stand-in: keeps what the model would be sent, answers one sentence."""

        def __init__(self):
            super().__init__(
                LLMConfig(provider="openai-compatible", model="fake", base_url="http://x/v1", vision=False)
            )
            self.sent = []

        def complete(self, messages, max_tokens=None, temperature=None, json_mode=False):
            self.sent.append(messages)
            return "Last time this was a stain from an oil drip."

    llm = RecordingClient()
    settings = settings_for(model_dir, tmp_path / "data")
    with TestClient(create_app(settings, explainer=LLMExplainer(client=llm))) as client:
        result = upload(client, images["spot"], "spot.jpg").json()
        url = f"/results/{result['id']}/feedback"
        receipt = client.post(url, json={"status": "corrected", "defect_type": "stain", "cause": "oil drip"}).json()
        assert receipt["status"] == "corrected" and len(receipt["history_case_ids"]) == len(result["regions"])
        assert client.post(url, json={"status": "corrected"}).status_code == 422  # a correction needs a type
        assert client.post(url, json={"status": "confirmed", "region_index": 99}).status_code == 404  # no region 99
        assert client.post(url, json={"status": "confirmed", "region_index": "0"}).status_code == 422  # as sent
        assert client.post(url, json={"status": "maybe"}).status_code == 422
        assert client.get(f"/results/{result['id']}").json()["feedback_status"] == "corrected"
        assert [r["id"] for r in client.get("/results?feedback=corrected").json()] == [result["id"]]
        # the next similar finding's chat is grounded in the past case: its cause reaches the model
        later = upload(client, images["spot"], "spot2.jpg").json()
        llm.sent.clear()
        reply = client.post(f"/results/{later['id']}/chat", json={"message": "What could cause it?"}).json()
    cases = DefectHistory(settings.history_path).cases()
    assert [(c.status, c.defect_type, c.cause, c.image) for c in cases] == [
        ("corrected", "stain", "oil drip", "spot.jpg")
    ]
    assert cases[0].embedding is not None and cases[0].embedding.ndim == 1  # searchable by what it looks like
    past_case = f"seen before: stain at the {result['regions'][0]['position']}, cause was oil drip"
    [sent] = llm.sent
    assert sent[0]["role"] == "system" and past_case in sent[0]["content"]
    assert sent[1:] == [{"role": "user", "content": "What could cause it?"}]
    assert reply == {"reply": "Last time this was a stain from an oil drip.", "source": "llm"}


class RaisingExplainer:
    def explain(self, *args, **kwargs):
        raise RuntimeError("LLM server went away")

    def chat(self, *args, **kwargs):
        raise RuntimeError("LLM server went away")


class FixedExplainer:
    """Stands in for LLMExplainer: fixed answers, and it records what the chat was grounded in."""

    def explain(self, findings, image=None, prediction=None, seen_before=None):
        return LLMExplanationResult(text="A dark hole.", source="llm", reason="grounded", attempts=1)

    def chat(self, messages, findings=None, seen_before=None):
        self.grounded_in = findings
        return ChatAnswer(f"It is one region ({len(messages)} messages so far).", "llm", "grounded")


def test_a_failing_llm_keeps_the_stored_offline_result(model_dir, tmp_path, images):
    with TestClient(create_app(settings_for(model_dir, tmp_path / "a"), explainer=RaisingExplainer())) as client:
        result = upload(client, images["spot"]).json()
        assert result["explanation"]["source"] == "offline"
        assert client.get("/health").json()["stored_results"] == 1
        # a failing LLM in the chat: the offline answer instead
        answer = client.post(f"/results/{result['id']}/chat", json={"message": "How many regions?"}).json()
        assert answer["source"] == "offline" and "region" in answer["reply"]
    explainer = FixedExplainer()
    with TestClient(create_app(settings_for(model_dir, tmp_path / "b"), explainer=explainer)) as client:
        result = upload(client, images["spot"]).json()
        assert result["explanation"] == {"text": "A dark hole.", "source": "llm", "reason": "grounded"}
        assert client.get(f"/results/{result['id']}").json()["explanation"]["source"] == "llm"
        url = f"/results/{result['id']}/chat"
        assert client.post(url, json={"message": "Hi"}).json() == {
            "reply": "It is one region (2 messages so far).",
            "source": "llm",
        }
        # the second turn sees the first one (system, user, assistant, user)
        assert client.post(url, json={"message": "And?"}).json()["reply"] == "It is one region (4 messages so far)."
        assert [r.bbox for r in explainer.grounded_in.regions] == [r["bbox"] for r in result["regions"]]


def test_routers_take_their_parts_as_dependencies_a_test_can_replace(model_dir, tmp_path, images):
    app = create_app(settings_for(model_dir, tmp_path))
    explainer = FixedExplainer()
    app.dependency_overrides[get_explainer] = lambda: explainer
    with TestClient(app) as client:
        result = upload(client, images["spot"]).json()
        assert result["explanation"]["source"] == "llm"  # the replacement explained it, not the offline one
        answer = client.post(f"/results/{result['id']}/chat", json={"message": "Hi"}).json()
        assert answer == {"reply": "It is one region (2 messages so far).", "source": "llm"}
        assert explainer.grounded_in.image == result["image"]


def test_batch_inspects_every_readable_file_and_names_the_others(client, images):
    files = [
        ("files", ("a.png", images["spot"])),
        ("files", ("b.png", b"not an image")),
        ("files", ("c.png", images["normal"])),
    ]
    body = client.post("/inspect/batch", files=files).json()
    assert [r["image"] for r in body["results"]] == ["a.png", "c.png"]
    assert body["errors"][0]["file"] == "b.png" and "not an image" in body["errors"][0]["error"]
    too_many = [("files", (f"{i}.png", images["normal"])) for i in range(17)]
    assert client.post("/inspect/batch", files=too_many).status_code == 422


def _tiff16(image: bytes) -> bytes:
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 257
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, decoded)
    return buffer.getvalue()


GIF = "GIF content is not accepted (only PNG, JPEG, BMP or TIFF)"
BAD_INPUTS = {
    "empty file": (lambda images: b"", "x.png", 422, "empty"),
    "text named .png": (lambda images: b"hello, I am text\n" * 10, "x.png", 422, "not an image file"),
    "truncated JPEG": (lambda images: images["spot"][:-400], "x.jpg", 422, "truncated JPEG"),
    "1x1 image": (lambda images: png(np.full((1, 1, 3), 0.5)), "x.png", 422, "1x1 pixels"),
    "30000x30000 PNG bomb": (lambda images: zero_png(30000, 30000), "x.png", 422, "at most 64000000 pixels"),
    "GIF": (lambda images: cv2.imencode(".gif", np.zeros((32, 32, 3), np.uint8))[1].tobytes(), "x.gif", 422, GIF),
    "too large": (lambda images: images["normal"] + b"\0" * (2 * 2**20), "x.png", 413, "too large"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_uploads_get_a_clear_4xx(case, model_dir, tmp_path, images):
    make, name, status, words = BAD_INPUTS[case]
    with TestClient(create_app(settings_for(model_dir, tmp_path / "d", max_upload_bytes=2**20))) as client:
        response = upload(client, make(images), name)
        assert response.status_code == status and words in response.json()["detail"]
        assert client.get("/health").json()["stored_results"] == 0


def test_unusual_but_valid_uploads_are_inspected_under_a_safe_name(client, images, tmp_path):
    result = upload(client, _tiff16(images["spot"]), "deep.tif").json()  # a 16-bit TIFF is a valid image
    assert result["anomalous"] is True and (result["height"], result["width"]) == SPOT_SHAPE
    traversal = upload(client, images["normal"], "../../../../etc/cron.d/evil.png")
    assert traversal.status_code == 200 and traversal.json()["image"] == "evil.png"
    windows = upload(client, images["normal"], "..\\..\\boot.ini").json()
    assert windows["image"] == "boot.ini"
    assert not Path("/etc/cron.d/evil.png").exists()


def test_a_chunked_upload_is_stopped_at_the_limit(model_dir, tmp_path, images):
    settings = settings_for(model_dir, tmp_path / "d", max_upload_bytes=2**20)
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body():  # a generator: sent with Transfer-Encoding chunked, no Content-Length
        yield head
        for _ in range(3):
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/inspect", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert response.status_code == 413 and "too large" in response.json()["detail"]


def test_api_key_guards_everything_but_health(model_dir, tmp_path, images):
    with TestClient(create_app(settings_for(model_dir, tmp_path / "d", api_key=KEY))) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200  # the page holds no data; it asks for the key
        missing = upload(client, images["normal"])
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        wrong = upload(client, images["normal"], **{"X-API-Key": "guess"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong API key"
        for path in ("/results", "/models", "/report", "/results/export"):
            assert client.get(path).status_code == 401, path
        result = upload(client, images["normal"], **{"X-API-Key": KEY}).json()
        assert client.get(f"/results/{result['id']}/images/mask").status_code == 401
        assert client.get(f"/results/{result['id']}", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/health").json()["stored_results"] == 1


def test_unknown_ids_and_image_kinds_are_404_or_422(client, images):
    assert client.get("/results/0123456789abcdef0123456789abcdef").status_code == 404
    assert client.get("/results/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.post("/results/nope/chat", json={"message": "hi"}).status_code == 404
    result_id = upload(client, images["normal"]).json()["id"]
    assert client.get(f"/results/{result_id}/images/thumbnail").status_code == 422
    assert client.get(f"/results/{result_id}/images/..%2F..%2Fsecret").status_code == 404
    assert client.get("/results?limit=0").status_code == 422
    assert client.post("/inspect").status_code == 422
    assert client.post("/inspect", files={"wrong_field": ("a.png", images["normal"])}).status_code == 422


def test_models_are_listed_and_switched_by_name(model_dir, tmp_path, images):
    root = tmp_path / "models"
    shutil.copytree(model_dir, root / "line1")
    shutil.copytree(model_dir, root / "line2")
    with TestClient(create_app(settings_for(root, tmp_path / "d"))) as client:
        listed = client.get("/models").json()
        assert [(m["name"], m["active"]) for m in listed] == [("line1", True), ("line2", False)]
        runtime = "onnx" if onnx_available() else "torch"  # auto, the default, on this CPU
        assert [m["runtime"] for m in listed] == [runtime, None]
        expected = load_detector(model_dir).thresholds_.expected
        for model in listed:  # what the calibration promises, and the scale the model works at
            assert model["expected_false_alarm_rate"] == pytest.approx(expected["false_alarm_rate"])
            assert model["expected_false_alarm_rate_bound"] >= model["expected_false_alarm_rate"]
            assert model["expected_simulated_detection_rate"] == expected.get("simulated_detection_rate")
            assert "network input" in model["working_scale"] or "images at" in model["working_scale"]
        switched = client.post("/models/line2/load").json()
        assert (switched["name"], switched["active"], switched["runtime"]) == ("line2", True, runtime)
        assert upload(client, images["normal"]).json()["model"] == "line2"
        assert client.post("/models/..%2Fline1/load").status_code == 404
        assert client.post("/models/line9/load").status_code == 404


def test_openapi_spec_documents_the_endpoints_their_errors_and_the_key_only_when_there_is_one(
    client, model_dir, tmp_path
):
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec["components"]  # this service has no key: nothing to send
    assert all(str(401) not in op["responses"] for path in spec["paths"].values() for op in path.values())
    error = {"$ref": "#/components/schemas/ErrorBody"}
    inspect = spec["paths"]["/inspect"]["post"]["responses"]
    assert {code: inspect[code]["content"]["application/json"]["schema"] for code in ("413", "422", "503")} == {
        code: error for code in ("413", "422", "503")
    }
    assert spec["paths"]["/results/{result_id}"]["get"]["responses"]["404"]["content"]["application/json"][
        "schema"
    ] == (error)
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # 422 bodies are ErrorBody everywhere
    report = spec["paths"]["/report"]["get"]["responses"]
    assert set(report["200"]["content"]) == {"text/html"} and set(report["422"]["content"]) == {"application/json"}
    with TestClient(create_app(settings_for(model_dir, tmp_path, api_key="k"))) as keyed:
        spec = keyed.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "needed on every endpoint except /health when the service has a key",
    }
    assert "security" not in spec["paths"]["/health"]["get"] and spec["paths"]["/inspect"]["post"]["security"]
    assert spec["paths"]["/inspect"]["post"]["responses"]["401"]["content"]["application/json"]["schema"] == error
    paths = spec["paths"]
    for path in (
        "/health",
        "/inspect",
        "/inspect/batch",
        "/results",
        "/results/{result_id}",
        "/results/{result_id}/chat",
        "/results/{result_id}/feedback",
        "/results/export",
        "/models",
        "/report",
    ):
        assert path in paths, path


def test_a_405_names_every_method_of_the_path(client):
    answer = client.put("/results/" + "0" * 32 + "/chat")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, POST"
    assert answer.json() == {"detail": "Method Not Allowed"}


def test_report_of_stored_results_embeds_the_anomalous_ones(client, images):
    spot = upload(client, images["spot"], "spot.jpg").json()
    upload(client, images["normal"], "good.png")
    client.post(f"/results/{spot['id']}/feedback", json={"status": "confirmed"})
    page = client.get("/report").text
    assert page.startswith("<!doctype html>") and "spot.jpg" in page and "good.png" not in page
    assert page.count("data:image/jpeg;base64,") == 2  # the anomalous image and its overlay


@contextmanager
def running(app):
    """The app under a real uvicorn server on loopback, in a thread."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _state_digest(detector) -> str:
    return hashlib.sha256(
        b"".join(
            np.ascontiguousarray(v).tobytes()
            for k, v in sorted(vars(detector).items())
            if k.endswith("_") and isinstance(v, np.ndarray)
        )
    ).hexdigest()


def test_concurrent_requests_are_all_answered_and_stored(model_dir, tmp_path, images):
    app = create_app(settings_for(model_dir, tmp_path / "d"))
    detector = app.state.service.inspector.detector
    before = _state_digest(detector)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:

        def one(i: int) -> tuple[int, bool]:
            data = images["spot"] if i % 2 else images["normal"]
            response = http.post("/inspect", files={"file": (f"{i}.png", data)})
            return response.status_code, response.json()["anomalous"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(16)))
        assert answers == [(200, bool(i % 2)) for i in range(16)]
        assert http.get("/health").json()["stored_results"] == 16
    assert app.state.service.store.count() == 16
    assert app.state.service.inspector.detector is detector and _state_digest(detector) == before


def test_a_client_that_hangs_up_still_gets_its_result_stored(model_dir, tmp_path, images):
    app = create_app(settings_for(model_dir, tmp_path / "d"))
    with running(app) as url:
        impatient = httpx.Timeout(10, read=0.001)  # sends the whole upload, then gives up waiting at once
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/inspect", files={"file": ("gone.jpg", images["spot"])}, timeout=impatient)
        deadline = time.time() + 60
        while app.state.service.store.count() == 0 and time.time() < deadline:
            time.sleep(0.1)
        stored = httpx.get(f"{url}/results").json()
    assert [(r["image"], r["anomalous"]) for r in stored] == [("gone.jpg", True)]


def test_anomalens_serve_runs_the_service(model_dir, tmp_path, images):
    port = free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "ANOMALENS_API_KEY": KEY}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anomalens.cli.main",
            "serve",
            str(model_dir),
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--station",
            "line3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_service(url, process)
        result = httpx.post(
            f"{url}/inspect", files={"file": ("spot.jpg", images["spot"])}, headers={"X-API-Key": KEY}, timeout=60
        )
        assert result.status_code == 200 and result.json()["anomalous"] is True
        assert result.json()["station"] == "line3"
        assert httpx.post(f"{url}/inspect", files={"file": ("spot.jpg", images["spot"])}).status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "anomalens service: http://127.0.0.1" in output and "API key required" in output


def test_a_taxonomy_types_the_regions_and_types_filter_results(model_dir, tmp_path, images, demo_data):
    # the shipped demo tiles are an MVTec-layout set with masks: two labelled examples of five defect types
    settings = settings_for(model_dir, tmp_path / "d", taxonomy_dir=demo_data / "magnetic_tile")
    with TestClient(create_app(settings)) as client:
        result = upload(client, images["spot"], "spot.jpg").json()
        region = result["regions"][0]
        assert region["defect_type"] == "blowhole"  # the uploaded tile is one of the blowhole examples
        assert 0 <= region["type_confidence"] <= 1
        found = client.get(f"/results?defect_type={region['defect_type']}").json()
        assert [r["id"] for r in found] == [result["id"]]
        assert client.get("/results?defect_type=no-such-type").json() == []


def test_the_operators_judgement_gives_the_label_of_a_stored_result():
    def judged(anomalous: bool, status: str | None) -> StoredResult:
        return StoredResult(
            **build_record(anomalous=anomalous).model_dump(),
            id="0" * 32,
            model="m",
            station="s",
            created_at=0.0,
            feedback_status=status,
        )

    assert judged(True, "confirmed").feedback_label == 1
    assert judged(False, "confirmed").feedback_label == 0
    assert judged(True, "false_alarm").feedback_label == 0
    assert judged(False, "corrected").feedback_label == 1
    assert judged(True, None).feedback_label is None


def _key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def test_an_inspection_sent_again_with_its_idempotency_key_answers_the_stored_result(model_dir, tmp_path, images):
    settings = settings_for(model_dir, tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        first = upload(client, images["spot"], "spot.jpg", **_key("part-17"))
        again = upload(client, images["spot"], "spot.jpg", **_key("part-17"))
        assert first.status_code == again.status_code == 200 and again.json() == first.json()
        assert client.get("/health").json()["stored_results"] == 1
        other_file = upload(client, images["normal"], "good.jpg", **_key("part-17"))
        assert other_file.status_code == 422
        assert (
            other_file.json()["detail"] == "Idempotency-Key 'part-17' was sent before with other files: use a new key"
        )
        as_batch = client.post(
            "/inspect/batch", files=[("files", ("spot.jpg", images["spot"]))], headers=_key("part-17")
        )
        assert as_batch.status_code == 422
        for bad in ("two words", "k" * 129):
            response = upload(client, images["spot"], **_key(bad))
            assert response.status_code == 422 and "Idempotency-Key" in response.json()["detail"]
        assert upload(client, images["spot"]).json()["id"] != first.json()["id"]  # without a key: a new result
        assert client.get("/health").json()["stored_results"] == 2
    # a second station on the same store has keys of its own
    with TestClient(create_app(settings_for(model_dir, tmp_path / "data", station="line-2"))) as client:
        assert upload(client, images["spot"], **_key("part-17")).json()["id"] != first.json()["id"]
        assert client.get("/health").json()["stored_results"] == 3
        spec = client.get("/openapi.json").json()
    for path in ("/inspect", "/inspect/batch"):
        [header] = [p for p in spec["paths"][path]["post"]["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and header["required"] is False


class ProcessDied(BaseException):
    """The service process dying under a request: nothing the service could catch and answer."""


def test_a_batch_cut_off_half_way_is_completed_by_its_retry_without_duplicates(model_dir, tmp_path, demo_data):
    paths = sorted((demo_data / "magnetic_tile" / "test").rglob("*.jpg"))[:5]
    files = [("files", (path.name, path.read_bytes())) for path in paths]
    settings = settings_for(model_dir, tmp_path / "data")
    dying = create_app(settings)
    inspect = dying.state.service.inspector.inspect

    def dies_at_the_third_file(data, name):
        if dying.state.service.store.count() == 2:
            raise ProcessDied
        return inspect(data, name)

    dying.state.service.inspector.inspect = dies_at_the_third_file
    with pytest.raises(ProcessDied):
        TestClient(dying).post("/inspect/batch", files=files, headers=_key("batch-42"))
    first_ids = {r.image: r.id for r in dying.state.service.store.results()}
    dying.state.service.store.close()
    assert len(first_ids) == 2
    with TestClient(create_app(settings)) as restarted:
        retried = restarted.post("/inspect/batch", files=files, headers=_key("batch-42"))
        assert retried.status_code == 200
        answer = retried.json()
        assert [(f["file"], f["stored"], f["error"]) for f in answer["files"]] == [(p.name, True, None) for p in paths]
        assert [f["id"] for f in answer["files"]] == [r["id"] for r in answer["results"]]
        assert {f["file"]: f["id"] for f in answer["files"][:2]} == first_ids  # found by the key, not stored again
        assert restarted.get("/health").json()["stored_results"] == 5
        assert restarted.post("/inspect/batch", files=files, headers=_key("batch-42")).json() == answer
        assert restarted.get("/health").json()["stored_results"] == 5


def test_a_batch_whose_client_gave_up_is_answered_again_by_its_retry(model_dir, tmp_path, images):
    app = create_app(settings_for(model_dir, tmp_path / "data"))
    files = [("files", ("a.jpg", images["spot"])), ("files", ("b.jpg", images["normal"]))]
    with running(app) as url:
        impatient = httpx.Timeout(10, read=0.001)  # sends the whole batch, then stops listening
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/inspect/batch", files=files, headers=_key("lost-1"), timeout=impatient)
        deadline = time.time() + 60
        while app.state.service.store.count() < 2 and time.time() < deadline:
            time.sleep(0.1)
        retried = httpx.post(f"{url}/inspect/batch", files=files, headers=_key("lost-1"), timeout=60)
    assert retried.status_code == 200 and [f["stored"] for f in retried.json()["files"]] == [True, True]
    stored = {r.image: r.id for r in app.state.service.store.results()}
    assert {f["file"]: f["id"] for f in retried.json()["files"]} == stored and len(stored) == 2


def test_a_batch_reports_for_every_file_whether_it_was_stored(client, images):
    inspector = client.app.state.service.inspector
    inspect = inspector.inspect

    def database_full_on_b(data, name):
        if name == "b.png":
            raise RuntimeError("could not write")
        return inspect(data, name)

    inspector.inspect = database_full_on_b
    names = {"a.png": images["spot"], "b.png": images["spot"], "c.png": images["normal"], "d.png": b"not an image"}
    answer = client.post("/inspect/batch", files=[("files", item) for item in names.items()]).json()
    assert [(f["file"], f["stored"]) for f in answer["files"]] == [
        ("a.png", True),
        ("b.png", False),
        ("c.png", True),
        ("d.png", False),
    ]
    assert answer["files"][1]["error"] == "internal error: not stored (see the service log)"
    assert "not an image" in answer["files"][3]["error"] and answer["files"][1]["id"] is None
    assert {f["id"] for f in answer["files"] if f["stored"]} == {r["id"] for r in client.get("/results").json()}
    assert [e["file"] for e in answer["errors"]] == ["b.png", "d.png"]


def test_the_same_feedback_sent_8_times_is_one_case_per_region_and_8_judgements(model_dir, tmp_path, images):
    # the module's tests share the model: its false alarm must not teach it (tests/test_service_learning.py)
    settings = settings_for(model_dir, tmp_path / "data", learn_from_feedback=False)
    with TestClient(create_app(settings)) as client:
        result = upload(client, images["spot"], "spot.jpg").json()
        url = f"/results/{result['id']}/feedback"
        confirmed = {"status": "confirmed", "cause": "gas in the mould"}
        receipts = [client.post(url, json=confirmed).json() for _ in range(8)]
        case_ids = receipts[0]["history_case_ids"]
        assert len(case_ids) == len(result["regions"]) >= 1
        assert all(receipt["history_case_ids"] == case_ids for receipt in receipts)
        history = DefectHistory(settings.history_path)
        assert [(c.id, c.status, c.cause) for c in history.cases()] == [
            (i, "confirmed", "gas in the mould") for i in case_ids
        ]
        # a changed judgement replaces the region's case: status, type and cause
        corrected = {"status": "corrected", "region_index": 0, "defect_type": "crack", "cause": "thermal stress"}
        assert client.post(url, json=corrected).json()["history_case_ids"] == case_ids[:1]
        first = history.cases()[0]
        assert (first.id, first.status, first.defect_type, first.cause) == (
            case_ids[0],
            "corrected",
            "crack",
            "thermal stress",
        )
        assert client.get(f"/results/{result['id']}").json()["feedback_status"] == "corrected"
        # judging all regions replaces every region's case
        assert client.post(url, json={"status": "false_alarm"}).json()["history_case_ids"] == case_ids
        assert [(c.id, c.status) for c in history.cases()] == [(i, "false_alarm") for i in case_ids]
        assert client.get(f"/results/{result['id']}").json()["feedback_status"] == "false_alarm"
        trail = client.get(url).json()
        history.close()
    assert [entry["status"] for entry in trail] == ["confirmed"] * 8 + ["corrected", "false_alarm"]
    assert [entry["cause"] for entry in trail[:9]] == ["gas in the mould"] * 8 + ["thermal stress"]
    times = [entry["created_at"] for entry in trail]
    assert times == sorted(times) and result["created_at"] <= times[0]


class HeldDetector:
    """The fitted detector, its predictions held back until ``release`` is set (a stand-in for a slow image)."""

    def __init__(self, detector):
        self.detector, self.release = detector, threading.Event()

    def predict(self, image):
        self.release.wait(60)
        return self.detector.predict(image)


def test_an_inspection_over_the_time_limit_is_answered_503_and_frees_the_detector(model_dir, tmp_path, images):
    app = create_app(settings_for(model_dir, tmp_path / "d", request_timeout_s=0.5))
    inspector = app.state.service.inspector
    held = HeldDetector(inspector.detector)
    inspector.detector = held
    with TestClient(app) as client:
        overrun = upload(client, images["spot"])
        assert overrun.status_code == 503 and "longer than 0.5 s" in overrun.json()["detail"]
        assert overrun.headers["Retry-After"] == "1"
        waiting = upload(client, images["spot"])  # the abandoned one still holds the detector: refused, not queued
        assert waiting.status_code == 503 and "busy" in waiting.json()["detail"]
        held.release.set()  # the abandoned inspection ends; its result is dropped
        inspector.settings = replace(inspector.settings, request_timeout_s=60)
        answered = upload(client, images["spot"], name="after.png")
        assert answered.status_code == 200 and answered.json()["anomalous"]
        assert [r["image"] for r in client.get("/results").json()] == ["after.png"]


def receive_counted(app):
    """``app`` with the request body bytes it reads counted (in the returned list), to show what went unread."""
    read = []

    async def counted_app(scope, receive, send):
        async def counted():
            message = await receive()
            read.append(len(message.get("body", b"")))
            return message

        await app(scope, counted, send)

    return counted_app, read


MULTIPART_START = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'


def stalled_upload(url: str, declared: int, **headers) -> tuple[int, dict, bytes]:
    """POST /inspect announcing ``declared`` bytes, then only the start of them: the status, headers and body of
    the answer, read until the server closes (a server that waits for the rest times out instead)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [
        "POST /inspect HTTP/1.1",
        f"Host: {host}",
        "Content-Type: multipart/form-data; boundary=b",
        f"Content-Length: {declared}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    reply = b""
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + MULTIPART_START + b"\0" * 2**16)
        while chunk := connection.recv(2**16):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    answer_headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), answer_headers, body


@pytest.mark.parametrize(
    ("headers", "detail"), [({}, "missing API key"), ({"X-API-Key": "guess"}, "wrong API key")], ids=["no", "wrong"]
)
def test_without_the_key_an_upload_is_refused_before_its_body_is_read(model_dir, tmp_path, headers, detail):
    app, read = receive_counted(create_app(settings_for(model_dir, tmp_path / "d", api_key=KEY)))
    with running(app) as url:
        # headers and the first 64 KiB of a 20 MB upload, then silence: answered at once, from the headers alone
        status, answer_headers, body = stalled_upload(url, 20 * 10**6, **headers)
        assert status == 401 and json.loads(body)["detail"].startswith(detail)
        assert answer_headers["connection"] == "close"  # the rest of the body is never read
        # a body streamed without a length: the server answers without taking it in
        sent = []

        def streamed():
            for _ in range(64):
                sent.append(2**20)
                yield b"\0" * 2**20

        refused = httpx.post(f"{url}/inspect", content=streamed(), headers=headers, timeout=30)
        assert refused.status_code == 401 and refused.json()["detail"].startswith(detail)
        assert sum(sent) < 64 * 2**20  # the client stopped sending when the server hung up
        assert httpx.get(f"{url}/health").status_code == 200
    assert sum(read) == 0


def test_an_oversize_upload_is_refused_before_or_as_its_body_is_read(model_dir, tmp_path):
    settings = settings_for(model_dir, tmp_path / "d", api_key=KEY, max_upload_bytes=2**20)
    app, read = receive_counted(create_app(settings))
    with running(app) as url:
        # a declared length over the limit: refused from the headers (a stranger learns only that a key is needed)
        for headers, expected in (({"X-API-Key": KEY}, 413), ({}, 401)):
            status, answer_headers, _ = stalled_upload(url, 3 * 2**20, **headers)
            assert status == expected and answer_headers["connection"] == "close"
        assert sum(read) == 0
        # a chunked body of 4 MiB: taken in only up to the limit, then cut off
        refused = httpx.post(
            f"{url}/inspect",
            content=(MULTIPART_START if i == 0 else b"\0" * 2**16 for i in range(65)),
            headers={"X-API-Key": KEY, "Content-Type": "multipart/form-data; boundary=b"},
            timeout=30,
        )
        assert refused.status_code == 413 and "too large" in refused.json()["detail"]
        assert refused.headers["connection"] == "close"
    assert 2**20 < sum(read) < 2 * 2**20


OUT_OF_RANGE = [
    "offset=9223372036854775808",
    "offset=2147483648",
    "offset=-1",
    "offset=1e3",
    "limit=9223372036854775808",
    "limit=-1",
    "since=nan",
    "since=inf",
    "since=-inf",
    "since=-1",
    "since=1e300",
]


@pytest.mark.parametrize("path", ["/results", "/results/export", "/report"])
def test_out_of_range_query_values_are_422_and_the_largest_in_range_work(client, images, path):
    upload(client, images["normal"])
    for query in OUT_OF_RANGE:
        response = client.get(f"{path}?{query}")
        assert response.status_code == 422, query
        assert response.json()["detail"].startswith(f"invalid request: query.{query.split('=')[0]}"), query
    assert client.get(f"{path}?offset=2147483647&limit=10000").status_code == 200
    assert client.get(f"{path}?since=253402300799").status_code == 200  # the last second of year 9999
    assert client.get(f"{path}?since=0").status_code == 200


def test_out_of_range_path_values_are_4xx(client, images):
    result_id = upload(client, images["normal"]).json()["id"]
    huge = "f" * 4000
    assert client.get(f"/results/{huge}").status_code == 404
    assert client.get(f"/results/{huge}/chat").status_code == 404
    assert client.post(f"/results/{huge}/feedback", json={"status": "confirmed"}).status_code == 404
    assert client.get(f"/results/{result_id}/images/{huge}").status_code == 422
    assert client.post(f"/models/{huge}/load").status_code == 404
    feedback = {"status": "confirmed", "region_index": 2**70}
    assert client.post(f"/results/{result_id}/feedback", json=feedback).status_code == 404  # no such region


def test_csv_export_makes_every_text_a_formula_could_start_plain_text(model_dir, tmp_path, images):
    formula = "=1+2*cmd|x!A0.png"
    settings = settings_for(model_dir, tmp_path / "d", station="@SUM(A1:A9)")
    with TestClient(create_app(settings)) as client:
        stored = upload(client, images["spot"], formula).json()
        [row] = list(csv.DictReader(io.StringIO(client.get("/results/export?format=csv").text)))
    assert row["image"] == "'" + formula and row["station"] == "'@SUM(A1:A9)"
    assert row["score"] == str(stored["score"]) and row["region_count"] == str(len(stored["regions"]))
    assert row["id"] == stored["id"] and row["explanation"] == stored["explanation"]["text"]  # safe text unchanged

    record = build_record(image="+x.png", regions=[{"defect_type": "-crack"}], text="\tsee", normalized_score=-0.5)
    result = StoredResult(**record.model_dump(), id="0" * 32, model="=m", station="\rs", created_at=0.0)
    [row] = list(csv.DictReader(io.StringIO(to_csv([result]))))
    assert [row[c] for c in ("image", "defect_types", "explanation", "model", "station")] == [
        "'+x.png",
        "'-crack",
        "'\tsee",
        "'=m",
        "'\rs",
    ]
    assert row["normalized_score"] == "-0.5"  # a number stays a number, its sign too


def test_two_file_parts_in_one_inspection_are_refused(client, images):
    files = [("file", ("first.jpg", images["spot"])), ("file", ("second.jpg", images["normal"]))]
    response = client.post("/inspect", files=files)
    assert response.status_code == 422 and "only one file" in response.json()["detail"]
    assert client.get("/health").json()["stored_results"] == 0
    batch = client.post("/inspect/batch", files=[("files", name_and_data) for _, name_and_data in files])
    assert [r["image"] for r in batch.json()["results"]] == ["first.jpg", "second.jpg"]


def test_a_batch_where_no_file_is_an_image_is_refused_with_each_files_reason(client):
    answer = client.post(
        "/inspect/batch", files=[("files", ("a.png", b"not a picture")), ("files", ("b.gif", b"GIF89a" + bytes(64)))]
    )
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"].startswith("none of the 2 files can be inspected")
    assert [error["file"] for error in body["errors"]] == ["a.png", "b.gif"]
    assert "GIF content is not accepted" in body["errors"][1]["error"]


def test_the_drift_watch_warns_in_the_api_health_and_report_and_survives_a_restart(model_dir, tmp_path, images):
    from anomalens.postprocessing.drift import DriftTest
    from anomalens.service.drift import STATES

    settings = settings_for(model_dir, tmp_path / "data")
    with TestClient(create_app(settings)) as first:
        assert first.get("/drift").json() == [] and first.get("/health").json()["drift_warning"] is False
        score = upload(first, images["normal"], "good.jpg").json()["score"]
        [drift] = first.get("/drift").json()
        assert (drift["model"], drift["version"], drift["station"]) == ("tiles", 1, settings.station)
        assert drift["images_seen"] == 1
        assert drift["pass_rate"] == 1.0 and drift["expected_pass_rate"] is not None
        assert drift["warning"] is False and "baseline" in drift["reason"]
    # a line whose baseline scored far lower, the upward CUSUM one image short of the limit
    states = STATES.validate_json(settings.drift_path.read_bytes())
    state = states[settings.station]["tiles"][1]
    test = DriftTest()
    state.baseline = sorted(score / 2 + 0.01 * i for i in range(test.baseline_images))
    state.seen, state.passed, state.rising = test.baseline_images + 9, test.baseline_images + 9, test.limit - 0.5
    settings.drift_path.write_bytes(STATES.dump_json(states))
    with TestClient(create_app(settings)) as second:
        assert second.get("/drift").json()[0]["images_seen"] == test.baseline_images + 9
        assert second.get("/health").json()["drift_warning"] is False
        upload(second, images["normal"], "good.jpg")
        [drift] = second.get("/drift").json()
        assert drift["warning"] is True and drift["statistic"] > drift["threshold"] == test.limit
        assert "risen above" in drift["reason"] and drift["images_seen"] == test.baseline_images + 10
        assert second.get("/health").json()["drift_warning"] is True
        report = second.get("/report").text
        assert "Drift watch" in report and "WARNING" in report and "risen above" in report
    with TestClient(create_app(settings)) as restarted:
        assert restarted.get("/health").json()["drift_warning"] is True
