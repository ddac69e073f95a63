"""The result of inspecting one image: the one contract between the pipeline and everything that reads results.

An :class:`InspectionRecord` is built from a :class:`~anomalens.types.Prediction` and its
:class:`~anomalens.postprocessing.findings.Findings`; the explainers, the HTML report, the defect history, the
service's store, exports and schemas, the engines and the CLI all read it by attribute. Its JSON (:meth:`to_dict`)
is one entry of ``results.json``: keys that only some records have (the output file names, a region's defect
type, what the calibration expects) are left out rather than written as ``null``, as they always were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from anomalens.postprocessing.findings import Findings, Region
from anomalens.types import Prediction


class _OmittingNone(BaseModel):
    """A model whose keys named in ``OMITTED_WHEN_NONE`` (here or in the models it holds) are absent from
    :meth:`to_dict` when they hold no value."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    def _exclusions(self) -> dict[str | int, Any]:
        excluded: dict[str | int, Any] = {name: True for name in self.OMITTED_WHEN_NONE if getattr(self, name) is None}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, _OmittingNone) and value._exclusions():
                excluded[name] = value._exclusions()
            elif isinstance(value, list):
                inner = {
                    i: item._exclusions()
                    for i, item in enumerate(value)
                    if isinstance(item, _OmittingNone) and item._exclusions()
                }
                if inner:
                    excluded[name] = inner
        return excluded

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, optional keys only where they hold a value."""
        return self.model_dump(exclude=self._exclusions())


class RegionRecord(_OmittingNone):
    """One anomalous region as :meth:`Region.to_dict` measures it, plus its defect type when a taxonomy named it.

    ``bbox`` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive; ``grid`` the 3x3 cells it covers, ``position`` its
    main cell; ``relative_peak`` its peak score in units of the image threshold, which sets ``severity``.
    """

    model_config = ConfigDict(extra="ignore")
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"defect_type", "type_confidence"})

    index: int
    parts: int = 1
    bbox: list[int]
    area_pixels: int
    area_fraction: float | None
    centroid: list[float | None]
    peak_score: float | None
    mean_score: float | None
    relative_peak: float | None
    severity: str
    grid: list[str]
    position: str
    shape: str
    elongation: float | None
    orientation_degrees: float | None
    brightness: str
    appearance: list[str]
    mean_intensity: float | None
    surround_intensity: float | None
    intensity_difference: float | None
    colour_difference: float | None
    defect_type: str | None = None
    type_confidence: float | None = None

    @classmethod
    def of(cls, region: Region) -> RegionRecord:
        return cls.model_validate(region.to_dict())


class ExplanationRecord(_OmittingNone):
    """What is said about the result: ``source`` "offline" (from the findings alone) or "llm"; ``reason`` why an
    LLM's answer was set aside, when it was."""

    model_config = ConfigDict(extra="ignore")
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"reason"})

    text: str
    source: str
    reason: str | None = None


class LLMExplanationResult(ExplanationRecord):
    """An LLM explanation and how it came about: ``llm`` the parsed fields of the last reply (None when it did not
    parse), ``attempts`` the requests made, ``problems`` the contradictions found in each, ``model`` the model
    asked. Only the :class:`ExplanationRecord` part (:meth:`record`) is kept with a result."""

    llm: dict[str, Any] | None = None
    attempts: int = 0
    problems: list[list[str]] = []
    model: str | None = None

    def record(self) -> ExplanationRecord:
        return ExplanationRecord(text=self.text, source=self.source, reason=self.reason)


class InspectionRecord(_OmittingNone):
    """One inspected image: verdict and scores, the thresholds that decided, its regions (strongest first) and
    their explanation; ``overlay`` and ``mask`` name its output images when a run wrote them; ``label`` is what a
    user who knows the truth may add to a results file (1 defective, 0 good), for reports."""

    model_config = ConfigDict(extra="ignore")
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {"expected_false_alarm_rate", "expected_simulated_detection_rate", "overlay", "mask", "label"}
    )

    image: str
    score: float
    normalized_score: float
    anomalous: bool
    verdict: str
    anomalous_area_fraction: float
    height: int
    width: int
    image_threshold: float
    pixel_threshold: float
    expected_false_alarm_rate: float | None = None
    expected_simulated_detection_rate: float | None = None
    milliseconds: float
    region_count: int
    severity: str
    regions: list[RegionRecord]
    explanation: ExplanationRecord
    overlay: str | None = None
    mask: str | None = None
    label: int | None = None

    @classmethod
    def of(
        cls,
        image: str | Path,
        prediction: Prediction,
        findings: Findings,
        milliseconds: float,
        explanation: ExplanationRecord,
    ) -> InspectionRecord:
        """The record of ``prediction`` and its ``findings`` for the image named ``image``."""
        return cls(
            image=str(image),
            **prediction.to_dict(),
            milliseconds=round(milliseconds, 2),
            region_count=findings.count,
            severity=findings.severity,
            regions=[RegionRecord.of(region) for region in findings.regions],
            explanation=explanation,
        )

    @property
    def total_area_fraction(self) -> float:
        """The share of the image its regions cover together."""
        return round(sum(region.area_fraction or 0.0 for region in self.regions), 6)


class Classification(_OmittingNone):
    """The user's defect type for one region of one image (``anomalens classify``): ``region`` is the region's
    index among the detector's findings (its ``bbox`` beside it), "mask" or "whole" for a given mask or the whole
    image, None for an image the detector found normal (``verdict`` "normal", nothing to type)."""

    model_config = ConfigDict(extra="ignore")
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"bbox", "distances", "verdict"})

    image: str
    region: int | Literal["mask", "whole"] | None
    bbox: list[int] | None = None
    defect_type: str | None
    type_confidence: float | None
    distances: dict[str, float] | None = None
    verdict: str | None = None
