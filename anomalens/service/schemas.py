"""Request and response bodies of the service (pydantic): the OpenAPI spec is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from anomalens.learning import LearnReport
from anomalens.postprocessing.drift import DriftAssessment
from anomalens.results.record import InspectionRecord

FeedbackStatus = Literal["confirmed", "corrected", "false_alarm"]


class StoredResult(InspectionRecord):
    """The per-image record (as in ``results.json``) as the store keeps it: its id, the model and model version that
    judged it, the station and time, and the operator's latest judgement."""

    id: str
    model: str
    model_version: int | None = Field(default=None, description="the model's version (None: stored before versions)")
    station: str
    created_at: float
    feedback_status: FeedbackStatus | None = None

    @property
    def feedback_label(self) -> int | None:
        """The label the operator's judgement gives: a confirmed verdict stands, a corrected one is a defect (of
        another type), a false alarm is good; None without a judgement."""
        if self.feedback_status == "confirmed":
            return int(self.anomalous)
        return {"corrected": 1, "false_alarm": 0}.get(self.feedback_status or "")


class ImageUrls(BaseModel):
    image: str
    overlay: str
    mask: str


class InspectionResult(StoredResult):
    """A stored result with the addresses of its images."""

    urls: ImageUrls


def with_urls(result: StoredResult) -> InspectionResult:
    """``result`` with the addresses of its stored images."""
    urls = {kind: f"/results/{result.id}/images/{kind}" for kind in ImageUrls.model_fields}
    return InspectionResult.model_validate({**result.model_dump(), "urls": urls})


class BatchError(BaseModel):
    file: str
    error: str


class BatchFile(BaseModel):
    """What became of one file of a batch: stored as result ``id``, or not, and why (``error``)."""

    file: str
    stored: bool
    id: str | None = None
    error: str | None = None


class BatchResult(BaseModel):
    """A batch's answer: ``files`` has every file in the order sent; ``results`` the stored ones, ``errors`` the
    others."""

    files: list[BatchFile]
    results: list[InspectionResult]
    errors: list[BatchError]


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    stored_results: int
    drift_warning: bool = Field(description="whether the drift watch warns for the loaded model (GET /drift says why)")


class ModelDrift(DriftAssessment):
    """The drift watch's answer for one model version at this station: ``warning`` and its one-line ``reason``, the
    CUSUM ``statistic`` against its ``threshold``, the pass rate against the one the model's calibration expects,
    and ``rank_counts``, the later scores' ranks in the station's baseline by tenth (even on a stable line)."""

    model: str
    version: int
    station: str


class ModelInfo(BaseModel):
    """A model the service can use, with its working scale and what its calibration says to expect."""

    name: str
    active: bool
    version: int = Field(description="the current version (GET /models/{name}/versions lists them)")
    runtime: str | None = Field(
        default=None, description="what computes the maps of the model that inspects: onnx (ONNX Runtime) or torch"
    )
    working_scale: str | None = None
    expected_false_alarm_rate: float | None = None
    expected_false_alarm_rate_bound: float | None = None
    expected_simulated_detection_rate: float | None = None


class RollbackRequest(BaseModel):
    version: int = Field(ge=1, description="the version to make current again")


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=2000)


class ChatReply(BaseModel):
    reply: str
    source: str


class ChatTurn(BaseModel):
    role: str
    content: str
    source: str | None = None


def _json_integer(value: Any) -> Any:
    """A JSON integer (1 or 1.0, as JSON Schema counts them), never a string or a boolean standing for one."""
    if isinstance(value, (str, bool)):
        raise ValueError("must be a JSON integer")
    return value


RegionIndex = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]


class _Judgement(BaseModel):
    """What every judgement may say: ``region_index`` picks one region (without it the judgement applies to every
    region of the result), and the operator's cause, action and note."""

    region_index: RegionIndex | None = None
    cause: str = Field(default="", max_length=2000)
    action: str = Field(default="", max_length=2000)
    note: str = Field(default="", max_length=2000)
    operator: str | None = Field(
        default=None,
        max_length=128,
        description="who judges: recorded with what a false alarm teaches the model (default 'service')",
    )


class Verdict(_Judgement):
    """The verdict stands (``confirmed``, keeping the predicted type unless one is given) or was a
    ``false_alarm``."""

    status: Literal["confirmed", "false_alarm"]
    defect_type: str | None = Field(default=None, max_length=128)


class Correction(_Judgement):
    """A defect of another type than predicted: the right ``defect_type`` is required."""

    status: Literal["corrected"]
    defect_type: str = Field(min_length=1, max_length=128)


# one of the two by ``status``: the spec itself says that a correction needs its type
FeedbackRequest = Annotated[Verdict | Correction, Field(discriminator="status")]


class Learning(BaseModel):
    """What a false alarm taught the model that judged it: the image ``learned`` as normal (the report's marks,
    each undone with ``DELETE /models/{model}/marks/{mark}``), ``queued`` for fine-tuning (a model that learns by
    training), ``refused`` by the guard (it scores like a real defect), or ``not_learned`` (learning was not
    tried); ``reason`` says why for all but the first."""

    model: str
    outcome: Literal["learned", "queued", "refused", "not_learned"]
    reason: str | None = None
    report: LearnReport | None = Field(
        default=None,
        description="what learning did: the marks, the refusal, the image threshold before and after and the new "
        "version (none when learning was not tried)",
    )


class FeedbackReceipt(BaseModel):
    """The stored judgement's id and the defect-history cases it set (the same cases when a region is judged
    again: a new judgement replaces the region's case); for a false alarm, what it taught the model."""

    feedback_id: int
    status: FeedbackStatus
    history_case_ids: list[int]
    learning: Learning | None = Field(default=None, description="for a false alarm only")


class FeedbackEntry(BaseModel):
    """One judgement as stored, with its time: the audit trail of a result keeps every one."""

    status: FeedbackStatus
    region_index: int | None = None
    defect_type: str | None = None
    cause: str = ""
    action: str = ""
    note: str = ""
    id: int
    created_at: float
    history_case_ids: list[int]
