"""Stored results: listed and filtered, one by one, their images, exported, and as an HTML report."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from anomalens.reports.html import ReportItem, build_report
from anomalens.service.dependencies import DriftDep, FilterDep, ImageKind, StoredDep, StoreDep
from anomalens.service.errors import error_responses
from anomalens.service.export import to_csv
from anomalens.service.schemas import InspectionResult, with_urls

router = APIRouter(tags=["results"])


@router.get("/results", response_model=list[InspectionResult], responses=error_responses(422))
def results(store: StoreDep, where: FilterDep) -> list[InspectionResult]:
    return [with_urls(result) for result in store.results(where)]


@router.get(
    "/results/export",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}, **error_responses(422)},
)
def export(store: StoreDep, where: FilterDep, format: Literal["csv", "json"] = "csv") -> Response:
    records = store.results(where)
    if format == "json":
        return Response(
            json.dumps([r.to_dict() for r in records], indent=1),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="inspections.json"'},
        )
    return Response(
        to_csv(records),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="inspections.csv"'},
    )


@router.get("/results/{result_id}", response_model=InspectionResult, responses=error_responses(404, 422))
def result(stored: StoredDep) -> InspectionResult:
    return with_urls(stored)


@router.get(
    "/results/{result_id}/images/{kind}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)},
)
def result_image(stored: StoredDep, kind: ImageKind, store: StoreDep) -> Response:
    return Response(
        store.image(stored.id, kind), media_type="image/png", headers={"Cache-Control": "private, max-age=86400"}
    )


# a plain Response class, so that the declared errors keep their JSON media type beside the page's text/html
@router.get("/report", response_class=Response, responses={200: {"content": {"text/html": {}}}, **error_responses(422)})
def report(store: StoreDep, where: FilterDep, drift: DriftDep) -> HTMLResponse:
    """A self-contained HTML report of the stored results (operator feedback gives the labels) and the drift watch's
    state."""
    items = [
        ReportItem(
            record=r,
            image_png=store.image(r.id, "image"),
            overlay_png=store.image(r.id, "overlay"),
            label=r.feedback_label,
        )
        for r in store.results(where)
    ]
    watch = {f"{model} v{version}": answer for (model, version), answer in drift.assessments().items()}
    return HTMLResponse(build_report(items, title="anomalens service report", drift=watch))
