"""The FastAPI application: a thin HTTP shell over ``anomalens.api`` and the inspection store.

``create_app(settings)`` loads the model, opens (and migrates) the store and the defect history, and wires the
routers (``anomalens.service.routers``): the JSON API (OpenAPI at ``/docs`` and ``/openapi.json``), the images of
stored results, HTML reports and the web page at ``/``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match

from anomalens.explanation.history import DefectHistory
from anomalens.service.dependencies import ServiceState
from anomalens.service.drift import DriftWatch
from anomalens.service.errors import error_responses
from anomalens.service.feedback import HistoryFeed
from anomalens.service.inference import Inspector
from anomalens.service.metrics import RequestMetrics, ServiceMetrics
from anomalens.service.routers import chat, drift, feedback, health, inspection, metrics, models, results
from anomalens.service.routers.health import STATIC
from anomalens.service.security import ApiKeyGuard, BodySizeLimit, api_key_declared
from anomalens.service.settings import ServiceSettings
from anomalens.service.store import Store

MULTIPART_OVERHEAD = 64 * 1024
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
GUARDED = (inspection.router, results.router, chat.router, feedback.router, models.router, drift.router)


def _llm_explainer() -> Any:
    from anomalens.explanation.llm import LLMConfig, LLMExplainer

    return LLMExplainer(LLMConfig.from_env())


async def _method_not_allowed(request: Request, _: Exception) -> JSONResponse:
    """405 with an ``Allow`` header naming every method the path has (each route alone knows only its own)."""
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(allowed)})


async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    """One readable line in ``detail`` (as every other 4xx has), the structured errors beside it."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    # the errors' context may hold exception objects: pass them through JSON as text
    errors = json.loads(json.dumps(error.errors(), default=str))
    return JSONResponse({"detail": f"invalid request: {problems}", "errors": errors}, status_code=422)


def create_app(settings: ServiceSettings, explainer: Any = None) -> FastAPI:
    """The service for ``settings``; ``explainer`` (an ``LLMExplainer``-like object) overrides the LLM of
    ``settings.use_llm`` (read from ``ANOMALENS_LLM_*``); without either, explanations are offline."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if explainer is None and settings.use_llm:
        explainer = _llm_explainer()
    store, inspector = Store(settings.store_url), Inspector(settings)
    state = ServiceState(
        settings,
        store,
        inspector,
        HistoryFeed(DefectHistory(settings.history_path)),
        ServiceMetrics(inspector, store),
        DriftWatch(settings.drift_path, settings.station),
        explainer,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.store.close()
        state.history.history.close()

    app = FastAPI(
        title="anomalens inspection service",
        version="1",
        lifespan=lifespan,
        description="Inspect images with a detector fitted on defect-free images; every result is "
        "stored with its heatmap overlay and mask, can be discussed and judged.",
    )
    app.state.service = state

    def body_limit(path: str) -> int:
        files = settings.max_batch_files if path == "/inspect/batch" else 1
        return files * settings.max_upload_bytes + MULTIPART_OVERHEAD

    app.add_middleware(BodySizeLimit, limit_for=body_limit, message=inspection.too_large(settings))
    if settings.api_key is not None:  # outside the size limit: a stranger's body meets no other code
        app.add_middleware(
            ApiKeyGuard, expected=settings.api_key, open_paths=_open_paths(app, settings), open_prefix="/static/"
        )
    # outside the guards, so that their refusals are counted too (it reads no body)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(405, _method_not_allowed)
    app.include_router(health.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # the key and its 401 are declared in the spec only where the service has a key
    keyed = {"dependencies": [Depends(api_key_declared)], "responses": error_responses(401)} if settings.api_key else {}
    for router in GUARDED:
        app.include_router(router, **keyed)
    app.include_router(metrics.router, **({} if settings.metrics_open else keyed))
    return app


def _open_paths(app: FastAPI, settings: ServiceSettings) -> set[str]:
    """What needs no key: the health check, the web page (it asks for the key), the API's own description, and
    the metrics when the settings open them."""
    docs = (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url)
    return {"/health", "/", *(path for path in docs if path), *(["/metrics"] if settings.metrics_open else [])}
