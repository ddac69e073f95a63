"""Requests an attacker or a careless client sends, against a live ``anomalens serve`` with an API key.

Each attack is a named function that sends its request(s) to the service and returns the status, the time to
the answer and what the answer showed; the runner adds what the server spent on it: its peak resident memory
(``VmHWM``, reset before each attack) and the bytes it wrote (``wchar``: temporary files of uploads, the
store). The service runs in its own process from ``--checkout`` (that checkout's code, on loopback), so the
same script measures the code before and after a change:

    /work/main/.venv/bin/anomalens fit anomalens/demo_data --category magnetic_tile -o /tmp/edge_model --shots 8
    OMP_NUM_THREADS=1 python bench/service_attacks.py /tmp/edge_model --checkout /work/main --label before
    OMP_NUM_THREADS=1 python bench/service_attacks.py /tmp/edge_model --checkout . --label after

Results are merged, under the label, into ``bench/results/service_attacks_edge.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

KEY = "bench-key"
ROOT = Path(__file__).resolve().parent.parent
TILE = ROOT / "anomalens" / "demo_data" / "magnetic_tile" / "test" / "good" / "exp4_num_332730.jpg"
UPLOAD_BYTES = 20 * 10**6  # under the service's default 20 MiB per file, so only the key can refuse it
PARALLEL_UPLOADS = 16
STALL_WAIT_S = 10.0
HUGE = 2**63  # one past SQLite's largest integer
FORMULA_NAME = "=1+2*cmd|x!A0.png"


@dataclass
class Outcome:
    """What the client saw: the status (or None without an answer), seconds to the answer, and a note."""

    status: int | str | None
    seconds: float
    note: str = ""


@dataclass
class Attack:
    name: str
    request: str
    send: Callable[[str], Outcome]


def _timed(request: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = request()
    return response, time.perf_counter() - start


def _stored(url: str) -> int:
    return httpx.get(f"{url}/health").json()["stored_results"]


def unauthorised_uploads(url: str) -> Outcome:
    payload = b"\0" * UPLOAD_BYTES

    def one(_: int) -> int:
        try:
            return httpx.post(f"{url}/inspect", files={"file": ("big.png", payload)}, timeout=120).status_code
        except httpx.TransportError:
            return -1

    start = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL_UPLOADS) as pool:
        statuses = list(pool.map(one, range(PARALLEL_UPLOADS)))
    seconds = time.perf_counter() - start
    lost = statuses.count(-1)
    status = "/".join(str(s) for s in sorted(set(statuses) - {-1})) or None
    return Outcome(status, seconds, f"{lost} of {PARALLEL_UPLOADS} connections broke before an answer")


def unauthorised_stalled_upload(url: str) -> Outcome:
    """Headers announcing a 20 MB upload and its first 64 KiB, then nothing: is the client answered anyway?"""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /inspect HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {UPLOAD_BYTES}\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    ).encode()
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=STALL_WAIT_S) as connection:
        connection.sendall(head + b"\0" * 2**16)
        try:
            reply = connection.recv(4096)
        except TimeoutError:
            return Outcome(None, time.perf_counter() - start, f"no answer in {STALL_WAIT_S:g} s")
    status_line = reply.split(b"\r\n", 1)[0].decode()
    return Outcome(int(status_line.split()[1]), time.perf_counter() - start, status_line)


def _get(path: str) -> Callable[[str], Outcome]:
    def send(url: str) -> Outcome:
        response, seconds = _timed(lambda: httpx.get(f"{url}{path}", headers={"X-API-Key": KEY}, timeout=60))
        return Outcome(response.status_code, seconds, response.text[:160] if response.status_code != 200 else "")

    return send


def csv_formula_name(url: str) -> Outcome:
    headers = {"X-API-Key": KEY}
    stored = httpx.post(
        f"{url}/inspect", files={"file": (FORMULA_NAME, TILE.read_bytes())}, headers=headers, timeout=60
    )
    stored.raise_for_status()
    response, seconds = _timed(lambda: httpx.get(f"{url}/results/export?format=csv", headers=headers, timeout=60))
    [cell] = [row["image"] for row in csv.DictReader(io.StringIO(response.text)) if "cmd|x!A0" in row["image"]]
    live = cell[:1] in ("=", "+", "-", "@", "\t", "\r")
    return Outcome(response.status_code, seconds, f"image cell {cell!r}: {'a live formula' if live else 'text'}")


def two_file_parts(url: str) -> Outcome:
    before = _stored(url)
    files = [("file", ("first.jpg", TILE.read_bytes())), ("file", ("second.jpg", TILE.read_bytes()))]
    response, seconds = _timed(
        lambda: httpx.post(f"{url}/inspect", files=files, headers={"X-API-Key": KEY}, timeout=60)
    )
    shown = response.json().get("image") or response.json().get("detail")
    return Outcome(response.status_code, seconds, f"stored {_stored(url) - before}; answered: {shown}")


ATTACKS = [
    Attack(
        "unauthorised_uploads",
        f"{PARALLEL_UPLOADS} parallel POST /inspect of {UPLOAD_BYTES / 1e6:g} MB each, no API key",
        unauthorised_uploads,
    ),
    Attack(
        "unauthorised_stalled_upload",
        f"POST /inspect announcing {UPLOAD_BYTES / 1e6:g} MB, no API key, 64 KiB sent, then silence",
        unauthorised_stalled_upload,
    ),
    Attack("offset_overflow_results", f"GET /results?offset={HUGE}", _get(f"/results?offset={HUGE}")),
    Attack("offset_overflow_export", f"GET /results/export?offset={HUGE}", _get(f"/results/export?offset={HUGE}")),
    Attack("offset_overflow_report", f"GET /report?offset={HUGE}", _get(f"/report?offset={HUGE}")),
    Attack("since_not_a_number", "GET /results?since=nan", _get("/results?since=nan")),
    Attack("csv_formula_name", f"POST /inspect of a file named {FORMULA_NAME}, then CSV export", csv_formula_name),
    Attack("two_file_parts", "POST /inspect with two `file` parts", two_file_parts),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(model_dir: str, checkout: Path, data_dir: Path) -> Iterator[tuple[str, int]]:
    """``anomalens serve`` from ``checkout`` with an API key; yields its URL and process id."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_WAIT_POLICY": "PASSIVE"}
    argv = ["serve", model_dir, "--api-key", KEY, "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen([sys.executable, "-m", "anomalens.cli.main", *argv], cwd=checkout, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the service did not start") from None
                time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def _peak_rss_mib(pid: int) -> float:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("VmHWM")) / 1024


def _written_bytes(pid: int) -> int:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("wchar"))


def run_attack(attack: Attack, url: str, pid: int) -> dict:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak counts from now: this attack's own
    written = _written_bytes(pid)
    outcome = attack.send(url)
    return {
        "name": attack.name,
        "request": attack.request,
        **asdict(outcome),
        "server_peak_mib": round(_peak_rss_mib(pid), 1),
        "server_wrote_mib": round((_written_bytes(pid) - written) / 2**20, 1),
    }


def _commit(checkout: Path) -> str:
    described = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return described.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code to serve (default: this checkout)")
    parser.add_argument("--label", required=True, help="name of this run in the results, e.g. before or after")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "service_attacks_edge.json")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    rows = []
    with tempfile.TemporaryDirectory() as data_dir, served(args.model_dir, checkout, Path(data_dir)) as (url, pid):
        for attack in ATTACKS:
            rows.append(run_attack(attack, url, pid))
            print(json.dumps(rows[-1]), flush=True)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results[args.label] = {
        "checkout": str(checkout),
        "commit": _commit(checkout),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "attacks": rows,
    }
    args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
