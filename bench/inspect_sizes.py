"""Inspect time and peak memory against image size: what one ``POST /inspect`` costs as the frame grows.

Each frame is the demo's defect-free magnetic tile tiled to the size, with a dark spot planted in it so that
regions exist. For each size a fresh process (capped in time and address space) runs what the service runs
for an upload: ``detector.predict``, ``api.inspection_record`` (findings, taxonomy-free explanation) and the
three PNGs it stores, and reports the time of each part and the process's peak resident memory. With
``--before DIR`` the same runs use the anomalens of another checkout for the sizes in ``--before-sizes`` (the
code before a change, whose larger sizes may not finish). With ``--service`` the frames are also posted to
``anomalens serve``, and ``/health`` is polled while the largest one is inspected.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/inspect_sizes.py /tmp/scale/model \\
        --before /work/main --before-sizes 0.25 1 4 --service
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
from live_service import wait_until_healthy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TILE = REPO / "anomalens" / "demo_data" / "magnetic_tile" / "test" / "good" / "exp4_num_332730.jpg"
DEFAULT_SIZES = (0.25, 1.0, 4.0, 16.0, 64.0)


def frame(megapixels: float) -> np.ndarray:
    """A square uint8 RGB frame of about this many megapixels: the demo tile mirrored to size, a dark spot in it."""
    side = int(round(math.sqrt(megapixels * 1e6)))
    tile = cv2.cvtColor(cv2.imread(str(TILE)), cv2.COLOR_BGR2RGB)
    mirrored = np.concatenate(
        [np.concatenate([tile, tile[:, ::-1]], 1), np.concatenate([tile[::-1], tile[::-1, ::-1]], 1)]
    )
    reps = (math.ceil(side / mirrored.shape[0]), math.ceil(side / mirrored.shape[1]), 1)
    image = np.ascontiguousarray(np.tile(mirrored, reps)[:side, :side])
    cv2.circle(image, (side * 2 // 3, side // 3), max(2, side // 25), (20, 20, 20), -1)
    return image


def measure_once(model_dir: str, megapixels: float) -> dict:
    """In this process: the service's work for one frame, timed part by part, and the peak memory."""
    from anomalens import api
    from anomalens.data import encode_png
    from anomalens.models import load_detector
    from anomalens.reports.visualize import mask_png, overlay

    detector = load_detector(model_dir)
    rgb = frame(megapixels)
    image = rgb.astype(np.float32) / 255.0
    tic = time.perf_counter()
    prediction = detector.predict(image)
    predicted = time.perf_counter()
    record = api.inspection_record("frame.png", image, prediction, 1000 * (predicted - tic))
    recorded = time.perf_counter()
    for picture in (rgb, overlay(rgb, prediction), mask_png(prediction)):
        encode_png(picture)
    drawn = time.perf_counter()
    return {
        "megapixels": rgb.shape[0] * rgb.shape[1] / 1e6,
        "side": rgb.shape[0],
        "predict_ms": 1000 * (predicted - tic),
        "record_ms": 1000 * (recorded - predicted),
        "pngs_ms": 1000 * (drawn - recorded),
        "total_ms": 1000 * (drawn - tic),
        "anomalous": record.anomalous,
        "regions": len(record.regions),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(model_dir: str, megapixels: float, code: Path, timeout_s: float, memory_bytes: int) -> dict:
    """``measure_once`` in a fresh process importing anomalens from ``code``, capped in time and memory."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    argv = [sys.executable, __file__, model_dir, "--one", str(megapixels)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, preexec_fn=cap)
    except subprocess.TimeoutExpired:
        return {"megapixels": megapixels, "error": f"no answer within {timeout_s:g} s"}
    if done.returncode != 0:
        return {"megapixels": megapixels, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def served_measurements(model_dir: str, sizes: list[float], timeout_s: float) -> dict:
    """POST each frame to ``anomalens serve`` (this checkout); /health latencies during the largest one."""
    from anomalens.explanation.llm.local_server import free_port

    port, data_dir = free_port(), tempfile.mkdtemp(prefix="inspect_sizes_")
    argv = ["serve", model_dir, "--port", str(port), "--data-dir", data_dir, "--max-upload-mb", "1024"]
    argv += ["--request-timeout", str(timeout_s)]
    launcher = f"from anomalens.cli.main import main; raise SystemExit(main({argv!r}))"
    server = subprocess.Popen([sys.executable, "-c", launcher], env={**os.environ, "PYTHONPATH": str(REPO)})
    url, rows, health = f"http://127.0.0.1:{port}", [], []
    try:
        wait_until_healthy(url, server, seconds=120)
        for megapixels in sizes:
            body = cv2.imencode(".png", cv2.cvtColor(frame(megapixels), cv2.COLOR_RGB2BGR))[1].tobytes()
            largest = megapixels == max(sizes)
            polling = threading.Event()
            poller = threading.Thread(target=poll_health, args=(url, polling, health), daemon=True)
            if largest:
                poller.start()
            tic = time.perf_counter()
            response = httpx.post(f"{url}/inspect", files={"file": ("frame.png", body)}, timeout=timeout_s + 60)
            seconds = time.perf_counter() - tic
            polling.set()
            if largest:
                poller.join()
            rows.append(
                {
                    "megapixels": megapixels,
                    "png_mb": len(body) / 2**20,
                    "status": response.status_code,
                    "seconds": seconds,
                    "server_peak_rss_mb": _peak_rss_mb(server.pid),
                }
            )
            print(f"service {megapixels:g} MP: {response.status_code} in {seconds:.2f} s", flush=True)
    finally:
        server.terminate()
        server.wait(60)
    latencies = sorted(health)
    return {
        "rows": rows,
        "health_during_largest": {
            "polls": len(latencies),
            "median_ms": statistics.median(latencies) if latencies else None,
            "max_ms": latencies[-1] if latencies else None,
        },
    }


def poll_health(url: str, stop: threading.Event, latencies: list[float], failures: list[str] | None = None) -> None:
    """GET ``/health`` every 0.2 s until ``stop``: the milliseconds of each answer into ``latencies``, and, when
    ``failures`` is given, the error of each poll without an answer into it (else the error ends the polling)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            tic = time.perf_counter()
            try:
                client.get("/health")
            except httpx.TransportError as error:
                if failures is None:
                    raise
                failures.append(type(error).__name__)
            else:
                latencies.append(1000 * (time.perf_counter() - tic))
            stop.wait(0.2)


def _peak_rss_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def markdown(result: dict) -> str:
    lines = [
        "# Inspect time and peak memory against image size",
        "",
        f"`{result['command']}`",
        "",
        f"{result['machine']}; one process per size, capped at {result['timeout_s']:g} s and "
        f"{result['memory_bytes'] / 2**30:g} GiB of address space. The frame is the demo's good magnetic tile "
        "mirrored to size with a dark spot planted in it; the work is the service's for one upload "
        "(predict, inspection record, three PNGs).",
        "",
        "| MP | side | predict ms | record ms | PNGs ms | total ms | ms per MP | peak RSS MB | regions "
        "| before: record ms | before: total ms | before: peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    before = {row["megapixels"]: row for row in result.get("before", [])}
    for row in result["after"]:
        old = before.get(row["megapixels"]) or next(
            (b for b in before.values() if abs(b["megapixels"] - row["megapixels"]) < 0.01), None
        )
        old_cells = " | ".join(("", "", "") if old is None else _before_cells(old))
        if "error" in row:
            lines.append(f"| {row['megapixels']:g} | | | | | {row['error']} | | | | {old_cells} |")
            continue
        lines.append(
            f"| {row['megapixels']:.2f} | {row['side']} | {row['predict_ms']:.0f} | {row['record_ms']:.0f} "
            f"| {row['pngs_ms']:.0f} | {row['total_ms']:.0f} | {row['total_ms'] / row['megapixels']:.0f} "
            f"| {row['peak_rss_mb']:.0f} | {row['regions']} | {old_cells} |"
        )
    service = result.get("service")
    if service:
        lines += ["", "Through `anomalens serve` (POST /inspect of the frame as PNG, one torch thread):", ""]
        lines += ["| MP | PNG MB | status | seconds | server peak RSS MB (so far) |", "|---:|---:|---:|---:|---:|"]
        for row in service["rows"]:
            lines.append(
                f"| {row['megapixels']:g} | {row['png_mb']:.1f} | {row['status']} | {row['seconds']:.2f} "
                f"| {row['server_peak_rss_mb']:.0f} |"
            )
        h = service["health_during_largest"]
        if h["polls"]:
            lines += [
                "",
                f"/health while the largest frame was inspected: {h['polls']} polls, median {h['median_ms']:.1f} ms, "
                f"max {h['max_ms']:.1f} ms.",
            ]
    return "\n".join(lines) + "\n"


def _before_cells(row: dict) -> tuple[str, str, str]:
    if "error" in row:
        return "", row["error"], ""
    return f"{row['record_ms']:.0f}", f"{row['total_ms']:.0f}", f"{row['peak_rss_mb']:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--sizes", type=float, nargs="+", default=list(DEFAULT_SIZES), help="megapixels")
    parser.add_argument("--before", type=Path, help="another checkout whose anomalens to measure too")
    parser.add_argument("--before-sizes", type=float, nargs="+", default=[0.25, 1.0, 4.0])
    parser.add_argument("--timeout", type=float, default=600, help="seconds per size (default 600)")
    parser.add_argument("--memory-gb", type=float, default=12, help="address space per size (default 12)")
    parser.add_argument("--service", action="store_true", help="also through anomalens serve, with /health polls")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # the measuring child process
    parser.add_argument("--output", type=Path, default=HERE / "results" / "inspect_sizes")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_once(args.model_dir, args.one)))
        return
    memory = int(args.memory_gb * 2**30)
    result = {
        "command": " ".join(["python", "bench/inspect_sizes.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "timeout_s": args.timeout,
        "memory_bytes": memory,
        "after": [],
    }
    for megapixels in args.sizes:
        row = measure(args.model_dir, megapixels, REPO, args.timeout, memory)
        print("after ", json.dumps(row), flush=True)
        result["after"].append(row)
    if args.before is not None:
        result["before"] = []
        for megapixels in args.before_sizes:
            row = measure(args.model_dir, megapixels, args.before, args.timeout, memory)
            print("before", json.dumps(row), flush=True)
            result["before"].append(row)
    if args.service:
        result["service"] = served_measurements(args.model_dir, args.sizes, args.timeout)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
