"""A false alarm teaches the model that judged it: the stored image is learned as normal
(``anomalens.learning.learn_normal_images``) and saved as a new version of the model, which inspects from then on.

Only a flagged result judged whole, by the model's current version, is learned: a result judged by an older
version was judged by a model that is gone, and a false alarm of one region says nothing of the image's other
regions. The learning module's guard refuses images that score like real defects; that is an answer, not an error.
A model that learns by training (EfficientAD) queues the image for fine-tuning instead.
"""

from __future__ import annotations

import numpy as np

from anomalens.learning import learn_normal_images
from anomalens.learning.learn import CannotLearn
from anomalens.service.inference import Inspector, StaleVersion
from anomalens.service.schemas import Learning, StoredResult, Verdict
from anomalens.service.settings import ServiceSettings

DEFAULT_AUTHOR = "service"


def learn_false_alarm(
    result: StoredResult, judgement: Verdict, image: np.ndarray | None, inspector: Inspector, settings: ServiceSettings
) -> Learning:
    """Teach ``result``'s model that its stored ``image`` is normal, or say why not."""
    reason = _why_not(result, judgement, image, inspector, settings)
    if reason is not None:
        return Learning(model=result.model, outcome="not_learned", reason=reason)
    assert image is not None
    by = judgement.operator or DEFAULT_AUTHOR
    named = [(f"{result.image} (result {result.id})", image)]
    try:
        report = inspector.change_model(
            result.model, lambda detector: learn_normal_images(detector, named, by), by, judged_by=result.model_version
        )
    except StaleVersion as error:
        return Learning(model=result.model, outcome="not_learned", reason=str(error))
    except CannotLearn:
        report = inspector.queue_for_fine_tuning(result.model, named, by)
        if report.queued:
            reason = "queued for fine-tuning: `anomalens learn MODEL --apply --normals DIR` teaches the queue"
            return Learning(model=result.model, outcome="queued", reason=reason, report=report)
    if report.refused:
        return Learning(model=result.model, outcome="refused", reason=report.refused[0].reason, report=report)
    return Learning(model=result.model, outcome="learned", report=report)


def _why_not(
    result: StoredResult, judgement: Verdict, image: np.ndarray | None, inspector: Inspector, settings: ServiceSettings
) -> str | None:
    if not settings.learn_from_feedback:
        return "this service does not learn from feedback (learn_from_feedback is off)"
    if not result.anomalous:
        return "the model passed this image: there is no false alarm to learn from"
    if judgement.region_index is not None and len(result.regions) > 1:
        return (
            f"only region {judgement.region_index} was judged a false alarm, not the image's other regions, so the "
            "image is not learned as normal (judge the whole result to teach it)"
        )
    if result.model not in inspector.available:
        return f"this service has no model named {result.model!r}"
    if result.model_version is None:
        return "the result records no model version (it was stored before versions were kept)"
    if image is None:
        return "the stored image of the result cannot be read"
    return None
