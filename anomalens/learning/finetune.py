"""Learning by fine-tuning, for a model whose network must be trained on what it learns (EfficientAD's student
cannot take in one image at once).

Images declared normal wait in the model directory's fine-tuning queue, guarded like instant learning (an image
far above the threshold is refused unless forced)::

    MODEL_DIR/finetune/queue.json    the queued images: name, who, when, score and threshold then
    MODEL_DIR/finetune/<entry>.png   each queued image

Applying the queue trains the fitted student further on the user's normal images plus the queued ones,
recalibrates the thresholds as the fit does, and turns each queued image into a mark; the caller saves that as a
new version and then drops the applied entries.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from anomalens.data.io import read_image, to_uint8_rgb, write_png
from anomalens.learning.learn import DEFAULT_MAX_MARK_RATIO, CannotLearn, guard, report_of
from anomalens.learning.marks import (
    Declared,
    FineTuning,
    LearnReport,
    Mark,
    QueuedImage,
    active_marks,
    next_mark_id,
    store_marks,
)
from anomalens.models.base import BaseDetector
from anomalens.models.efficientad.training import TrainingReport

FINETUNE_DIR = "finetune"
QUEUE_FILE = "queue.json"


@runtime_checkable
class FineTuner(Protocol):
    """A detector that learns images declared normal by training on them with its normal images."""

    def fine_tune(
        self, normal_images: Iterable[np.ndarray], extra_images: Sequence[np.ndarray], steps: int, max_seconds: float
    ) -> TrainingReport: ...


class QueueManifest(BaseModel):
    """``queue.json``: the queued images, oldest first; entry ids are never reused."""

    next_entry: int = 1
    images: list[QueuedImage] = Field(default_factory=list)


class FineTuneQueue:
    """The fine-tuning queue of the model saved in ``model_dir``."""

    def __init__(self, model_dir: str | Path):
        self.folder = Path(model_dir) / FINETUNE_DIR

    @property
    def manifest_path(self) -> Path:
        return self.folder / QUEUE_FILE

    def manifest(self) -> QueueManifest:
        if not self.manifest_path.is_file():
            return QueueManifest()
        return QueueManifest.model_validate_json(self.manifest_path.read_text())

    def entries(self) -> list[QueuedImage]:
        return self.manifest().images

    def add(self, name: str, image: np.ndarray, by: str, score: float, threshold: float, version: int) -> QueuedImage:
        manifest = self.manifest()
        entry = QueuedImage(
            entry=manifest.next_entry,
            image=name,
            file=f"{manifest.next_entry}.png",
            by=by,
            at=datetime.now(timezone.utc),
            score=score,
            threshold=threshold,
            version=version,
        )
        write_png(self.folder / entry.file, to_uint8_rgb(image))  # before the manifest names it
        self._write(QueueManifest(next_entry=entry.entry + 1, images=[*manifest.images, entry]))
        return entry

    def images(self) -> list[tuple[QueuedImage, np.ndarray]]:
        return [(entry, read_image(self.folder / entry.file)) for entry in self.entries()]

    def drop(self, entries: Iterable[int]) -> list[QueuedImage]:
        """Take ``entries`` out of the queue (their images too); returns them."""
        wanted = set(entries)
        manifest = self.manifest()
        unknown = wanted - {entry.entry for entry in manifest.images}
        if unknown:
            known = ", ".join(str(entry.entry) for entry in manifest.images) or "none"
            raise LookupError(f"no queued entry {', '.join(map(str, sorted(unknown)))}; the queue holds: {known}")
        dropped = [entry for entry in manifest.images if entry.entry in wanted]
        kept = [entry for entry in manifest.images if entry.entry not in wanted]
        self._write(QueueManifest(next_entry=manifest.next_entry, images=kept))
        for entry in dropped:
            (self.folder / entry.file).unlink(missing_ok=True)
        return dropped

    def _write(self, manifest: QueueManifest) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.manifest_path.with_name(f".{QUEUE_FILE}.partial")
        partial.write_text(manifest.model_dump_json(indent=2))
        os.replace(partial, self.manifest_path)


def queue_normal_images(
    detector: BaseDetector,
    queue: FineTuneQueue,
    images: Sequence[tuple[str, np.ndarray]],
    by: str,
    version: int,
    force: bool = False,
    max_mark_ratio: float = DEFAULT_MAX_MARK_RATIO,
) -> LearnReport:
    """Queue each ``(name, image)`` for fine-tuning unless the guard refuses it; ``version`` is the model version
    that ``detector`` is. The model is unchanged."""
    assert detector.thresholds_ is not None
    threshold = detector.thresholds_.image
    report = report_of(threshold, detector)
    for name, image in images:
        score = detector.score_and_map(image)[0]
        refusal = None if force else guard(name, score, threshold, max_mark_ratio)
        if refusal is not None:
            report.refused.append(refusal)
        else:
            report.queued.append(queue.add(name, image, by, score, threshold, version))
    return report


def apply_fine_tuning(
    detector: BaseDetector,
    queued: Sequence[tuple[QueuedImage, np.ndarray]],
    normal_images: Iterable[np.ndarray],
    steps: int,
    max_seconds: float,
) -> LearnReport:
    """Fine-tune ``detector`` on ``normal_images`` plus the ``queued`` images (entries with their images) and
    record each queued image as a mark (with its score after). ``detector`` is changed in place; saving it and
    dropping the applied entries from the queue are the caller's steps."""
    if not isinstance(detector, FineTuner):
        raise CannotLearn(f"a {detector.name} model does not learn by fine-tuning")
    if not queued:
        raise ValueError("no images are queued for fine-tuning")
    assert detector.thresholds_ is not None
    before = detector.thresholds_.image
    training = detector.fine_tune(normal_images, [image for _, image in queued], steps, max_seconds)
    next_mark = next_mark_id(detector)
    learned = []
    for number, (entry, image) in enumerate(queued, start=next_mark):
        after = detector.score_and_map(image)[0]
        declared = entry.model_dump(include=set(Declared.model_fields))
        learned.append(Mark(mark=number, patches=0, score_after=after, **declared))
    store_marks(detector, active_marks(detector) + learned, next_mark + len(learned))
    report = report_of(before, detector, learned=learned)
    report.fine_tuning = FineTuning(steps=training.steps, seconds=training.seconds)
    return report
