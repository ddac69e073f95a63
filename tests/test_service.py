"""The inspection service over real HTTP: contract, store, chat, feedback, safety, concurrency, restart."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import tifffile

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from anomalens.data import read_image, read_mask  # noqa: E402
from anomalens.explanation.chat import ChatAnswer  # noqa: E402
from anomalens.explanation.history import DefectHistory  # noqa: E402
from anomalens.explanation.llm import LLMClient, LLMConfig, LLMExplainer  # noqa: E402
from anomalens.explanation.llm.local_server import free_port  # noqa: E402
from anomalens.models import PatchCore, load_detector  # noqa: E402
from anomalens.results.record import LLMExplanationResult  # noqa: E402
from anomalens.service import ServiceSettings, create_app  # noqa: E402
from anomalens.service.dependencies import get_explainer  # noqa: E402
from anomalens.service.schemas import StoredResult  # noqa: E402
from conftest import build_record  # noqa: E402
from image_bombs import zero_png  # noqa: E402

# Fitted on 8 of the shipped magnetic-tile images at the default calibration: the good test tile stays below the
# threshold, and the blowhole tile is flagged where its ground truth is.
FAST = {"image_size": 128, "min_bank_size": 256, "coreset_ratio": 0.1, "augment_below": 4}
KEY = "s3cret-key"
CONTRACT = {"id", "image", "anomalous", "score", "regions", "explanation", "urls"}
SPOT, GOOD = "test/blowhole/exp4_num_4995.jpg", "test/good/exp4_num_332730.jpg"
SPOT_SHAPE = (288, 120)


def png(image: np.ndarray) -> bytes:
    """Float RGB in [0, 1] -> PNG bytes."""
    return cv2.imencode(".png", cv2.cvtColor(np.rint(image * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, demo_data) -> Path:
    folder = tmp_path_factory.mktemp("service") / "tiles"
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:8]
    PatchCore(**FAST).fit([read_image(path) for path in train]).save(folder)
    return folder


@pytest.fixture(scope="module")
def images(demo_data) -> dict[str, bytes]:
    tiles = demo_data / "magnetic_tile"
    return {"spot": (tiles / SPOT).read_bytes(), "normal": (tiles / GOOD).read_bytes()}


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
        assert client.post(url, json={"status": "confirmed", "region_index": 99}).status_code == 422
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
    assert client.post("/inspect/batch", files=too_many).status_code == 413


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
        expected = load_detector(model_dir).thresholds_.expected
        for model in listed:  # what the calibration promises, and the scale the model works at
            assert model["expected_false_alarm_rate"] == pytest.approx(expected["false_alarm_rate"])
            assert model["expected_false_alarm_rate_bound"] >= model["expected_false_alarm_rate"]
            assert model["expected_simulated_detection_rate"] == expected.get("simulated_detection_rate")
            assert "network input" in model["working_scale"] or "images at" in model["working_scale"]
        switched = client.post("/models/line2/load").json()
        assert (switched["name"], switched["active"]) == ("line2", True)
        assert upload(client, images["normal"]).json()["model"] == "line2"
        assert client.post("/models/..%2Fline1/load").status_code == 404
        assert client.post("/models/line9/load").status_code == 404


def test_openapi_spec_documents_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "needed on every endpoint except /health when the service has a key",
    }
    assert "security" not in spec["paths"]["/health"]["get"] and spec["paths"]["/inspect"]["post"]["security"]
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
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
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
