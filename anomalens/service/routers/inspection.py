"""``POST /inspect`` and ``/inspect/batch``: each upload inspected and stored as soon as the detector answered;
an LLM explanation, when configured, replaces the stored offline one afterwards, so a failing LLM or a vanished
client loses nothing. With an ``Idempotency-Key`` a retried request answers what its first attempt stored (see
``anomalens.service.idempotency``); a batch answers, for every file, whether it was stored and as which result."""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile
from fastapi.responses import JSONResponse

from anomalens.service.dependencies import (
    DriftDep,
    ExplainerDep,
    HistoryDep,
    InspectorDep,
    MetricsDep,
    OneFileDep,
    SettingsDep,
    StoreDep,
)
from anomalens.service.errors import ErrorBody, error_responses
from anomalens.service.idempotency import IdempotencyKeyHeader, request_digest
from anomalens.service.inference import BadImage, Inspected, InspectionTimeout
from anomalens.service.schemas import BatchError, BatchFile, BatchResult, InspectionResult, with_urls
from anomalens.service.settings import ServiceSettings
from anomalens.service.store import Claim, KeyReused

log = logging.getLogger(__name__)
router = APIRouter(tags=["inspection"])


def display_name(filename: str | None) -> str:
    """A label for the upload's name: the last path component, printable, at most 120 characters.

    It is only ever shown and stored as text; files are named by the server.
    """
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C").strip()
    return name[:120] if name and name not in (".", "..") else "upload"


def too_large(settings: ServiceSettings) -> str:
    return f"upload too large: at most {settings.max_upload_bytes / 2**20:g} MiB per file"


def _read_limited(upload: UploadFile, settings: ServiceSettings) -> bytes:
    data = upload.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, too_large(settings))
    return data


class Inspection:
    """Inspect one upload, store it, and add the LLM's explanation when there is an LLM."""

    def __init__(
        self,
        settings: SettingsDep,
        inspector: InspectorDep,
        store: StoreDep,
        history: HistoryDep,
        drift: DriftDep,
        explainer: ExplainerDep,
        metrics: MetricsDep,
    ):
        self.settings, self.inspector, self.store = settings, inspector, store
        self.history, self.drift, self.explainer, self.metrics = history, drift, explainer, metrics

    def claims(self, key: str | None, endpoint: str, uploads: list[UploadFile]) -> list[Claim | None]:
        """One claim per upload under idempotency ``key`` (none without a key); 422 for a key used before for
        other files."""
        if key is None:
            return [None] * len(uploads)
        try:
            return self.store.claims(self.settings.station, key, request_digest(endpoint, uploads), len(uploads))
        except KeyReused as error:
            raise HTTPException(422, str(error)) from error

    def __call__(self, upload: UploadFile, claim: Claim | None = None) -> InspectionResult:
        """The stored result of ``upload``: inspected and stored now, or, when an earlier attempt under the same
        idempotency ``claim`` stored it, that result."""
        if claim is not None and claim.stored_id is not None:
            self.metrics.replays.inc()
            return with_urls(self.store.get(claim.stored_id))
        name = display_name(upload.filename)
        with self.metrics.inspection(self.inspector.model_name) as verdict:
            data = _read_limited(upload, self.settings)
            self.metrics.upload_bytes.observe(len(data))
            try:
                inspected = self.inspector.inspect(data, name)
            except BadImage as error:
                raise HTTPException(422, f"not an inspectable image: {error}") from error
            except InspectionTimeout as error:
                retry = str(max(1, math.ceil(self.settings.request_timeout_s)))
                raise HTTPException(503, f"{error}; try again later", headers={"Retry-After": retry}) from error
            result_id = self.store.add_inspection(
                inspected.record,
                inspected.images,
                inspected.model,
                self.settings.station,
                claim,
                model_version=inspected.model_version,
            )
            verdict.judged(inspected.model, inspected.record.anomalous)
        drift = self.drift.observe(inspected.model, inspected.model_version, inspected.prediction)
        self.metrics.report_drift(inspected.model, drift.statistic, drift.warning)
        if self.explainer is not None:
            self._add_llm_explanation(result_id, inspected)
        return with_urls(self.store.get(result_id))

    def _add_llm_explanation(self, result_id: str, inspected: Inspected) -> None:
        """Replace the stored offline explanation by the LLM's; any failure keeps the offline one."""
        try:
            seen_before = self.history.seen_before(inspected.record, inspected.image, inspected.prediction.mask)
            explanation = self.explainer.explain(
                inspected.record, image=inspected.image, prediction=inspected.prediction, seen_before=seen_before
            )
        except Exception as error:  # the result is stored already; the explanation is a bonus
            log.warning("LLM explanation failed for %s, keeping the offline one: %s", result_id, error)
            return
        self.store.set_explanation(result_id, explanation.record())


InspectionDep = Annotated[Inspection, Depends(Inspection)]


# Plain `def` endpoints run in the thread pool: inference and database work never block the event loop.
@router.post(
    "/inspect",
    response_model=InspectionResult,
    responses=error_responses(
        400,
        413,
        422,
        503,
        e422="not an inspectable image, two file parts, or an Idempotency-Key sent before with another file",
    ),
)
def inspect(
    inspection: InspectionDep,
    _: OneFileDep,
    file: UploadFile = File(..., description="PNG, JPEG, BMP or TIFF; judged by content"),
    idempotency_key: IdempotencyKeyHeader = None,
) -> InspectionResult:
    [claim] = inspection.claims(idempotency_key, "inspect", [file])
    return inspection(file, claim)


@router.post(
    "/inspect/batch",
    response_model=BatchResult,
    responses=error_responses(
        400,
        413,
        422,
        e413="a file too large",
        e422="no file, too many files, none of the files an inspectable image (each one's reason in errors), or an "
        "Idempotency-Key sent before with other files",
    ),
)
def inspect_batch(
    inspection: InspectionDep,
    settings: SettingsDep,
    files: list[UploadFile] = File(..., min_length=1),
    idempotency_key: IdempotencyKeyHeader = None,
) -> BatchResult | JSONResponse:
    if len(files) > settings.max_batch_files:
        raise HTTPException(422, f"too many files: at most {settings.max_batch_files} per batch")
    claims = inspection.claims(idempotency_key, "batch", files)
    answer = BatchResult(files=[], results=[], errors=[])
    refused = 0
    for upload, claim in zip(files, claims, strict=True):
        entry, result, by_content = _batch_entry(inspection, upload, claim)
        answer.files.append(entry)
        refused += by_content
        if result is None:
            answer.errors.append(BatchError(file=entry.file, error=entry.error))
        else:
            answer.results.append(result)
    if refused == len(files):  # nothing to store, and the request is what is wrong
        return JSONResponse(
            ErrorBody(
                detail=f"none of the {len(files)} files can be inspected: {answer.errors[0].error}",
                errors=[error.model_dump() for error in answer.errors],
            ).model_dump(),
            status_code=422,
        )
    return answer


def _batch_entry(
    inspection: Inspection, upload: UploadFile, claim: Claim | None
) -> tuple[BatchFile, InspectionResult | None, bool]:
    """What became of one file of a batch, its stored result (None when it was not stored), and whether the
    file itself was refused (a 4xx: not an image, too large), rather than the service failing or being busy."""
    name = display_name(upload.filename)
    try:
        result = inspection(upload, claim)
    except HTTPException as error:
        return BatchFile(file=name, stored=False, error=str(error.detail)), None, error.status_code < 500
    except Exception:  # one file's failure must not hide what the others stored
        log.exception("batch file %r failed", name)
        return BatchFile(file=name, stored=False, error="internal error: not stored (see the service log)"), None, False
    return BatchFile(file=name, stored=True, id=result.id), result, False
