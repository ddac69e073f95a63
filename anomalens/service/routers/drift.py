"""``GET /drift``: whether the inputs of this station have drifted, per model version it inspected with."""

from __future__ import annotations

from fastapi import APIRouter

from anomalens.service.dependencies import DriftDep
from anomalens.service.schemas import ModelDrift

router = APIRouter(tags=["drift"])


@router.get("/drift", response_model=list[ModelDrift])
def drift(watch: DriftDep) -> list[ModelDrift]:
    """The drift watch's answer for each model version this station has inspected with (none before the first
    inspection)."""
    return [
        ModelDrift(model=model, version=version, station=watch.station, **assessment.model_dump())
        for (model, version), assessment in watch.assessments().items()
    ]
