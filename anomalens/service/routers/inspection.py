"""``POST /inspect`` and ``/inspect/batch``: each upload inspected and stored as soon as the detector answered;
an LLM explanation, when configured, replaces the stored offline one afterwards, so a failing LLM or a vanished
client loses nothing."""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile

from anomalens.service.dependencies import ExplainerDep, HistoryDep, InspectorDep, OneFileDep, SettingsDep, StoreDep
from anomalens.service.inference import BadImage, Inspected
from anomalens.service.schemas import BatchError, BatchResult, InspectionResult, with_urls
from anomalens.service.settings import ServiceSettings

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
        explainer: ExplainerDep,
    ):
        self.settings, self.inspector, self.store = settings, inspector, store
        self.history, self.explainer = history, explainer

    def __call__(self, upload: UploadFile) -> InspectionResult:
        name = display_name(upload.filename)
        try:
            inspected = self.inspector.inspect(_read_limited(upload, self.settings), name)
        except BadImage as error:
            raise HTTPException(422, f"not an inspectable image: {error}") from error
        result_id = self.store.add_inspection(
            inspected.record, inspected.images, inspected.model, self.settings.station
        )
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
    responses={413: {"description": "upload too large"}, 422: {"description": "not an image"}},
)
def inspect(
    inspection: InspectionDep,
    _: OneFileDep,
    file: UploadFile = File(..., description="PNG, JPEG, BMP or TIFF; judged by content"),
) -> InspectionResult:
    return inspection(file)


@router.post("/inspect/batch", response_model=BatchResult)
def inspect_batch(inspection: InspectionDep, settings: SettingsDep, files: list[UploadFile] = File(...)) -> BatchResult:
    if len(files) > settings.max_batch_files:
        raise HTTPException(413, f"too many files: at most {settings.max_batch_files} per batch")
    results, errors = [], []
    for upload in files:
        try:
            results.append(inspection(upload))
        except HTTPException as error:
            errors.append(BatchError(file=display_name(upload.filename), error=str(error.detail)))
    return BatchResult(results=results, errors=errors)
