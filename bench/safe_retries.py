"""Retries and repeated feedback against the inspection service: what gets stored twice.

Three tries, each on a fresh ``anomalens serve`` process (one torch thread, loopback, API key on) with its own
data folder:

- **lost connection**: a batch of 8 images sent with an ``Idempotency-Key``; the client gives up before the
  answer (the server runs on and stores the batch); the same batch is sent again with the same key.
- **cut off half way**: the same, but the server is killed (SIGKILL) once some of the batch is stored, then
  restarted on the same data folder before the retry.
- **feedback 8 times**: one judgement of all regions of an anomalous result sent 8 times, then 8 judgements
  that change (confirmed, corrected, false alarm in turn) on another result.

It counts the rows of the store (``inspections``, ``feedback``) and the cases of the defect history. A service
that does not know the header simply ignores it, so the script measures any version of the package:

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/safe_retries.py --markdown bench/results/safe_retries.md
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from live_service import wait_until_healthy

import anomalens

KEY = "bench-key"
DEMO = Path(anomalens.__file__).resolve().parent / "demo_data" / "magnetic_tile"
SPOT = DEMO / "test" / "blowhole" / "exp4_num_4995.jpg"
FAST = {"image_size": 128, "min_bank_size": 256, "coreset_ratio": 0.1, "augment_below": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_model(folder: Path) -> Path:
    from anomalens.data import read_image
    from anomalens.models import PatchCore

    train = sorted((DEMO / "train" / "good").glob("*.jpg"))[:8]
    PatchCore(**FAST).fit([read_image(path) for path in train]).save(folder)
    return folder


class Service:
    """``anomalens serve`` in a subprocess on ``data_dir``."""

    def __init__(self, model_dir: Path, data_dir: Path):
        self.model_dir, self.data_dir = model_dir, data_dir
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        argv = ["serve", str(self.model_dir), "--port", str(port), "--data-dir", str(self.data_dir)]
        launcher = (
            "import torch; torch.set_num_threads(1); from anomalens.cli.main import main; "
            f"raise SystemExit(main({argv!r}))"
        )
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "ANOMALENS_API_KEY": KEY}
        self.process = subprocess.Popen([sys.executable, "-c", launcher], env=env, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        wait_until_healthy(self.url, self.process)

    def stored(self) -> int:
        return httpx.get(f"{self.url}/health", timeout=30).json()["stored_results"]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, **options)


@contextmanager
def served(model_dir: Path, data_dir: Path):
    service = Service(model_dir, data_dir)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def batch_files() -> list[tuple[str, tuple[str, bytes]]]:
    paths = sorted((DEMO / "test").rglob("*.jpg"))[:8]
    return [("files", (f"{i}-{path.name}", path.read_bytes())) for i, path in enumerate(paths)]


def wait_until(condition, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.02)


def count_rows(database: Path, table: str) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def retried_batch(service: Service, files: list, key: str) -> dict:
    with service.client(timeout=300) as client:
        response = client.post("/inspect/batch", files=files, headers={"Idempotency-Key": key})
    body = response.json()
    stored = [f for f in body.get("files", []) if f.get("stored")]
    return {"status": response.status_code, "answered": len(body.get("results", [])), "reported_stored": len(stored)}


def lost_connection(model_dir: Path, data_dir: Path) -> dict:
    files = batch_files()
    with served(model_dir, data_dir) as service:
        gives_up = httpx.Timeout(30, read=0.001)  # the whole upload is sent, then the client stops listening
        with service.client(timeout=gives_up) as client:
            try:
                client.post("/inspect/batch", files=files, headers={"Idempotency-Key": "lost-1"})
                first = "answered"
            except httpx.ReadTimeout:
                first = "client gave up"
        wait_until(lambda: service.stored() >= len(files))
        stored_first = service.stored()
        retry = retried_batch(service, files, "lost-1")
        rows = service.stored()
    return {"files": len(files), "first": first, "stored_first": stored_first, **retry, "rows": rows}


def cut_off_half_way(model_dir: Path, data_dir: Path) -> dict:
    files = batch_files()
    service = Service(model_dir, data_dir)
    service.start()
    try:

        def send() -> None:
            try:
                with service.client(timeout=300) as client:
                    client.post("/inspect/batch", files=files, headers={"Idempotency-Key": "cut-1"})
            except httpx.TransportError:
                pass  # the server died under the request

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: service.stored() >= 2)
        service.kill()
        sender.join()
        service.start()
        stored_first = service.stored()
        retry = retried_batch(service, files, "cut-1")
        rows = service.stored()
    finally:
        service.stop()
    return {"files": len(files), "first": "server killed", "stored_first": stored_first, **retry, "rows": rows}


def repeated_feedback(model_dir: Path, data_dir: Path) -> dict:
    spot = SPOT.read_bytes()
    judgements = [
        {"status": "confirmed", "cause": "gas in the mould"},
        {"status": "corrected", "defect_type": "crack", "cause": "thermal stress"},
        {"status": "false_alarm"},
    ]
    with served(model_dir, data_dir) as service, service.client(timeout=300) as client:
        same = client.post("/inspect", files={"file": ("same.jpg", spot)}).json()
        changing = client.post("/inspect", files={"file": ("changing.jpg", spot)}).json()
        statuses = [client.post(f"/results/{same['id']}/feedback", json=judgements[0]).status_code for _ in range(8)]
        statuses += [
            client.post(f"/results/{changing['id']}/feedback", json=judgements[i % 3]).status_code for i in range(8)
        ]
        current = client.get(f"/results/{changing['id']}").json()["feedback_status"]
    with sqlite3.connect(data_dir / "defect_history.db") as history:
        cases = dict(history.execute("SELECT image, count(*) FROM cases GROUP BY image").fetchall())
        last = history.execute("SELECT status FROM cases WHERE image = 'changing.jpg' ORDER BY id").fetchall()
    return {
        "regions": len(same["regions"]),
        "statuses": sorted(set(statuses)),
        "cases_same": cases.get("same.jpg", 0),
        "cases_changing": cases.get("changing.jpg", 0),
        "case_statuses_changing": sorted({s for (s,) in last}),
        "current": current,
        "feedback_rows": count_rows(data_dir / "inspections.db", "feedback"),
    }


def markdown(batches: list[tuple[str, dict]], feedback: dict, command: str) -> str:
    lines = [
        "# Safe retries and repeated feedback",
        "",
        f"`{command}`",
        "",
        f"anomalens from `{Path(anomalens.__file__).resolve().parent.parent}`; a batch of 8 demo images per try.",
        "",
        "| try | first attempt | stored by it | retry status | retry answered | retry reports stored | rows |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['first']} | {r['stored_first']} | {r['status']} | {r['answered']} | "
        f"{r['reported_stored']} | **{r['rows']}** (of {r['files']} files) |"
        for name, r in batches
    ]
    lines += [
        "",
        f"Feedback on a result with {feedback['regions']} region(s), answers {feedback['statuses']}; "
        f"{feedback['feedback_rows']} rows in the store's `feedback` table (the audit trail).",
        "",
        "| feedback | history cases | case statuses | result's feedback_status |",
        "|---|---|---|---|",
        f"| the same judgement 8 times | **{feedback['cases_same']}** | confirmed | confirmed |",
        f"| 8 changing judgements | **{feedback['cases_changing']}** | "
        f"{', '.join(feedback['case_statuses_changing'])} | {feedback['current']} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a fitted model (default: PatchCore fitted on 8 demo images)")
    parser.add_argument("--markdown", help="write the tables to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="anomalens-retries-"))
    model_dir = Path(args.model_dir) if args.model_dir else fit_model(work / "model")
    batches = [
        ("lost connection, then retried", lost_connection(model_dir, work / "lost")),
        ("server killed half way, restarted, retried", cut_off_half_way(model_dir, work / "cut")),
    ]
    feedback = repeated_feedback(model_dir, work / "feedback")
    text = markdown(batches, feedback, "python " + " ".join(sys.argv))
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
