"""``GET /metrics``: what a Prometheus scraper reads after real requests, parsed with the client library's own
parser; the key guarding it, and its declaration in the OpenAPI spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from anomalens.service import ServiceSettings, create_app  # noqa: E402
from conftest import fit_service_model, service_uploads  # noqa: E402

KEY = "metrics-key"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, demo_data) -> Path:
    return fit_service_model(demo_data, tmp_path_factory.mktemp("metrics") / "tiles")


@pytest.fixture(scope="module")
def images(demo_data) -> dict[str, bytes]:
    return service_uploads(demo_data)


def service(model_dir: Path, data_dir: Path, **options) -> TestClient:
    return TestClient(create_app(ServiceSettings.create(model_dir, data_dir, **{"api_key": None, **options})))


def upload(client: TestClient, data: bytes, **headers):
    return client.post("/inspect", files={"file": ("part.png", data, "application/octet-stream")}, headers=headers)


def scrape(client: TestClient, **headers) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, as a scraper reads ``/metrics``."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


DRIFT_SERIES = ("anomalens_drift_warning", "anomalens_drift_statistic")


def value(samples: dict[tuple[str, frozenset], float], sample: str, **labels: str) -> float:
    return samples.get((sample, frozenset(labels.items())), 0.0)


def test_metrics_count_inspections_verdicts_requests_and_uploads(model_dir, tmp_path, images):
    with service(model_dir, tmp_path / "data") as client, service(model_dir, tmp_path / "other") as other:
        sent = [images["spot"], images["normal"], images["normal"], b"not an image"]
        answers = [upload(client, data) for data in sent]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 422]
        assert [answer.json().get("anomalous") for answer in answers[:3]] == [True, False, False]
        for _ in range(2):
            assert client.get(f"/results/{answers[0].json()['id']}").status_code == 200
        assert client.get("/no/such/path").status_code == 404
        assert client.delete(f"/results/{answers[0].json()['id']}").status_code == 405
        assert client.get("/static/app.js").status_code == 200
        samples = scrape(client)

        def inspections(verdict: str, outcome: str) -> float:
            return value(samples, "anomalens_inspections_total", model="tiles", verdict=verdict, outcome=outcome)

        assert inspections("anomalous", "ok") == 1 and inspections("normal", "ok") == 2
        assert inspections("none", "refused") == 1
        assert value(samples, "anomalens_inspection_duration_seconds_count", model="tiles") == 3
        assert value(samples, "anomalens_upload_bytes_count") == len(sent)
        assert value(samples, "anomalens_upload_bytes_sum") == sum(len(data) for data in sent)

        def requests(method: str, endpoint: str) -> float:
            return value(samples, "anomalens_request_duration_seconds_count", method=method, endpoint=endpoint)

        assert requests("POST", "/inspect") == 4 and requests("GET", "/results/{result_id}") == 2
        assert requests("GET", "unrouted") == 1
        responses = "anomalens_responses_total"
        assert value(samples, responses, method="POST", endpoint="/inspect", code="200") == 3
        assert value(samples, responses, method="POST", endpoint="/inspect", code="422") == 1
        assert value(samples, responses, method="GET", endpoint="unrouted", code="404") == 1
        assert value(samples, responses, method="DELETE", endpoint="/results/{result_id}", code="405") == 1
        assert value(samples, responses, method="GET", endpoint="/static", code="200") == 1
        assert value(samples, "anomalens_stored_results") == 3
        assert value(samples, "anomalens_model_info", name="tiles", version="1") == 1
        # the drift watch reports after every inspection: three images are still its baseline, no warning
        drift = {name: samples.get((name, frozenset({("model", "tiles")}))) for name in DRIFT_SERIES}
        assert drift == dict.fromkeys(DRIFT_SERIES, 0.0), drift

        # an app of its own counts apart, in the same process
        assert value(scrape(other), "anomalens_inspections_total", model="tiles", verdict="normal", outcome="ok") == 0


def test_a_replayed_request_counts_as_a_replay_not_an_inspection(model_dir, tmp_path, images):
    with service(model_dir, tmp_path / "data") as client:
        first, again = (upload(client, images["normal"], **{"Idempotency-Key": "retry-1"}) for _ in range(2))
        assert first.json()["id"] == again.json()["id"]
        samples = scrape(client)
        assert value(samples, "anomalens_idempotent_replays_total") == 1
        assert value(samples, "anomalens_inspections_total", model="tiles", verdict="normal", outcome="ok") == 1


def test_the_model_label_follows_the_loaded_model(model_dir, tmp_path, images):
    root = tmp_path / "models"
    shutil.copytree(model_dir, root / "line1")
    shutil.copytree(model_dir, root / "line2")
    with service(root, tmp_path / "data") as client:
        upload(client, images["spot"])
        assert value(scrape(client), "anomalens_model_info", name="line1", version="1") == 1
        assert client.post("/models/line2/load").status_code == 200
        upload(client, images["spot"])
        samples = scrape(client)
        assert value(samples, "anomalens_model_info", name="line2", version="1") == 1
        assert not any(name == "anomalens_model_info" and ("name", "line1") in labels for name, labels in samples)
        for model in ("line1", "line2"):
            judged = value(samples, "anomalens_inspections_total", model=model, verdict="anomalous", outcome="ok")
            assert judged == 1


def test_the_drift_watch_reports_through_its_hook(model_dir, tmp_path):
    with service(model_dir, tmp_path / "data") as client:
        client.app.state.service.metrics.report_drift("tiles", 4.5, warning=True)
        samples = scrape(client)
        assert value(samples, "anomalens_drift_statistic", model="tiles") == 4.5
        assert value(samples, "anomalens_drift_warning", model="tiles") == 1


def test_metrics_need_the_key_unless_opened_and_the_spec_says_which(model_dir, tmp_path):
    with service(model_dir, tmp_path / "data", api_key=KEY) as guarded:
        assert guarded.get("/metrics").status_code == 401
        samples = scrape(guarded, **{"X-API-Key": KEY})
        # the key is checked before routing: its refusals are counted apart from any endpoint
        assert value(samples, "anomalens_responses_total", method="GET", endpoint="unrouted", code="401") == 1
        spec = guarded.get("/openapi.json").json()["paths"]["/metrics"]["get"]
        assert "401" in spec["responses"] and spec["security"]
        assert list(spec["responses"]["200"]["content"]) == ["text/plain; version=0.0.4"]
    with service(model_dir, tmp_path / "data", api_key=KEY, metrics_open=True) as opened:
        scrape(opened)
        assert opened.get("/results").status_code == 401  # only the metrics are opened
        spec = opened.get("/openapi.json").json()["paths"]["/metrics"]["get"]
        assert "401" not in spec["responses"] and "security" not in spec
