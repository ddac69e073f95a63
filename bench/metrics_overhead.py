"""What ``GET /metrics`` costs the service: the request middleware's time per request, and the size and time of
one scrape after a day's worth of distinct series.

- **per request**: a bare ASGI app answering 200 at once, called directly and through
  ``anomalens.service.metrics.RequestMetrics`` (which labels, times and counts it), in the same loop.
- **per scrape**: ``ServiceMetrics.exposition()`` with every inspection series filled and request series for
  7 endpoints times 6 status codes, more than a station makes.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/metrics_overhead.py \
        --markdown bench/results/metrics_overhead.md
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace

from anomalens.service.metrics import RequestMetrics, ServiceMetrics

REQUESTS = 20_000
SCRAPES = 200
ENDPOINTS = ("/inspect", "/inspect/batch", "/results", "/results/{result_id}", "/metrics", "/health", "unrouted")
CODES = ("200", "401", "404", "413", "422", "503")


async def bare_app(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def per_request_us(app) -> float:
    scope = {"type": "http", "method": "GET", "path": "/health", "root_path": "", "headers": []}

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(_: dict) -> None:
        pass

    started = time.perf_counter()
    for _ in range(REQUESTS):
        await app(dict(scope), receive, send)
    return 1e6 * (time.perf_counter() - started) / REQUESTS


def filled_metrics() -> ServiceMetrics:
    metrics = ServiceMetrics(SimpleNamespace(model_name="tiles"), SimpleNamespace(count=lambda: 100_000))
    for verdict, outcome in (("normal", "ok"), ("anomalous", "ok"), ("none", "refused"), ("none", "error")):
        metrics.inspections.labels("tiles", verdict, outcome).inc()
    metrics.inspection_seconds.labels("tiles").observe(0.3)
    metrics.upload_bytes.observe(300_000)
    metrics.report_drift("tiles", 1.0, False)
    for endpoint in ENDPOINTS:
        for code in CODES:
            metrics.request_seconds.labels("POST", endpoint).observe(0.2)
            metrics.responses.labels("POST", endpoint, code).inc()
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="write the table here too")
    args = parser.parse_args()
    metrics = filled_metrics()
    bare = asyncio.run(per_request_us(bare_app))
    counted = asyncio.run(per_request_us(RequestMetrics(bare_app, metrics)))
    started = time.perf_counter()
    for _ in range(SCRAPES):
        body = metrics.exposition()
    scrape_ms = 1000 * (time.perf_counter() - started) / SCRAPES
    lines = [
        "| what | figure |",
        "|---|---|",
        f"| bare ASGI request, µs | {bare:.1f} |",
        f"| through RequestMetrics, µs | {counted:.1f} |",
        f"| middleware cost per request, µs | {counted - bare:.1f} |",
        f"| one scrape ({len(ENDPOINTS)} endpoints x {len(CODES)} codes), ms | {scrape_ms:.2f} |",
        f"| one scrape, bytes | {len(body)} |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(f"# /metrics overhead\n\n`bench/metrics_overhead.py`, on a shared 2-core machine\n\n{table}\n")


if __name__ == "__main__":
    main()
