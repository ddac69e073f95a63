"""``GET /metrics``: the service's metrics for Prometheus (see ``anomalens.service.metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from anomalens.service.dependencies import MetricsDep
from anomalens.service.metrics import CONTENT_TYPE

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "the Prometheus text exposition format",
            "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(service_metrics: MetricsDep) -> Response:
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE)
