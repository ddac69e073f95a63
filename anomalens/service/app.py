"""The FastAPI application: a thin HTTP shell over ``anomalens.api`` and the inspection store.

``create_app(settings)`` loads the model, opens (and migrates) the store and the defect history, and serves
the JSON API (OpenAPI at ``/docs`` and ``/openapi.json``), the images of stored results, HTML reports and the
web page at ``/``. Each inspection is stored as soon as the detector has answered; an LLM explanation, when
configured, is added to the stored result afterwards, so a failing LLM or a vanished client loses nothing.
"""
from __future__ import annotations

import json
import logging
import re
import unicodedata
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from anomalens.explanation.history import DefectHistory
from anomalens.reports.html import ReportItem, build_report
from anomalens.results.record import ExplanationRecord
from anomalens.service import chat
from anomalens.service.export import to_csv
from anomalens.service.feedback import FeedbackError, HistoryFeed
from anomalens.service.inference import BadImage, Inspected, Inspector
from anomalens.service.schemas import (BatchError, BatchResult, ChatReply, ChatRequest, ChatTurn, FeedbackReceipt,
                                       FeedbackRequest, Health, InspectionResult, ModelInfo, StoredResult)
from anomalens.service.security import BodySizeLimit, api_key_guard
from anomalens.service.settings import ServiceSettings
from anomalens.service.store import IMAGE_KINDS, ResultFilter, Store

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
MULTIPART_OVERHEAD = 64 * 1024
ImageKind = Literal["image", "overlay", "mask"]


def display_name(filename: str | None) -> str:
    """A label for the upload's name: the last path component, printable, at most 120 characters.

    It is only ever shown and stored as text; files are named by the server.
    """
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C").strip()
    return name[:120] if name and name not in (".", "..") else "upload"


def _with_urls(result: StoredResult) -> InspectionResult:
    urls = {kind: f"/results/{result.id}/images/{kind}" for kind in IMAGE_KINDS}
    return InspectionResult.model_validate({**result.model_dump(), "urls": urls})


def _llm_explainer() -> Any:
    from anomalens.explanation.llm import LLMConfig, LLMExplainer

    return LLMExplainer(LLMConfig.from_env())


def create_app(settings: ServiceSettings, explainer: Any = None) -> FastAPI:
    """The service for ``settings``; ``explainer`` (an ``LLMExplainer``-like object) overrides the LLM of
    ``settings.use_llm`` (read from ``ANOMALENS_LLM_*``); without either, explanations are offline."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    inspector = Inspector(settings)
    store = Store(settings.store_url)
    history = HistoryFeed(DefectHistory(settings.history_path))
    if explainer is None and settings.use_llm:
        explainer = _llm_explainer()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        store.close()
        history.history.close()

    app = FastAPI(title="anomalens inspection service", version="1", lifespan=lifespan,
                  description="Inspect images with a detector fitted on defect-free images; every result is "
                              "stored with its heatmap overlay and mask, can be discussed and judged.")
    app.state.settings, app.state.store, app.state.inspector = settings, store, inspector

    too_large = f"upload too large: at most {settings.max_upload_bytes / 2**20:g} MiB per file"

    def body_limit(path: str) -> int:
        files = settings.max_batch_files if path == "/inspect/batch" else 1
        return files * settings.max_upload_bytes + MULTIPART_OVERHEAD

    app.add_middleware(BodySizeLimit, limit_for=body_limit, message=too_large)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        """One readable line in ``detail`` (as every other 4xx has), the structured errors beside it."""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        # the errors' context may hold exception objects: pass them through JSON as text
        errors = json.loads(json.dumps(error.errors(), default=str))
        return JSONResponse({"detail": f"invalid request: {problems}", "errors": errors}, status_code=422)

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": inspector.model_name, "stored_results": store.count()}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    api = APIRouter(dependencies=[Depends(api_key_guard(settings.api_key))])

    def stored(result_id: str) -> StoredResult:
        result = store.get(result_id) if re.fullmatch(r"[0-9a-f]{32}", result_id) else None
        if result is None:
            raise HTTPException(404, f"no stored result with id {result_id!r}")
        return result

    def read_limited(upload: UploadFile) -> bytes:
        data = upload.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, too_large)
        return data

    def inspect_and_store(data: bytes, name: str) -> InspectionResult:
        try:
            inspected = inspector.inspect(data, name)
        except BadImage as error:
            raise HTTPException(422, f"not an inspectable image: {error}") from error
        result_id = store.add_inspection(inspected.record, inspected.images, inspected.model, settings.station)
        if explainer is not None:
            add_llm_explanation(result_id, inspected)
        return _with_urls(store.get(result_id))

    def add_llm_explanation(result_id: str, inspected: Inspected) -> None:
        """Replace the stored offline explanation by the LLM's; any failure keeps the offline one."""
        try:
            explanation = explainer.explain(inspected.record, image=inspected.image,
                                            prediction=inspected.prediction,
                                            seen_before=history.seen_before(inspected.record, inspected.image,
                                                                            inspected.prediction.mask))
        except Exception as error:  # the result is stored already; the explanation is a bonus
            log.warning("LLM explanation failed for %s, keeping the offline one: %s", result_id, error)
            return
        store.set_explanation(result_id, ExplanationRecord.model_validate(explanation))

    # Plain `def` endpoints run in the thread pool: inference and database work never block the event loop.
    @api.post("/inspect", response_model=InspectionResult, tags=["inspection"],
              responses={413: {"description": "upload too large"}, 422: {"description": "not an image"}})
    def inspect(file: UploadFile = File(..., description="PNG, JPEG, BMP or TIFF; judged by content")) -> Any:
        return inspect_and_store(read_limited(file), display_name(file.filename))

    @api.post("/inspect/batch", response_model=BatchResult, tags=["inspection"])
    def inspect_batch(files: list[UploadFile] = File(...)) -> Any:
        if len(files) > settings.max_batch_files:
            raise HTTPException(413, f"too many files: at most {settings.max_batch_files} per batch")
        results, errors = [], []
        for upload in files:
            name = display_name(upload.filename)
            try:
                results.append(inspect_and_store(read_limited(upload), name))
            except HTTPException as error:
                errors.append(BatchError(file=name, error=str(error.detail)))
        return {"results": results, "errors": errors}

    def result_filter(anomalous: bool | None = None, model: str | None = Query(None, max_length=128),
                      defect_type: str | None = Query(None, max_length=128),
                      feedback: Literal["confirmed", "corrected", "false_alarm"] | None = None,
                      since: float | None = Query(None, description="Unix time"),
                      limit: int = Query(100, ge=1, le=10000), offset: int = Query(0, ge=0)) -> ResultFilter:
        return ResultFilter(anomalous, model, defect_type, feedback, since, limit, offset)

    @api.get("/results", response_model=list[InspectionResult], tags=["results"])
    def results(where: ResultFilter = Depends(result_filter)) -> Any:
        return [_with_urls(r) for r in store.results(where)]

    @api.get("/results/export", tags=["results"], response_class=Response,
             responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
    def export(format: Literal["csv", "json"] = "csv", where: ResultFilter = Depends(result_filter)) -> Response:
        records = store.results(where)
        if format == "json":
            return Response(json.dumps([r.to_dict() for r in records], indent=1), media_type="application/json",
                            headers={"Content-Disposition": 'attachment; filename="inspections.json"'})
        return Response(to_csv(records), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="inspections.csv"'})

    @api.get("/results/{result_id}", response_model=InspectionResult, tags=["results"])
    def result(result_id: str) -> Any:
        return _with_urls(stored(result_id))

    @api.get("/results/{result_id}/images/{kind}", tags=["results"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def result_image(result_id: str, kind: ImageKind) -> Response:
        stored(result_id)
        return Response(store.image(result_id, kind), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    @api.get("/results/{result_id}/chat", response_model=list[ChatTurn], tags=["chat"])
    def chat_turns(result_id: str) -> Any:
        stored(result_id)
        return store.messages(result_id)

    def stored_pixels(result_id: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The stored image (RGB) and outline (bool) of a result, to describe its regions to the history."""
        decoded = []
        for kind, flags in (("image", cv2.IMREAD_COLOR), ("mask", cv2.IMREAD_GRAYSCALE)):
            data = store.image(result_id, kind)
            decoded.append(None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), flags))
        image, outline = decoded
        if image is None or outline is None:
            return None, None
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), outline > 0

    @api.post("/results/{result_id}/chat", response_model=ChatReply, tags=["chat"])
    def chat_turn(result_id: str, request: ChatRequest) -> Any:
        record = stored(result_id)
        answer = chat.reply(record, store.messages(result_id), request.message, explainer,
                            history.seen_before(record, *stored_pixels(result_id)))
        store.add_message(result_id, "user", request.message)
        store.add_message(result_id, "assistant", answer.text, answer.source)
        return {"reply": answer.text, "source": answer.source}

    @api.post("/results/{result_id}/feedback", response_model=FeedbackReceipt, tags=["feedback"])
    def feedback(result_id: str, judgement: FeedbackRequest) -> Any:
        record = stored(result_id)
        try:
            case_ids = history.record(record, judgement, *stored_pixels(result_id))
        except FeedbackError as error:
            raise HTTPException(422, str(error)) from error
        feedback_id = store.add_feedback(result_id, judgement.status, judgement.region_index, judgement.defect_type,
                                         judgement.cause, judgement.action, judgement.note, case_ids)
        return {"feedback_id": feedback_id, "status": judgement.status, "history_case_ids": case_ids}

    @api.get("/models", response_model=list[ModelInfo], tags=["models"])
    def models() -> Any:
        return [inspector.model_info(name) for name in inspector.available]

    @api.post("/models/{name}/load", response_model=ModelInfo, tags=["models"])
    def load_model(name: str) -> Any:
        if name not in inspector.available:
            raise HTTPException(404, f"no model named {name!r}; GET /models lists them")
        inspector.switch(name)
        return inspector.model_info(name)

    @api.get("/report", response_class=HTMLResponse, tags=["results"])
    def report(where: ResultFilter = Depends(result_filter)) -> str:
        """A self-contained HTML report of the stored results (operator feedback gives the labels)."""
        items = [ReportItem(record=r, image_png=store.image(r.id, "image"),
                            overlay_png=store.image(r.id, "overlay"), label=r.feedback_label)
                 for r in store.results(where)]
        return build_report(items, title="anomalens service report")

    app.include_router(api)
    return app
