"""Teach a fitted model that some images are normal, and take such lessons back.

PatchCore learns at once (``PatchCore.learn_normal`` learns the patches its banks did not cover, each bound to its
place in the image). Then the image threshold is re-checked with the learned images' scores beside the
calibration's normals (``recheck_image_threshold``): it rises only where a learned image still scores above it,
and never more than ``max_threshold_rise`` above the fit's. Raising it for every false alarm instead (with the
images' scores from before they were learned) cost detection on the suite's validation halves
(bench/results/feedback_learning.md).

Guard rail: an image scoring more than ``max_mark_ratio`` times the image threshold is refused, because false
alarms sit just above the threshold while real defects mostly score far beyond it; learning one would teach the
bank to accept that defect anywhere. ``force`` learns it anyway (an engineer's decision, recorded with the mark).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

import numpy as np

from anomalens.learning.marks import LearnReport, Mark, Refusal, active_marks, next_mark_id, store_marks
from anomalens.models.base import BaseDetector
from anomalens.postprocessing.thresholds import recheck_image_threshold

# chosen on the suite's validation halves: bench/results/feedback_learning.md
DEFAULT_MAX_MARK_RATIO = 1.5
DEFAULT_MAX_THRESHOLD_RISE = 0.1


@runtime_checkable
class InstantLearner(Protocol):
    """A detector that can take an image as normal at once, and forget it again."""

    def learn_normal(self, image: np.ndarray, mark: int) -> int: ...

    def forget(self, marks: Iterable[int]) -> int: ...


class CannotLearn(TypeError):
    """The model cannot learn from single images at once (EfficientAD's student needs training)."""


def _learner(detector: BaseDetector) -> InstantLearner:
    if not isinstance(detector, InstantLearner):
        raise CannotLearn(
            f"a {detector.name} model cannot learn or forget single images at once: its network must be trained on "
            "them (it queues them for fine-tuning instead, and a rollback undoes a fine-tune)"
        )
    return detector


def guard(name: str, score: float, threshold: float, max_mark_ratio: float) -> Refusal | None:
    """The guard rail: a refusal for an image scoring more than ``max_mark_ratio`` times ``threshold``."""
    if score <= max_mark_ratio * threshold:
        return None
    reason = (
        f"it scores {score / threshold:.2f} times the threshold; false alarms score at most "
        f"{max_mark_ratio:g} times it, so this looks like a real defect (learn it with force to override)"
    )
    return Refusal(image=name, score=score, reason=reason)


def learn_normal_images(
    detector: BaseDetector,
    images: Sequence[tuple[str, np.ndarray]],
    by: str,
    force: bool = False,
    max_mark_ratio: float = DEFAULT_MAX_MARK_RATIO,
    max_threshold_rise: float = DEFAULT_MAX_THRESHOLD_RISE,
) -> LearnReport:
    """Learn each ``(name, image)`` as normal, in order, unless the guard refuses it; then re-check the image
    threshold. ``detector`` is changed in place; saving it as a new version is the caller's step."""
    learner = _learner(detector)
    assert detector.thresholds_ is not None
    before = detector.thresholds_
    marks = active_marks(detector)
    next_mark = next_mark_id(detector)
    learned: list[tuple[Mark, np.ndarray]] = []
    refused: list[Refusal] = []
    for name, image in images:
        score = detector.score_and_map(image)[0]
        refusal = None if force else guard(name, score, before.image, max_mark_ratio)
        if refusal is not None:
            refused.append(refusal)
            continue
        patches = learner.learn_normal(image, next_mark)
        at = datetime.now(timezone.utc)
        mark = Mark(mark=next_mark, image=name, by=by, at=at, score=score, threshold=before.image, patches=patches)
        learned.append((mark, image))
        next_mark += 1
    for mark, image in learned:
        mark.score_after = detector.score_and_map(image)[0]
    marks += [mark for mark, _ in learned]
    _recheck(detector, marks, max_threshold_rise)
    store_marks(detector, marks, next_mark)
    return report_of(before.image, detector, learned=[mark for mark, _ in learned], refused=refused)


def forget_marks(
    detector: BaseDetector, mark_ids: Iterable[int], max_threshold_rise: float = DEFAULT_MAX_THRESHOLD_RISE
) -> LearnReport:
    """Undo marks: their patches leave the bank and their scores the threshold's re-check."""
    learner = _learner(detector)
    assert detector.thresholds_ is not None
    before = detector.thresholds_.image
    wanted = set(mark_ids)
    marks = active_marks(detector)
    unknown = wanted - {mark.mark for mark in marks}
    if unknown:
        known = ", ".join(str(mark.mark) for mark in marks) or "none"
        raise LookupError(f"no learned mark {', '.join(map(str, sorted(unknown)))}; the model's marks: {known}")
    learner.forget(wanted)
    remaining = [mark for mark in marks if mark.mark not in wanted]
    _recheck(detector, remaining, max_threshold_rise)
    store_marks(detector, remaining, next_mark_id(detector))
    return report_of(before, detector, forgotten=sorted(wanted))


def _recheck(detector: BaseDetector, marks: list[Mark], max_threshold_rise: float) -> None:
    assert detector.thresholds_ is not None
    detector.thresholds_ = recheck_image_threshold(
        detector.thresholds_,
        [mark.score if mark.score_after is None else mark.score_after for mark in marks],
        max_threshold_rise,
    )


def report_of(before: float, detector: BaseDetector, **parts: list) -> LearnReport:
    """The report of a change to ``detector``, whose image threshold was ``before``."""
    assert detector.thresholds_ is not None
    details = detector.thresholds_.details
    return LearnReport(
        threshold_before=before,
        threshold_after=detector.thresholds_.image,
        fitted_threshold=float(details.get("fitted_image_threshold", detector.thresholds_.image)),
        threshold_capped=bool(details.get("threshold_rise_capped", False)),
        **parts,
    )
