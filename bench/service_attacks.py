"""Requests an attacker or a careless client sends, against a live ``anomalens serve`` with an API key.

Each attack is a named function that sends its request(s) to the service and returns the status, the time to
the answer and what the answer showed; the runner adds what the server spent on it: its peak resident memory
(``VmHWM``, reset before each attack) and the bytes it wrote (``wchar``: temporary files of uploads, the
store). The service runs in its own process from ``--checkout`` (that checkout's code, on loopback), its address
space capped (``--memory-cap``, as ``prlimit --as`` does) so that a service that decodes a bomb fails instead of
taking the machine; an attack that may leave the service stuck or broken (the 64 MP frame, the bomb) gets a
service of its own, stopped after it (SIGTERM, then SIGKILL when that does not end it). Every request waits at
most ``--timeout`` seconds for its answer. Two command-line checks run from the checkout too: ``anomalens serve``
without the service extra, and ``anomalens predict`` on a folder of folders. So the same script measures the
code before and after a change:

    /work/main/.venv/bin/anomalens fit anomalens/demo_data --category magnetic_tile -o /tmp/table_model --shots 8
    OMP_NUM_THREADS=1 python bench/service_attacks.py /tmp/table_model --checkout /tmp/before16 --label before
    OMP_NUM_THREADS=1 python bench/service_attacks.py /tmp/table_model --checkout . --label after

Results are merged, under the label, into ``bench/results/service_attacks.json``, and the table of all labels
is written beside it (``service_attacks.md``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import re
import resource
import shlex
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the bomb builder is a test helper
# the format samples and the /health poller are those of the benches beside this one
from decode_bomb import format_samples  # noqa: E402
from inspect_sizes import poll_health  # noqa: E402
from live_service import wait_until_healthy  # noqa: E402

from image_bombs import zero_png  # noqa: E402

KEY = "bench-key"
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "anomalens" / "demo_data" / "magnetic_tile"
TILE = DEMO / "test" / "good" / "exp4_num_332730.jpg"
UPLOAD_BYTES = 20 * 10**6  # under the service's default 20 MiB per file, so only the key can refuse it
PARALLEL_UPLOADS = 16
STALL_WAIT_S = 10.0
HUGE = 2**63  # one past SQLite's largest integer
FORMULA_NAME = "=1+2*cmd|x!A0.png"
FRAME_SIDE = 8000  # 64 MP, the service's default pixel limit
BOMB_SIDE = 30000
BATCH = 8
REPEATS = 8
TIMEOUT_S = 180.0  # how long each request waits for its answer; --timeout sets it


@dataclass
class Server:
    """A running ``anomalens serve``: its address, process and data folder (store and defect history)."""

    url: str
    process: subprocess.Popen
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after 30 s; says which ended it."""
        tic = time.perf_counter()
        self.process.terminate()
        try:
            self.process.wait(30)
            return f"stopped by SIGTERM in {time.perf_counter() - tic:.1f} s"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            return "SIGTERM did not stop it in 30 s: killed"


@dataclass
class Outcome:
    """What the client saw: the status (or None without an answer), seconds to the answer, a note, and any
    further figures."""

    status: int | str | None
    seconds: float
    note: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class Attack:
    name: str
    request: str
    send: Callable[[Server], Outcome]
    own_server: bool = False  # may leave the service stuck or broken: a fresh one, stopped after it


def _timed(request: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = request()
    return response, time.perf_counter() - start


def _stored(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=30).json()["stored_results"]


def _upload(path: str, name: str, data: bytes, field_name: str = "file") -> Callable[[Server], Outcome]:
    """POST one file to ``path``; no answer within the timeout is an outcome too."""

    def send(server: Server) -> Outcome:
        files = {field_name: (name, data)}
        start = time.perf_counter()
        try:
            response = httpx.post(f"{server.url}{path}", files=files, headers={"X-API-Key": KEY}, timeout=TIMEOUT_S)
        except httpx.TimeoutException:
            return Outcome(None, time.perf_counter() - start, f"no answer in {TIMEOUT_S:g} s")
        except httpx.TransportError as error:
            return Outcome(None, time.perf_counter() - start, f"connection lost: {type(error).__name__}")
        seconds = time.perf_counter() - start
        if response.status_code != 200:
            return Outcome(response.status_code, seconds, response.text[:160])
        found = response.json()
        return Outcome(200, seconds, f"inspected: anomalous {found['anomalous']}, {len(found['regions'])} region(s)")

    return send


def unauthorised_uploads(server: Server) -> Outcome:
    payload = b"\0" * UPLOAD_BYTES

    def one(_: int) -> int:
        try:
            return httpx.post(f"{server.url}/inspect", files={"file": ("big.png", payload)}, timeout=120).status_code
        except httpx.TransportError:
            return -1

    start = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL_UPLOADS) as pool:
        statuses = list(pool.map(one, range(PARALLEL_UPLOADS)))
    seconds = time.perf_counter() - start
    lost = statuses.count(-1)
    status = "/".join(str(s) for s in sorted(set(statuses) - {-1})) or None
    return Outcome(status, seconds, f"{lost} of {PARALLEL_UPLOADS} connections broke before an answer")


def unauthorised_stalled_upload(server: Server) -> Outcome:
    """Headers announcing a 20 MB upload and its first 64 KiB, then nothing: is the client answered anyway?"""
    host, port = server.url.removeprefix("http://").split(":")
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


def _get(path: str) -> Callable[[Server], Outcome]:
    def send(server: Server) -> Outcome:
        response, seconds = _timed(lambda: httpx.get(f"{server.url}{path}", headers={"X-API-Key": KEY}, timeout=60))
        return Outcome(response.status_code, seconds, response.text[:160] if response.status_code != 200 else "")

    return send


def csv_formula_name(server: Server) -> Outcome:
    headers = {"X-API-Key": KEY}
    stored = httpx.post(
        f"{server.url}/inspect", files={"file": (FORMULA_NAME, TILE.read_bytes())}, headers=headers, timeout=60
    )
    stored.raise_for_status()
    response, seconds = _timed(
        lambda: httpx.get(f"{server.url}/results/export?format=csv", headers=headers, timeout=60)
    )
    [cell] = [row["image"] for row in csv.DictReader(io.StringIO(response.text)) if "cmd|x!A0" in row["image"]]
    live = cell[:1] in ("=", "+", "-", "@", "\t", "\r")
    return Outcome(response.status_code, seconds, f"image cell {cell!r}: {'a live formula' if live else 'text'}")


def two_file_parts(server: Server) -> Outcome:
    before = _stored(server.url)
    files = [("file", ("first.jpg", TILE.read_bytes())), ("file", ("second.jpg", TILE.read_bytes()))]
    response, seconds = _timed(
        lambda: httpx.post(f"{server.url}/inspect", files=files, headers={"X-API-Key": KEY}, timeout=60)
    )
    shown = response.json().get("image") or response.json().get("detail")
    return Outcome(response.status_code, seconds, f"stored {_stored(server.url) - before}; answered: {shown}")


def gradient_frame_png(side: int = FRAME_SIDE) -> bytes:
    """A ``side`` x ``side`` RGB PNG that compresses well: a smooth left-to-right gradient with one dark spot."""
    ramp = np.linspace(90, 170, side).astype(np.uint8)
    image = np.repeat(np.broadcast_to(ramp[None, :, None], (side, side, 1)), 3, axis=2)
    cv2.circle(image, (side * 2 // 3, side // 3), side // 60, (20, 20, 20), -1)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


FRAME = gradient_frame_png()


def large_frame_with_health(server: Server) -> Outcome:
    """The 64 MP frame, with ``/health`` polled while it is inspected: median and max latency of the polls."""
    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_health, args=(server.url, stop, latencies, failures), daemon=True)
    poller.start()
    try:
        outcome = _upload("/inspect", "frame.png", FRAME)(server)
    finally:
        stop.set()
        poller.join()
    outcome.details = {
        "health_polls": len(latencies) + len(failures),
        "health_unanswered": len(failures),
        "health_median_ms": statistics.median(latencies) if latencies else None,
        "health_max_ms": max(latencies) if latencies else None,
    }
    return outcome


def batch_files() -> list[tuple[str, tuple[str, bytes]]]:
    paths = sorted((DEMO / "test").rglob("*.jpg"))[:BATCH]
    return [("files", (f"{i}-{path.name}", path.read_bytes())) for i, path in enumerate(paths)]


def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)


def batch_cut_off_then_retried(server: Server) -> Outcome:
    """A batch with an ``Idempotency-Key`` whose client stops listening once the upload is sent (the server
    runs on), then the same batch with the same key: how many rows the two stored."""
    files, key = batch_files(), "lost-connection-1"
    before = _stored(server.url)
    gives_up = httpx.Timeout(30, read=0.001)  # the whole upload is sent, then the client stops listening
    headers = {"X-API-Key": KEY, "Idempotency-Key": key}
    try:
        httpx.post(f"{server.url}/inspect/batch", files=files, headers=headers, timeout=gives_up)
        first = "answered"
    except httpx.ReadTimeout:
        first = "client gave up"
    _wait_until(lambda: _stored(server.url) - before >= len(files), TIMEOUT_S)
    stored_first = _stored(server.url) - before
    retry, seconds = _timed(
        lambda: httpx.post(f"{server.url}/inspect/batch", files=files, headers=headers, timeout=TIMEOUT_S)
    )
    rows = _stored(server.url) - before
    return Outcome(
        retry.status_code,
        seconds,
        f"first attempt: {first}, {stored_first} stored; retry with the same Idempotency-Key: "
        f"{rows} rows stored for {len(files)} files",
        {"files": len(files), "stored_first": stored_first, "rows": rows},
    )


def _result_with_regions(server: Server) -> dict:
    """The stored result of the first demo defect image in which the model finds regions."""
    for path in sorted((DEMO / "test").rglob("*.jpg")):
        result = httpx.post(
            f"{server.url}/inspect",
            files={"file": (f"feedback-{path.name}", path.read_bytes())},
            headers={"X-API-Key": KEY},
            timeout=60,
        ).json()
        if result["regions"]:
            return result
    raise RuntimeError("the model finds no region in any demo image")


def same_feedback_repeated(server: Server) -> Outcome:
    """One judgement of a result with regions sent ``REPEATS`` times: the cases it leaves in the defect history."""
    result = _result_with_regions(server)
    judgement = {"status": "confirmed", "cause": "gas in the mould"}
    start = time.perf_counter()
    statuses = [
        httpx.post(
            f"{server.url}/results/{result['id']}/feedback", json=judgement, headers={"X-API-Key": KEY}, timeout=60
        ).status_code
        for _ in range(REPEATS)
    ]
    seconds = time.perf_counter() - start
    with sqlite3.connect(server.data_dir / "defect_history.db") as history:
        [(cases,)] = history.execute("SELECT count(*) FROM cases WHERE image = ?", (result["image"],)).fetchall()
    regions = len(result["regions"])
    return Outcome(
        "/".join(str(s) for s in sorted(set(statuses))),
        seconds,
        f"{cases} case(s) in the defect history from one image ({result['image']}) with {regions} region(s)",
        {"cases": cases, "regions": regions},
    )


def _format_attacks() -> list[Attack]:
    return [
        Attack(
            f"format_{name.rsplit('.', 1)[1]}",
            f"POST /inspect of a {description} ({name})",
            _upload("/inspect", name, data),
        )
        for description, name, data in format_samples()
    ]


BOMB = zero_png(BOMB_SIDE, BOMB_SIDE)

ATTACKS = [
    Attack(
        "frame_64mp",
        f"POST /inspect of a {FRAME_SIDE}x{FRAME_SIDE} RGB PNG of {len(FRAME) // 1000} KB (smooth gradient, a dark "
        "spot), /health polled meanwhile",
        large_frame_with_health,
        own_server=True,
    ),
    Attack(
        "gray_png_bomb",
        f"POST /inspect of a {BOMB_SIDE}x{BOMB_SIDE} grey PNG of zeros, {len(BOMB) // 1000} KB",
        _upload("/inspect", "bomb.png", BOMB),
        own_server=True,
    ),
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
    Attack(
        "batch_cut_off_then_retried",
        f"POST /inspect/batch of {BATCH} images with an Idempotency-Key, the client gone before the answer; "
        "then the same again",
        batch_cut_off_then_retried,
    ),
    Attack(
        "same_feedback_repeated",
        f"POST /results/ID/feedback, the same judgement {REPEATS} times",
        same_feedback_repeated,
    ),
    *_format_attacks(),
    Attack("two_file_parts", "POST /inspect with two `file` parts", two_file_parts),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _capped(memory_bytes: int) -> Callable[[], None]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return cap


def start_server(model_dir: str, checkout: Path, data_dir: Path, memory_bytes: int) -> Server:
    """``anomalens serve`` from ``checkout`` with an API key, its address space capped at ``memory_bytes``."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_WAIT_POLICY": "PASSIVE"}
    argv = ["serve", model_dir, "--api-key", KEY, "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "anomalens.cli.main", *argv], cwd=checkout, env=env, preexec_fn=_capped(memory_bytes)
    )
    server = Server(f"http://127.0.0.1:{port}", process, data_dir)
    try:
        wait_until_healthy(server.url, process)
    except RuntimeError:
        server.stop()
        raise
    return server


def _peak_rss_mib(pid: int) -> float:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("VmHWM")) / 1024


def _written_bytes(pid: int) -> int:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("wchar"))


def run_attack(attack: Attack, server: Server) -> dict:
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # the peak counts from now: this attack's own
    written = _written_bytes(server.pid)
    outcome = attack.send(server)
    alive = server.process.poll() is None
    return {
        "name": attack.name,
        "request": attack.request,
        **asdict(outcome),
        "server_peak_mib": round(_peak_rss_mib(server.pid), 1) if alive else None,
        "server_wrote_mib": round((_written_bytes(server.pid) - written) / 2**20, 1) if alive else None,
        "server_alive": alive,
    }


def _command_check(name: str, request: str, argv: list[str], checkout: Path, memory_bytes: int) -> dict:
    """Run the CLI of ``checkout`` with ``argv`` in a fresh capped process: exit status, seconds, peak memory and
    the first and last line it printed. ``argv[0]`` lists modules to play as not installed (comma-separated)."""
    # the child reports its own VmHWM as it exits: the rusage of a child counts the parent's peak from the fork
    launcher = (
        "import atexit, os, sys; "
        "atexit.register(lambda: open(os.environ['PEAK_FILE'], 'w').write(open('/proc/self/status').read())); "
        "blocked = sys.argv[1].split(',') if sys.argv[1] else []; "
        "sys.modules.update(dict.fromkeys(blocked)); "  # a module set to None cannot be imported: not installed
        "from anomalens.cli.main import main; raise SystemExit(main(sys.argv[2:]))"
    )
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryFile("w+") as printed:
        peak_file = Path(work) / "status"
        env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200"}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", launcher, *argv],
            cwd=work,
            env={**env, "PEAK_FILE": str(peak_file)},
            stdout=printed,
            stderr=subprocess.STDOUT,
            preexec_fn=_capped(memory_bytes),
            timeout=TIMEOUT_S,
        )
        seconds = time.perf_counter() - start
        printed.seek(0)
        lines = [re.sub("[━╸╺]+", "[bar]", line.strip()) for line in printed.read().splitlines() if line.strip()]
        status = peak_file.read_text().splitlines()
    return {
        "name": name,
        "request": request,
        "status": f"exit {done.returncode}",
        "seconds": seconds,
        "note": " … ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else "(printed nothing)",
        "peak_mib": round(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024, 1),
    }


def command_checks(model_dir: str, checkout: Path, memory_bytes: int) -> list[dict]:
    """The two rows of the table that are commands, not requests."""
    folder = DEMO / "test"
    return [
        _command_check(
            "serve_without_service_extra",
            "`anomalens serve MODEL` where uvicorn is not installed",
            ["uvicorn", "serve", model_dir, "--port", str(_free_port())],
            checkout,
            memory_bytes,
        ),
        _command_check(
            "predict_folder_of_folders",
            f"`anomalens predict MODEL {folder.relative_to(ROOT)}` (images in test/<type>/)",
            ["", "predict", model_dir, str(folder), "-o", "predicted"],
            checkout,
            memory_bytes,
        ),
    ]


def _busy_processes() -> list[str]:
    """Other processes that kept a CPU at least 5 % busy over their lifetime (ps), with their command lines."""
    listed = subprocess.run(["ps", "-eo", "pcpu=,args=", "--sort=-pcpu"], capture_output=True, text=True).stdout
    busy = [line.strip().split(None, 1) for line in listed.splitlines() if line.strip()]
    return [f"{cpu} % {command[:100]}" for cpu, command in busy if float(cpu) >= 5 and "service_attacks" not in command]


def _commit(checkout: Path) -> str:
    described = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return described.stdout.strip()


def _cell(row: dict | None, peak_key: str) -> str:
    if row is None:
        return " | | "
    status = "no answer" if row["status"] is None else row["status"]
    peak = "" if row.get(peak_key) is None else f"{row[peak_key]:.0f}"
    return f"{status} | {row['seconds']:.2f} | {peak}"


def markdown(results: dict) -> str:
    """One row per request (and per command): each label's status, seconds and peak memory, and the notes."""
    labels = list(results)
    lines = ["# Attacks on a live service, before and after", ""]
    for label, run in results.items():
        lines.append(
            f"- **{label}**: `{run['command']}` (code of `{run['checkout']}` at {run['commit']}); {run['machine']}; "
            f"load average {run['load_start']} at the start, {run['load_end']} at the end. {run['note']}"
        )
        for moment in ("start", "end"):
            busy = "; ".join(f"`{line}`" for line in run[f"busy_at_{moment}"]) or "none"
            lines.append(f"  - other processes busy at the {moment} (CPU % over their lifetime, ps): {busy}")
    lines += [
        "",
        "Status is the HTTP status (an exit status for a command); seconds to the answer as the client saw it; "
        "peak MB is the server's peak resident memory during that request (VmHWM, reset before each; for a "
        "command, the process's own peak). A package that is not installed is played by `sys.modules[name] = None`: "
        "Python then says `import of NAME halted; None in sys.modules` where a machine without the package says "
        "`No module named 'NAME'`.",
        "",
        "| request | " + " | ".join(f"{label} status | {label} s | {label} peak MB" for label in labels) + " | note |",
        "|---" * (2 + 3 * len(labels)) + "|",
    ]
    by_label = {label: {row["name"]: row for row in run["attacks"]} for label, run in results.items()}
    commands = {label: {row["name"]: row for row in run.get("commands", [])} for label, run in results.items()}
    first = results[labels[0]]
    for attack in first["attacks"]:
        rows = [by_label[label].get(attack["name"]) for label in labels]
        cells = " | ".join(_cell(row, "server_peak_mib") for row in rows)
        notes = "; ".join(f"{label}: {_note(row)}" for label, row in zip(labels, rows, strict=True) if row)
        lines.append(f"| {_escaped(attack['request'])} | {cells} | {notes} |")
        if "health_polls" in attack["details"]:
            health = [_health(row) for row in rows]
            lines.append(f"| /health while that frame is inspected | {' | '.join(health)} | polls every 0.2 s |")
    for command in first.get("commands", []):
        rows = [commands[label].get(command["name"]) for label in labels]
        cells = " | ".join(_cell(row, "peak_mib") for row in rows)
        notes = "; ".join(f"{label}: {_escaped(row['note'])}" for label, row in zip(labels, rows, strict=True) if row)
        lines.append(f"| {command['request']} (command) | {cells} | {notes} |")
    return "\n".join(lines) + "\n"


def _escaped(text: str) -> str:
    """``text`` as one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _note(row: dict) -> str:
    note = _escaped(row["note"])
    if row.get("server_alive") is False:
        note += " (the service died)"
    if row.get("server_stop"):
        note += f"; service {row['server_stop']}"
    return note


def _health(row: dict | None) -> str:
    if row is None or not row["details"].get("health_polls"):
        return " | | "
    d = row["details"]
    unanswered = f", {d['health_unanswered']} unanswered" if d["health_unanswered"] else ""
    if d["health_median_ms"] is None:
        return f"{d['health_polls']} polls{unanswered} | | "
    median, peak = d["health_median_ms"], d["health_max_ms"]
    return f"{d['health_polls']} polls{unanswered} | median {median:.0f} ms | max {peak:.0f} ms"


def main() -> None:
    global TIMEOUT_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code to serve (default: this checkout)")
    parser.add_argument("--label", required=True, help="name of this run in the results, e.g. before or after")
    parser.add_argument("--memory-cap", type=int, default=6_000_000_000, help="server address space in bytes")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds a request waits for its answer")
    parser.add_argument("--only", nargs="+", help="run only these attacks (by name)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "service_attacks.json")
    args = parser.parse_args()
    TIMEOUT_S = args.timeout
    checkout, model_dir = args.checkout.resolve(), str(Path(args.model_dir).resolve())
    attacks = [attack for attack in ATTACKS if not args.only or attack.name in args.only]
    load_start, busy_start = os.getloadavg(), _busy_processes()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        shared = start_server(model_dir, checkout, Path(work) / "shared", args.memory_cap)
        try:
            for attack in attacks:
                if attack.own_server:
                    own = start_server(model_dir, checkout, Path(work) / attack.name, args.memory_cap)
                    try:
                        rows.append(run_attack(attack, own))
                    finally:
                        rows[-1]["server_stop"] = own.stop()
                else:
                    rows.append(run_attack(attack, shared))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            shared.stop()
    commands = [] if args.only else command_checks(model_dir, checkout, args.memory_cap)
    for row in commands:
        print(json.dumps(row), flush=True)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results[args.label] = {
        "command": shlex.join(["python", "bench/service_attacks.py", *sys.argv[1:]]),
        "checkout": str(checkout),
        "commit": _commit(checkout),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; every service's address space capped at "
        f"{args.memory_cap} bytes (RLIMIT_AS, as prlimit --as={args.memory_cap}); requests wait {TIMEOUT_S:g} s",
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "note": args.note,
        "busy_at_start": busy_start,
        "busy_at_end": _busy_processes(),
        "attacks": rows,
        "commands": commands,
    }
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
