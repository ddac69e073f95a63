"""Shared by the service benches: waiting for a started ``anomalens serve`` to answer."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    """Return once ``url``'s ``/health`` answers 200; RuntimeError if ``process`` ends first or ``seconds`` pass."""
    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.2)
