"""The web page in a real headless Chromium: upload an image, see the result, ask a question, judge it.

Skipped, with the reason, where Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``) or Playwright's
Python client is missing. ``ANOMALENS_SCREENSHOT_DIR=docs`` saves the page's screenshots of the documentation there.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "page-key"

if not CHROMIUM.exists():
    pytest.skip(
        "no /usr/bin/chromium: install Debian's 'chromium' package to test the web page", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python client is not installed")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def service(tmp_path_factory, demo_data):
    """The service with an API key under a real uvicorn server on loopback (in a thread); yields its URL."""
    import uvicorn

    from anomalens.data import read_image
    from anomalens.models import PatchCore
    from anomalens.service import ServiceSettings, create_app

    base = tmp_path_factory.mktemp("web")
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:8]
    PatchCore(image_size=128, min_bank_size=256, coreset_ratio=0.1, augment_below=4).fit(
        [read_image(p) for p in train]
    ).save(base / "model")
    app = create_app(ServiceSettings.create(base / "model", base / "data", api_key=KEY))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("ANOMALENS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_upload_see_the_result_ask_and_judge(service, browser, demo_data, shots):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(service)
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.set_input_files("#file", str(demo_data / "magnetic_tile" / "test" / "blowhole" / "exp4_num_4995.jpg"))

    sync_api.expect(page.locator("#verdict")).to_have_text("Anomalous", timeout=30_000)
    sync_api.expect(page.locator("#status")).to_have_text("inspected exp4_num_4995.jpg")
    for kind in ("image", "overlay", "mask"):  # all three pictures really decoded in the browser
        page.wait_for_function(f"document.getElementById('img-{kind}').naturalWidth === 120")
    finding = page.locator("#findings li").first.inner_text()
    assert "% of the image, severity" in finding
    assert page.locator("#explanation").inner_text().startswith("Yes, there is an anomaly")
    sync_api.expect(page.locator("#past tr").first).to_contain_text("exp4_num_4995.jpg")
    page.screenshot(path=str(shots / "screenshot_result.png"), full_page=True)

    result = httpx.get(f"{service}/results?limit=1", headers={"X-API-Key": KEY}).json()[0]
    position = result["regions"][0]["position"]
    page.fill("#chat-input", "Where is the anomaly?")
    page.press("#chat-input", "Enter")
    answer = page.locator("#chat-log p.assistant").first
    sync_api.expect(answer).to_contain_text(position, timeout=15_000)
    page.fill("#chat-input", "How severe is it?")
    page.click("#chat-form button")
    sync_api.expect(page.locator("#chat-log p.assistant")).to_have_count(2, timeout=15_000)
    assert "severity" in page.locator("#chat-log p.assistant").nth(1).inner_text()
    page.locator("#chat-log").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "screenshot_chat.png"), full_page=True)

    page.click("#feedback-form button[data-status=confirmed]")
    sync_api.expect(page.locator("#feedback-status")).to_have_text("saved: confirmed")
    stored = httpx.get(f"{service}/results/{result['id']}", headers={"X-API-Key": KEY}).json()
    assert stored["feedback_status"] == "confirmed"
    # the blowhole scores just above the threshold, so the guard lets a false alarm teach the model
    page.click("#feedback-form button[data-status=false_alarm]")
    sync_api.expect(page.locator("#feedback-status")).to_have_text(
        "saved: false_alarm; learned as mark 1 (model version 2)"
    )
    page.click("#undo-mark")
    sync_api.expect(page.locator("#feedback-status")).to_have_text("mark 1 undone (model version 3)")
    sync_api.expect(page.locator("#undo-mark")).to_be_hidden()
    page.click("#feedback-form button[data-status=false_alarm]")  # judged by version 1, which is gone
    sync_api.expect(page.locator("#feedback-status")).to_contain_text("saved: false_alarm; not learned: the result")
    turns = httpx.get(f"{service}/results/{result['id']}/chat", headers={"X-API-Key": KEY}).json()
    assert [t["content"] for t in turns if t["role"] == "user"] == ["Where is the anomaly?", "How severe is it?"]
    assert problems == []


def inspect_via_api(service: str, image: Path, question: str) -> dict:
    """An inspection and one chat turn made through the HTTP API, for a test to find in the page."""
    headers = {"X-API-Key": KEY}
    result = httpx.post(
        f"{service}/inspect", files={"file": (image.name, image.read_bytes())}, headers=headers, timeout=60
    ).json()
    httpx.post(f"{service}/results/{result['id']}/chat", json={"message": question}, headers=headers)
    return result


def test_a_bad_file_shows_the_reason_and_past_results_reopen(service, browser, demo_data, tmp_path):
    good = inspect_via_api(
        service, demo_data / "magnetic_tile" / "test" / "good" / "exp4_num_332730.jpg", "Is there any anomaly?"
    )
    page = browser.new_page()
    page.goto(service)
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    page.set_input_files("#file", str(text_file))
    sync_api.expect(page.locator("#status")).to_contain_text("422: not an inspectable image", timeout=30_000)
    # dropping a file on the drop zone goes the same way
    page.evaluate("""() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(["still not an image"], "dropped.png", {type: "image/png"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer}));
    }""")
    sync_api.expect(page.locator("#status")).to_contain_text("could not inspect dropped.png: 422")
    # the newest inspection is listed first; a click shows it again with its conversation
    sync_api.expect(page.locator("#past tr").first).to_contain_text(good["image"])
    page.locator("#past tr").first.click()
    sync_api.expect(page.locator("#verdict")).to_have_text("Normal")
    sync_api.expect(page.locator("#findings li")).to_have_text(["no anomalous region"])
    sync_api.expect(page.locator("#chat-log p.user")).to_have_text(["you: Is there any anomaly?"])


def test_the_report_renders(service, browser, demo_data):
    inspect_via_api(service, demo_data / "magnetic_tile" / "test" / "blowhole" / "exp4_num_4995.jpg", "Where?")
    headers = {"X-API-Key": KEY}
    n_anomalous = len(httpx.get(f"{service}/results?anomalous=true", headers=headers).json())
    report = httpx.get(f"{service}/report", headers=headers)
    assert report.status_code == 200
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_content(report.text)
    assert page.locator("svg").count() >= 1 and page.locator("article.card img").count() == 2 * n_anomalous
    page.wait_for_function("[...document.images].every((img) => img.complete && img.naturalWidth > 0)")
    assert page.locator("figcaption b").first.inner_text() == "Score histogram"
