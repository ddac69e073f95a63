"""What the service exposes at ``GET /metrics`` in the Prometheus text format, with ``prometheus_client``.

Each app has its own :class:`ServiceMetrics` with its own ``CollectorRegistry``, so that several apps in one
process (tests make many) count apart; the service runs one worker, so no multiprocess mode is needed.

Metrics (all named ``anomalens_*``):

- ``inspections_total{model, verdict, outcome}``: uploads inspected (``outcome="ok"``, ``verdict`` normal or
  anomalous), refused as not inspectable or too large (``refused``) or failed (``error``: time limit or a fault);
  those two have ``verdict="none"``. A replayed idempotent request is not inspected again and not counted here.
- ``inspection_duration_seconds{model}``: the service's own work on each inspected upload: reading, decoding,
  waiting for the detector, predicting, drawing and storing (not the transfer, not an LLM's explanation).
- ``upload_bytes``: the size of each upload read for inspection.
- ``idempotent_replays_total``: files answered from what an earlier attempt under the same Idempotency-Key stored.
- ``request_duration_seconds{method, endpoint}`` and ``responses_total{method, endpoint, code}``: every HTTP
  request by route template (``/results/{result_id}``; ``unrouted`` for the API key guard's and the size limit's
  refusals and for paths with no route).
- ``model_info{name, version}`` and ``stored_results``: the model inspecting (and its version) and the results in
  the store when scraped.
- ``false_alarm_marks_total{model, outcome}``: operators' false-alarm marks by what they did to the model
  (``learned``, ``queued`` for fine-tuning, ``refused`` by the guard, ``not_learned``).
- ``drift_statistic{model}`` and ``drift_warning{model}``: set by the drift watch through
  :meth:`ServiceMetrics.report_drift`; absent until it reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from anomalens.service.inference import Inspector
from anomalens.service.store import Store

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version scrapes
# from a quick health check to an inspection at the default 60 s time limit
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
BYTES_BUCKETS = tuple(float(4**power) for power in range(7, 14))  # 16 KiB .. 64 MiB
# labels come from a fixed set, so that no client can grow the number of series
METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
UNROUTED = "unrouted"


@dataclass
class Verdict:
    """What one counted inspection found; set by the code inside :meth:`ServiceMetrics.inspection`."""

    model: str
    anomalous: bool | None = None

    def judged(self, model: str, anomalous: bool) -> None:
        self.model, self.anomalous = model, anomalous


class LoadedModel(Collector):
    """``anomalens_model_info``: the model that inspects when Prometheus scrapes, however it was switched."""

    def __init__(self, inspector: Inspector):
        self.inspector = inspector

    def collect(self) -> Iterator[InfoMetricFamily]:
        value = {"name": self.inspector.model_name, "version": str(self.inspector.model_version)}
        yield InfoMetricFamily("anomalens_model", "the model that inspects, and its version", value=value)


class ServiceMetrics:
    """The metrics of one service, in a registry of their own."""

    def __init__(self, inspector: Inspector, store: Store):
        self.registry = CollectorRegistry()
        options: dict[str, Any] = {"namespace": "anomalens", "registry": self.registry}
        self.inspections = Counter(
            "inspections", "uploads inspected, refused or failed", ["model", "verdict", "outcome"], **options
        )
        self.inspection_seconds = Histogram(
            "inspection_duration_seconds",
            "the service's work on one inspected upload",
            ["model"],
            buckets=SECONDS_BUCKETS,
            **options,
        )
        self.upload_bytes = Histogram("upload_bytes", "size of each upload read", buckets=BYTES_BUCKETS, **options)
        self.replays = Counter("idempotent_replays", "files answered from an earlier attempt's result", **options)
        self.request_seconds = Histogram(
            "request_duration_seconds",
            "HTTP request latency",
            ["method", "endpoint"],
            buckets=SECONDS_BUCKETS,
            **options,
        )
        self.responses = Counter(
            "responses", "HTTP responses by status code", ["method", "endpoint", "code"], **options
        )
        Gauge("stored_results", "results in the store", **options).set_function(store.count)
        self.registry.register(LoadedModel(inspector))
        self.drift_statistic = Gauge("drift_statistic", "the drift watch's test statistic", ["model"], **options)
        self.drift_warning = Gauge("drift_warning", "1 while the drift watch warns, else 0", ["model"], **options)
        self.false_alarm_marks = Counter(
            "false_alarm_marks", "operators' false-alarm marks by what they taught", ["model", "outcome"], **options
        )

    @contextmanager
    def inspection(self, model: str) -> Iterator[Verdict]:
        """Count the inspection of one upload by the code inside: an :class:`HTTPException` under 500 is a refusal,
        any other exception an error, and the end of the block without one is an ``ok`` with the verdict the
        code gave with :meth:`Verdict.judged` (the model then the one that judged it)."""
        verdict, started = Verdict(model), time.perf_counter()
        try:
            yield verdict
        except HTTPException as error:
            self.inspections.labels(model, "none", "refused" if error.status_code < 500 else "error").inc()
            raise
        except Exception:
            self.inspections.labels(model, "none", "error").inc()
            raise
        self.inspection_seconds.labels(verdict.model).observe(time.perf_counter() - started)
        self.inspections.labels(verdict.model, "anomalous" if verdict.anomalous else "normal", "ok").inc()

    def report_drift(self, model: str, statistic: float, warning: bool) -> None:
        """The hook of the drift watch: its statistic for ``model``'s recent inputs, and whether it warns now."""
        self.drift_statistic.labels(model).set(statistic)
        self.drift_warning.labels(model).set(int(warning))

    def exposition(self) -> bytes:
        """Every metric, in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: the latency and status code of every HTTP request, labelled by the template of the route
    that answered it (``/results/{result_id}``, so that ids make no new series), or ``unrouted`` for a request
    answered before routing (the API key guard's 401, a declared body over the size limit) or by no route (404).
    """

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"] if scope["method"] in METHODS else "other"
        root_path = scope.get("root_path", "")
        status, started = 500, time.perf_counter()  # 500 unless an answer starts: the app failed

        async def noted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            endpoint = _answered_by(scope, root_path)
            self.metrics.request_seconds.labels(method, endpoint).observe(time.perf_counter() - started)
            self.metrics.responses.labels(method, endpoint, str(status)).inc()


def _answered_by(scope: dict, root_path: str) -> str:
    """The template of the route the router chose, which it leaves in the scope; for a mounted app (the static
    files) the mount point, which the router adds to the ``root_path``; else ``unrouted``."""
    route = getattr(scope.get("route"), "path", None)
    return route or scope.get("root_path", "").removeprefix(root_path) or UNROUTED
