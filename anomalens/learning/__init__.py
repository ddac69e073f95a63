"""Learning from operators after the fit: images declared normal (false alarms) teach the model, with guard rails
against teaching it a real defect, an undo, and a cap on how far the threshold may move. A model that learns by
training (EfficientAD) gathers them in a fine-tuning queue first (``finetune.py``)."""

from anomalens.learning.learn import (
    DEFAULT_MAX_MARK_RATIO,
    DEFAULT_MAX_THRESHOLD_RISE,
    forget_marks,
    learn_normal_images,
)
from anomalens.learning.marks import LearnReport, Mark, QueuedImage, Refusal, active_marks

__all__ = [
    "DEFAULT_MAX_MARK_RATIO",
    "DEFAULT_MAX_THRESHOLD_RISE",
    "LearnReport",
    "Mark",
    "QueuedImage",
    "Refusal",
    "active_marks",
    "forget_marks",
    "learn_normal_images",
]
