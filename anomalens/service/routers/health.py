"""What needs no API key: the health check and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from anomalens.service.dependencies import DriftDep, InspectorDep, StoreDep
from anomalens.service.schemas import Health

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/health", response_model=Health, tags=["service"])
def health(inspector: InspectorDep, store: StoreDep, drift: DriftDep) -> Health:
    model, version = inspector.model_name, inspector.model_version
    warning = drift.warning(model, version)
    return Health(status="ok", model=model, stored_results=store.count(), drift_warning=warning)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")
