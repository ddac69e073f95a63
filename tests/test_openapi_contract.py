"""The OpenAPI spec tells the truth: schemathesis, the property-based tester for OpenAPI, runs against a live
service (with an API key and a stored result to find) with all its default checks and its stateful phase, and
finds nothing. Its settings and why are in ``schemathesis.toml`` at the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

from anomalens.data import read_image  # noqa: E402
from anomalens.explanation.llm.local_server import free_port  # noqa: E402
from anomalens.models import PatchCore  # noqa: E402
from conftest import wait_for_service  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "contract-key"


@pytest.fixture(scope="module")
def live_service(tmp_path_factory, demo_data):
    """``anomalens serve`` on a free loopback port with a key, one inspection stored; yields its URL."""
    folder = tmp_path_factory.mktemp("contract")
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:8]
    PatchCore(image_size=96, seed=0).fit([read_image(path) for path in train]).save(folder / "tiles")
    port = free_port()
    command = [sys.executable, "-m", "anomalens.cli.main", "serve", str(folder / "tiles"), "--port", str(port)]
    command += ["--data-dir", str(folder / "data"), "--api-key", KEY]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_service(url, process)
        tile = next((demo_data / "magnetic_tile" / "test" / "blowhole").glob("*.jpg"))
        stored = httpx.post(
            f"{url}/inspect", files={"file": (tile.name, tile.read_bytes())}, headers={"X-API-Key": KEY}, timeout=120
        )
        assert stored.status_code == 200, stored.text
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_schemathesis_finds_no_failure_in_the_spec_of_a_live_service(live_service):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [str(schemathesis), "run", f"{live_service}/openapi.json", "-H", f"X-API-Key: {KEY}"]
        + ["--max-examples", "25", "--seed", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "Stateful" in summary and "❌" not in summary, summary
    assert " passed" in summary and "failure" not in summary.split("Test cases:")[1], summary
