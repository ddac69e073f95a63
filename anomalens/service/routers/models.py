"""The models the service can inspect with, switching between them, their versions, and the marks (images
declared normal) they have learned, each of which can be undone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from anomalens.learning import LearnReport, Mark, forget_marks
from anomalens.learning.learn import CannotLearn
from anomalens.models.versions import ModelVersion, ModelVersions, UnknownVersion
from anomalens.service.dependencies import InspectorDep
from anomalens.service.errors import error_responses
from anomalens.service.inference import Inspector
from anomalens.service.learning import DEFAULT_AUTHOR
from anomalens.service.schemas import ModelInfo, RollbackRequest

router = APIRouter(tags=["models"])


def _known(name: str, inspector: Inspector) -> str:
    if name not in inspector.available:
        raise HTTPException(404, f"no model named {name!r}; GET /models lists them")
    return name


@router.get("/models", response_model=list[ModelInfo])
def models(inspector: InspectorDep) -> list[ModelInfo]:
    return [ModelInfo(**inspector.model_info(name)) for name in inspector.available]


@router.post("/models/{name}/load", response_model=ModelInfo, responses=error_responses(404, 422))
def load_model(name: str, inspector: InspectorDep) -> ModelInfo:
    inspector.switch(_known(name, inspector))
    return ModelInfo(**inspector.model_info(name))


@router.get("/models/{name}/versions", response_model=list[ModelVersion], responses=error_responses(404, 422))
def model_versions(name: str, inspector: InspectorDep) -> list[ModelVersion]:
    """Every version of the model, oldest first: its parent, cause, who made it and its calibration."""
    return ModelVersions(inspector.available[_known(name, inspector)]).list()


@router.post(
    "/models/{name}/rollback",
    response_model=ModelInfo,
    responses=error_responses(400, 404, 413, 422, e404="no model of that name, or no such version of it"),
)
def rollback_model(name: str, body: RollbackRequest, inspector: InspectorDep) -> ModelInfo:
    """Make an earlier version current again (recorded as a new version with cause "rollback"); the model is
    reloaded when it is the one that inspects."""
    try:
        inspector.rollback(_known(name, inspector), body.version)
    except UnknownVersion as error:
        raise HTTPException(404, str(error)) from error
    return ModelInfo(**inspector.model_info(name))


@router.get("/models/{name}/marks", response_model=list[Mark], responses=error_responses(404, 422))
def model_marks(name: str, inspector: InspectorDep) -> list[Mark]:
    """The images the model's current version has learned as normal (false alarms) and not forgotten, oldest
    first."""
    return inspector.marks(_known(name, inspector))


@router.delete(
    "/models/{name}/marks/{mark}",
    response_model=LearnReport,
    responses=error_responses(404, 422, e404="no model of that name, or no such learned mark of it"),
)
def undo_mark(
    name: str,
    mark: Annotated[int, Path(ge=1, le=2**31 - 1)],
    inspector: InspectorDep,
    operator: Annotated[str | None, Query(max_length=128, description="who undoes it")] = None,
) -> LearnReport:
    """Undo a learned mark: its patches leave the model and its score the threshold's re-check, saved as a new
    version (cause "undo"), which inspects from then on when the model is the loaded one."""
    by = operator or DEFAULT_AUTHOR
    try:
        return inspector.change_model(_known(name, inspector), lambda detector: forget_marks(detector, [mark]), by)
    except (LookupError, CannotLearn) as error:
        raise HTTPException(404, str(error)) from error
