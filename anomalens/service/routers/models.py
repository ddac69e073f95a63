"""The models the service can inspect with, and switching between them."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from anomalens.service.dependencies import InspectorDep
from anomalens.service.errors import error_responses
from anomalens.service.schemas import ModelInfo

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
def models(inspector: InspectorDep) -> list[ModelInfo]:
    return [ModelInfo(**inspector.model_info(name)) for name in inspector.available]


@router.post("/models/{name}/load", response_model=ModelInfo, responses=error_responses(404, 422))
def load_model(name: str, inspector: InspectorDep) -> ModelInfo:
    if name not in inspector.available:
        raise HTTPException(404, f"no model named {name!r}; GET /models lists them")
    inspector.switch(name)
    return ModelInfo(**inspector.model_info(name))
