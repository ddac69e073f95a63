"""What needs no API key: the health check and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from anomalens.service.dependencies import InspectorDep, StoreDep
from anomalens.service.schemas import Health

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/health", response_model=Health, tags=["service"])
def health(inspector: InspectorDep, store: StoreDep) -> Health:
    return Health(status="ok", model=inspector.model_name, stored_results=store.count())


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")
