"""Load test of the inspection service: single-image POST /inspect at several client concurrencies.

The service runs in its own process (``anomalens serve`` with one torch thread, on loopback) unless ``--url``
points at one already running; the clients are threads of this process, each with its own HTTP connection.
For each concurrency it reports requests per second and p50 / p95 latency, counts errors, and at the end
counts the rows in the store to show that every answered request was stored. It also sends the bad inputs of
``docs/service.md`` and records what each got. Any model directory works (PatchCore, EfficientAD, ...).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/service_load.py /tmp/svc_model \\
        --images ../shared/data/magnetic_tile/test --markdown bench/results/service_load_patchcore.md
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import tifffile
from live_service import wait_until_healthy

KEY = "bench-key"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(model_dir: str, data_dir: Path, database_url: str | None):
    """``anomalens serve`` in a subprocess with one torch thread; yields its URL."""
    port = free_port()
    argv = ["serve", model_dir, "--port", str(port), "--data-dir", str(data_dir), "--max-upload-mb", "20"]
    if database_url:
        argv += ["--database-url", database_url]
    launcher = (
        f"import torch; torch.set_num_threads(1); from anomalens.cli.main import main; raise SystemExit(main({argv!r}))"
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "ANOMALENS_API_KEY": KEY}
    process = subprocess.Popen([sys.executable, "-c", launcher], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def inspect_once(client: httpx.Client, name: str, data: bytes) -> tuple[float, int]:
    tic = time.perf_counter()
    response = client.post("/inspect", files={"file": (name, data)})
    return time.perf_counter() - tic, response.status_code


def load_level(url: str, images: list[tuple[str, bytes]], concurrency: int, n_requests: int) -> dict:
    """``n_requests`` inspections spread over ``concurrency`` clients, each sending one request at a time."""

    def client_loop(worker: int) -> list[tuple[float, int]]:
        mine = range(worker, n_requests, concurrency)
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=300) as client:
            return [inspect_once(client, *images[i % len(images)]) for i in mine]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = [o for worker in pool.map(client_loop, range(concurrency)) for o in worker]
    wall = time.perf_counter() - start
    latencies = sorted(1000 * seconds for seconds, status in outcomes if status == 200)
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": sum(s != 200 for _, s in outcomes),
        "seconds": wall,
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
    }


def bad_inputs(sample_jpeg: bytes) -> list[tuple[str, str, bytes, dict]]:
    """(what, file name, bytes, extra headers) for each bad-input try."""
    gray = cv2.imdecode(np.frombuffer(sample_jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    tiff = io.BytesIO()
    tifffile.imwrite(tiff, gray.astype(np.uint16) * 257)
    one_pixel = cv2.imencode(".png", np.full((1, 1, 3), 128, np.uint8))[1].tobytes()
    return [
        ("empty file", "empty.png", b"", {}),
        ("text file named .png", "notes.png", b"just some text\n" * 20, {}),
        ("50 MB upload", "huge.png", sample_jpeg + os.urandom(50 * 2**20), {}),
        ("truncated JPEG", "cut.jpg", sample_jpeg[: len(sample_jpeg) // 2], {}),
        ("1x1 image", "dot.png", one_pixel, {}),
        ("16-bit TIFF", "deep.tif", tiff.getvalue(), {}),
        ("path-traversal file name", "../../../etc/passwd.jpg", sample_jpeg, {}),
        ("wrong API key", "part.jpg", sample_jpeg, {"X-API-Key": "wrong"}),
    ]


def try_bad_inputs(url: str, sample_jpeg: bytes) -> list[tuple[str, int, str]]:
    rows = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=120) as client:
        for what, name, data, headers in bad_inputs(sample_jpeg):
            response = client.post("/inspect", files={"file": (name, data)}, headers=headers)
            body = response.json()
            answer = body.get("detail") or (
                f"inspected as image {body['image']!r}, {body['width']}x{body['height']}, {body['verdict']}"
            )
            rows.append((what, response.status_code, answer))
    return rows


def stored_rows(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM inspections")).scalar()
    engine.dispose()
    return int(count)


def markdown(
    model_dir: str,
    images_dir: str,
    levels: list[dict],
    expected: int,
    rows: int,
    trials: list[tuple[str, int, str]],
    command: str,
) -> str:
    lines = [
        f"# Service load: `{Path(model_dir).name}`",
        "",
        f"`{command}`",
        "",
        f"Model `{model_dir}`; images from `{images_dir}`; {platform.node()}, {os.cpu_count()} cores, "
        "service with one torch thread, clients in a second process on loopback.",
        "",
        "| clients | requests | errors | req/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {level['concurrency']} | {level['requests']} | {level['errors']} | {level['rps']:.2f} | "
        f"{level['p50_ms']:.0f} | {level['p95_ms']:.0f} |"
        for level in levels
    ]
    lines += [
        "",
        f"Rows in the store after the run: **{rows}** (expected {expected}: every successful inspection, "
        "warm-up included).",
        "",
        "## Bad inputs",
        "",
        "| input | status | answer |",
        "|---|---|---|",
    ]
    lines += [f"| {what} | {status} | {answer.replace('|', '/')} |" for what, status, answer in trials]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="any fitted model directory (or a folder of them)")
    parser.add_argument("--images", default="../shared/data/magnetic_tile/test", help="folder of test images")
    parser.add_argument("--url", help="use this running service (its API key must be bench-key, or none)")
    parser.add_argument("--database-url", help="store of the started service (default SQLite in a temp folder)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--markdown", help="write the tables to this file")
    args = parser.parse_args()

    paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images under {args.images}")
    images = [(p.name, p.read_bytes()) for p in random.Random(0).sample(paths, min(64, len(paths)))]
    data_dir = Path(tempfile.mkdtemp(prefix="anomalens-load-"))
    database_url = args.database_url or f"sqlite:///{data_dir / 'inspections.db'}"
    with served(args.model_dir, data_dir, args.database_url) if args.url is None else _existing(args.url) as url:
        before = httpx.get(f"{url}/health").json()["stored_results"]
        load_level(url, images, 1, 4)  # warm-up: first-call allocations, connection set-up
        levels = []
        for concurrency in args.concurrency:
            levels.append(load_level(url, images, concurrency, args.requests))
            print(levels[-1], flush=True)
        expected = 4 + sum(level["requests"] - level["errors"] for level in levels)
        # counted before the bad-input tries, two of which (the TIFF and the odd name) are valid images
        rows = (
            stored_rows(database_url)
            if args.url is None
            else httpx.get(f"{url}/health", headers={"X-API-Key": KEY}).json()["stored_results"]
        ) - before
        trials = try_bad_inputs(url, next(data for name, data in images if name.lower().endswith(".jpg")))
    for what, status, answer in trials:
        print(f"{what}: {status} {answer}")
    print(f"stored rows: {rows} (expected {expected})")
    if args.markdown:
        command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/service_load.py " + " ".join(sys.argv[1:])
        Path(args.markdown).write_text(markdown(args.model_dir, args.images, levels, expected, rows, trials, command))
    return 0 if rows == expected and not any(level["errors"] for level in levels) else 1


@contextmanager
def _existing(url: str):
    yield url.rstrip("/")


if __name__ == "__main__":
    sys.exit(main())
