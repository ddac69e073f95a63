"""A decompression bomb and other image formats sent to the running service: status, time and peak memory.

The service (``anomalens serve`` with one torch thread, on loopback) runs from the anomalens source tree given
by ``--checkout`` (default: this one), so the same script measures a checkout before a change and after it. Its
address space is capped (``--memory-cap``, like ``prlimit --as``) so that a service that decodes the bomb fails
instead of taking the machine. Sent: 30000x30000 gray and RGB PNGs of zeros (a few megabytes at most, built without
holding their pixels: ``tests/image_bombs.py``), then a GIF, a WebP, a PGM and a Radiance HDR image. For each: the
status, the seconds until the answer, the answer, and the service's peak resident memory (``VmHWM``) after it.

    .venv/bin/python bench/decode_bomb.py /tmp/bomb_model --checkout ../main --markdown /tmp/before.md
    .venv/bin/python bench/decode_bomb.py /tmp/bomb_model --markdown bench/results/decode_bomb.md
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the bomb builder is a test helper
from live_service import wait_until_healthy  # noqa: E402

from anomalens.explanation.llm.local_server import free_port  # noqa: E402
from image_bombs import zero_png  # noqa: E402

KEY = "bench-key"


def format_samples() -> list[tuple[str, str, bytes]]:
    """(description, file name, bytes) of a small GIF, WebP, PGM and Radiance HDR image: formats the docs do not
    name."""
    colour = np.full((64, 64, 3), 128, np.uint8)
    encoded = {
        ext: cv2.imencode(ext, image)[1].tobytes()
        for ext, image in [
            (".gif", colour),
            (".webp", colour),
            (".pgm", colour[..., 0]),
            (".hdr", colour.astype(np.float32) / 255),
        ]
    }
    return [
        ("GIF 64x64", "x.gif", encoded[".gif"]),
        ("WebP 64x64", "x.webp", encoded[".webp"]),
        ("PGM 64x64", "x.pgm", encoded[".pgm"]),
        ("Radiance HDR 64x64", "x.hdr", encoded[".hdr"]),
    ]


def uploads() -> list[tuple[str, str, bytes]]:
    """(description, file name, bytes) of each upload: the bombs, then the other formats."""
    gray, rgb = zero_png(30000, 30000), zero_png(30000, 30000, channels=3)
    return [
        (f"30000x30000 gray PNG bomb ({len(gray) // 1000} KB)", "bomb.png", gray),
        (f"30000x30000 RGB PNG bomb ({len(rgb) // 1000} KB)", "bomb_rgb.png", rgb),
        *format_samples(),
    ]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far, from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


@contextmanager
def served(model_dir: str, checkout: Path, data_dir: Path, memory_cap: int):
    """``anomalens serve`` from ``checkout`` in a subprocess whose address space is capped; yields (url, process)."""
    port = free_port()
    argv = ["serve", str(Path(model_dir).resolve()), "--port", str(port), "--data-dir", str(data_dir)]
    launcher = (
        f"import torch; torch.set_num_threads(1); from anomalens.cli.main import main; raise SystemExit(main({argv!r}))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ANOMALENS_API_KEY": KEY}

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    # run in the checkout: `python -c` puts the working folder first on the import path
    process = subprocess.Popen([sys.executable, "-c", launcher], env=env, cwd=checkout, preexec_fn=cap)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)


def send(url: str, process: subprocess.Popen, name: str, data: bytes, timeout: float) -> tuple[str, float, str, float]:
    """(status, seconds, answer, peak RSS in MB after it) of one upload."""
    tic = time.perf_counter()
    try:
        response = httpx.post(
            f"{url}/inspect", files={"file": (name, data)}, headers={"X-API-Key": KEY}, timeout=timeout
        )
        status, answer = str(response.status_code), response.text[:160]
    except httpx.HTTPError as error:
        status, answer = "no answer", type(error).__name__
    seconds = time.perf_counter() - tic
    alive = process.poll() is None
    return status, seconds, answer if alive else f"{answer} (service died)", peak_rss_mb(process.pid) if alive else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--memory-cap", type=int, default=4_000_000_000, help="address-space cap in bytes")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each answer")
    parser.add_argument("--markdown", help="write the table to this file")
    args = parser.parse_args()

    rows = []
    store = tempfile.TemporaryDirectory()
    with store, served(args.model_dir, args.checkout.resolve(), Path(store.name), args.memory_cap) as (url, process):
        start_mb = peak_rss_mb(process.pid)
        for description, name, data in uploads():
            status, seconds, answer, peak = send(url, process, name, data, args.timeout)
            rows.append(f"| {description} | {status} | {seconds:.2f} | {peak:.0f} | {answer} |")
            if process.poll() is not None:
                break
    head = [
        f"Service from `{args.checkout.resolve()}`, address space capped at {args.memory_cap} bytes; "
        f"peak RSS after start-up {start_mb:.0f} MB.",
        "",
        "| upload | status | seconds | peak RSS after (MB) | answer |",
        "|---|---|---|---|---|",
    ]
    text = "\n".join(head + rows) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
