"""What the routers are given: the service's parts and the request values several endpoints share, each as a
typed dependency (``Annotated[..., Depends(...)]``) that tests can replace with ``app.dependency_overrides``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, HTTPException, Query, Request

from anomalens.data import ImageReadError, decode_image
from anomalens.service.drift import DriftWatch
from anomalens.service.feedback import HistoryFeed
from anomalens.service.inference import Inspector
from anomalens.service.metrics import ServiceMetrics
from anomalens.service.schemas import FeedbackStatus, StoredResult
from anomalens.service.settings import ServiceSettings
from anomalens.service.store import ResultFilter, Store


@dataclass
class ServiceState:
    """The parts one running service shares between its requests."""

    settings: ServiceSettings
    store: Store
    inspector: Inspector
    history: HistoryFeed
    metrics: ServiceMetrics
    drift: DriftWatch
    explainer: Any = None  # an LLMExplainer-like object, or None for offline explanations


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_settings(state: Annotated[ServiceState, Depends(get_state)]) -> ServiceSettings:
    return state.settings


def get_store(state: Annotated[ServiceState, Depends(get_state)]) -> Store:
    return state.store


def get_inspector(state: Annotated[ServiceState, Depends(get_state)]) -> Inspector:
    return state.inspector


def get_history(state: Annotated[ServiceState, Depends(get_state)]) -> HistoryFeed:
    return state.history


def get_metrics(state: Annotated[ServiceState, Depends(get_state)]) -> ServiceMetrics:
    return state.metrics


def get_drift(state: Annotated[ServiceState, Depends(get_state)]) -> DriftWatch:
    return state.drift


def get_explainer(state: Annotated[ServiceState, Depends(get_state)]) -> Any:
    return state.explainer


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
InspectorDep = Annotated[Inspector, Depends(get_inspector)]
HistoryDep = Annotated[HistoryFeed, Depends(get_history)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
DriftDep = Annotated[DriftWatch, Depends(get_drift)]
ExplainerDep = Annotated[Any, Depends(get_explainer)]


def stored_result(result_id: str, store: StoreDep) -> StoredResult:
    """The stored result named in the path, or 404."""
    result = store.get(result_id) if re.fullmatch(r"[0-9a-f]{32}", result_id) else None
    if result is None:
        raise HTTPException(404, f"no stored result with id {result_id!r}")
    return result


StoredDep = Annotated[StoredResult, Depends(stored_result)]


def stored_pixels(result: StoredDep, store: StoreDep) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The stored image (RGB) and outline (bool) of a result, to describe its regions to the defect history;
    (None, None) when either is missing or unreadable."""
    try:
        image, mask = (decode_image(store.image(result.id, kind) or b"", kind) for kind in ("image", "mask"))
    except ImageReadError:
        return None, None
    return image, mask[..., 0] > 0.5


PixelsDep = Annotated[tuple[np.ndarray | None, np.ndarray | None], Depends(stored_pixels)]


# Bounds that every database takes as they are (a 32-bit OFFSET, a time that dates can show), so that a value out
# of range is a 422 and never reaches the database.
MAX_OFFSET = 2**31 - 1
LAST_UNIX_TIME = 253402300799.0  # 9999-12-31 23:59:59 UTC, the last second of Python's datetime


def result_filter(
    anomalous: bool | None = None,
    model: str | None = Query(None, max_length=128),
    defect_type: str | None = Query(None, max_length=128),
    feedback: FeedbackStatus | None = None,
    since: float | None = Query(None, description="Unix time", ge=0, le=LAST_UNIX_TIME, allow_inf_nan=False),
    limit: int = Query(100, ge=1, le=10000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> ResultFilter:
    return ResultFilter(anomalous, model, defect_type, feedback, since, limit, offset)


FilterDep = Annotated[ResultFilter, Depends(result_filter)]
ImageKind = Literal["image", "overlay", "mask"]


async def one_file_part(request: Request) -> None:
    """422 when the form holds more than one ``file`` part: ``POST /inspect`` answers for one image, and
    inspecting one of several would silently drop the others (the form is the one FastAPI parsed already)."""
    if len((await request.form()).getlist("file")) > 1:
        raise HTTPException(422, "only one file is accepted per request: send several to /inspect/batch")


OneFileDep = Annotated[None, Depends(one_file_part)]
